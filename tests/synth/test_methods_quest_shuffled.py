"""`questshuffled`, Quest's spans without its grouping: hand-built plans, then end to end against
Quest's own examples on the hand-built corpus of test_methods_quest.py."""

import collections
import json

import numpy as np
import pytest

from longjax import io
from longjax.synth.methods import contexts
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.quest import QuestMethod, QuestShuffledMethod
from longjax.synth.methods.quest.shuffled import join_pieces, shuffle_plans
from tests.helpers.synth import byte_tokenizer, make_store
from tests.synth.test_methods_quest import L, _corpus


def _tokens(plans):
  """(document, token index) -> how many times the plans hold it."""
  return collections.Counter((d, t) for p in plans for _, d, s, e in p for t in range(s, e))


def test_hand_built_plans_keep_every_token_and_single_document_samples():
  plans = [[("a", 0, 0, 4), ("a", 1, 0, 6)],
           [("b", 2, 0, 10)],                  # one document alone: kept as it is
           [("a", 3, 0, 3), ("b", 4, 0, 7)],
           [("c", 5, 0, 5), ("c", 0, 4, 9)]]   # document 0 again (Quest oversamples)
  out, stats = shuffle_plans(plans, 10, np.random.default_rng(0))
  assert stats.tokens_dropped == 0 and stats.samples == len(out) == 4
  assert stats.single_document_samples == 1 and stats.spans_in == 5  # doc 0's pieces joined
  assert [("b", 2, 0, 10)] in out
  assert all(sum(e - s for _, _, s, e in p) == 10 for p in out)
  assert all(len({d for _, d, _, _ in p}) == len(p) for p in out)  # no document twice
  assert _tokens(out) == _tokens(plans)
  again, _ = shuffle_plans(plans, 10, np.random.default_rng(0))
  assert again == out


def test_pieces_quest_cut_are_joined_again():
  """Quest cut document 7 at L twice (0-5, 5-9, 9-12) and used document 8 twice whole (0-6):
  one run of 7, two of 8, and a piece with no start left as it is."""
  spans = [("a", 7, 5, 9), ("b", 8, 0, 6), ("a", 7, 0, 5), ("a", 7, 9, 12), ("b", 8, 0, 6),
           ("c", 9, 3, 8)]
  assert sorted(join_pieces(spans)) == [("a", 7, 0, 12), ("b", 8, 0, 6), ("b", 8, 0, 6),
                                        ("c", 9, 3, 8)]


def test_tokens_left_over_are_counted():
  """Spans of one document cannot share a sample: whatever the order, placed + left over ==
  what came in, and each left-over token is counted once."""
  plans = [[("a", 0, 0, 5), ("b", 1, 0, 5)], [("a", 0, 0, 5), ("c", 2, 0, 5)],
           [("a", 0, 5, 10), ("d", 3, 0, 5)]]
  total = sum(e - s for p in plans for _, _, s, e in p)
  drops = set()
  for seed in range(40):
    out, stats = shuffle_plans(plans, 10, np.random.default_rng(seed))
    assert sum(_tokens(out).values()) + stats.tokens_dropped == total
    assert not _tokens(out) - _tokens(plans)
    assert all(len({d for _, d, _, _ in p}) == len(p) for p in out)
    drops.add(stats.tokens_dropped)
  assert 0 in drops and max(drops) > 0  # the greedy packing can strand spans at the end


def test_keyword_grouping_is_taken_out():
  """40 keywords of 6 documents, every sample one keyword (Quest's grouping at its strongest):
  after shuffling, adjacent spans share a keyword about as often as chance (1/40)."""
  plans = [[(f"k{k}", 6 * k + i, 0, 8) for i in range(3)] for k in range(40)] + \
          [[(f"k{k}", 6 * k + 3 + i, 0, 8) for i in range(3)] for k in range(40)]
  out, stats = shuffle_plans(plans, 24, np.random.default_rng(1))
  shared = [a[0] == b[0] for p in out for a, b in zip(p, p[1:])]
  assert len(shared) > 100 and np.mean(shared) < 0.1
  assert stats.same_keyword_adjacent_quest == 1.0
  assert stats.same_keyword_adjacent_shuffled == np.mean(shared)
  assert stats.tokens_dropped == 0 and _tokens(out) == _tokens(plans)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  index_dir = tmp_path_factory.mktemp("questshuffled")
  texts, _ = _corpus()
  store = make_store(index_dir, texts)
  ctx = BuildContext(store, byte_tokenizer(), None, {"quest": {"predictor": "extractive"}},
                     index_dir, lengths=(L,), log=lambda _: None)
  QuestMethod().build(ctx)
  QuestShuffledMethod().build(ctx)
  return index_dir, texts


def _examples(method, index_dir, seed=3, **kw):
  args = dict(length=L, tokenizer=byte_tokenizer(), shard=0, num_shards=1, seed=seed) | kw
  return list(method.examples(index_dir, **args))


def test_same_tokens_as_quest_without_its_grouping(built):
  index_dir, texts = built
  quest = _examples(QuestMethod(), index_dir, seed=0)  # the build seed: its manifest counts
  control = _examples(QuestShuffledMethod(), index_dir, seed=0)
  spans = lambda exs: [[tuple(s) for s in json.loads(e["provenance"])["spans"]] for e in exs]
  m = io.read_manifest(index_dir / "questshuffled")["counts"]["repacking"][str(L)]
  # a tiny corpus whose short pools Quest reuses up to 4 times: the last spans may all be of
  # documents already in the last sample, and are counted as left over
  assert m["tokens_dropped"] <= L
  assert not _tokens(spans(control)) - _tokens(spans(quest))
  assert sum(_tokens(spans(control)).values()) + m["tokens_dropped"] == len(quest) * L
  assert len(control) == len(quest) - m["tokens_dropped"] // L
  groups = lambda exs: sorted(sorted(d for _, d, _, _ in p) for p in spans(exs))
  assert groups(control) != groups(quest)  # other documents together, not only another order
  tok = byte_tokenizer()
  for ex, plan in zip(control, spans(control)):
    assert json.loads(ex["provenance"])["method"] == "questshuffled"
    assert len({d for _, d, _, _ in plan}) == len(plan)
    want = np.concatenate([contexts.document_tokens(tok, texts[d])[s:e] for _, d, s, e in plan])
    np.testing.assert_array_equal(ex["targets"], want)


def test_manifest_accounts_for_every_document_with_quests_reasons(built):
  index_dir, texts = built
  quest = io.read_manifest(index_dir / "quest")
  control = io.read_manifest(index_dir / "questshuffled")
  assert control["skipped"] == quest["skipped"] and len(control["skipped"]) == 5
  assert control["counts"]["documents"] == len(texts)
  budget = control["counts"]["budget"][f"L{L}"]
  assert budget["samples"] > 0 and budget["source_tokens"] == \
      quest["counts"]["budget"][f"L{L}"]["source_tokens"]


def test_without_quests_build_the_error_says_to_build_it(tmp_path):
  texts, _ = _corpus()
  store = make_store(tmp_path, texts)
  ctx = BuildContext(store, byte_tokenizer(), None, {}, tmp_path, lengths=(L,))
  with pytest.raises(ValueError, match=r"build `--methods quest,questshuffled`"):
    QuestShuffledMethod().build(ctx)
