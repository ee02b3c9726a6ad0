"""Quest stages 3-5 on token counts: inverted index, split-ratio weights, the sample planner."""

from collections import Counter

import numpy as np
import pytest

from longjax.synth.methods.quest import index as qindex
from longjax.synth.methods.quest.sampler import SampleOptions, _Fenwick, plan_samples


def test_index_is_a_partition_with_token_counts():
  inv = qindex.build_index([0, 1, 2, 3, 4], ["b a", None, "a b", "b a", "a b"], [5, 9, 3, 2, 7])
  assert inv.keywords == ["a b", "b a"]
  assert [d.tolist() for d in inv.doc_ids] == [[2, 4], [0, 3]]
  assert inv.n_docs.tolist() == [2, 2] and inv.n_tokens.tolist() == [10, 7]


def _index(sizes, tokens_per_doc=10):
  kws, ids, toks = [], [], []
  d = 0
  for k, n in enumerate(sizes):
    for _ in range(n):
      kws.append(f"kw {k:02d}")
      ids.append(d)
      toks.append(tokens_per_doc)
      d += 1
  return qindex.build_index(ids, kws, toks)


def test_split_ratio_target_share_and_factor():
  inv = _index([1, 1, 2, 3, 5, 8, 13, 21, 34, 55])  # 10 keywords, ascending sizes
  w = qindex.split_weights(inv, split_ratio=0.2)
  assert w.short.tolist() == [True, True] + [False] * 8  # ceil(0.2 * 10) smallest
  assert w.natural_short_share == pytest.approx(2 / 143)
  assert w.short_share == pytest.approx(0.2)  # raised to the target share
  np.testing.assert_allclose(w.weights[~w.short], inv.n_tokens[~w.short])  # long weights = n_tokens
  w = qindex.split_weights(inv, split_ratio=0.2, oversample_mode="factor", oversample_factor=3.0)
  np.testing.assert_allclose(w.weights[:2], 3 * inv.n_tokens[:2])
  # A natural share above the target is kept (no down-weighting).
  w = qindex.split_weights(_index([5, 5, 5, 5]), split_ratio=0.5, target_share=0.1)
  assert w.factor == 1.0 and w.short_share == pytest.approx(0.5)
  # Ties are broken by keyword string.
  w = qindex.split_weights(_index([3, 3, 3, 3, 3]), split_ratio=0.4)
  assert w.short.tolist() == [True, True, False, False, False]
  with pytest.raises(ValueError, match="split_ratio"):
    qindex.split_weights(inv, split_ratio=1.5)
  with pytest.raises(ValueError, match="size_metric"):
    qindex.split_weights(inv, size_metric="chars")


def test_keyword_shards_are_stable_and_cover():
  kws = [f"k{i}" for i in range(200)]
  shards = [qindex.keyword_shard(k, 4) for k in kws]
  assert shards == [qindex.keyword_shard(k, 4) for k in kws]
  assert set(shards) == {0, 1, 2, 3}
  assert qindex.keyword_shard("solar panel", 7) == qindex.keyword_shard("solar panel", 7)


def test_fenwick_samples_by_weight():
  rng = np.random.default_rng(0)
  tree = _Fenwick(np.array([1.0, 0.0, 3.0, 6.0]))
  draws = Counter(tree.sample(rng) for _ in range(20000))
  assert draws[1] == 0
  assert abs(draws[3] / 20000 - 0.6) < 0.02 and abs(draws[0] / 20000 - 0.1) < 0.01
  tree.set(3, 0.0)
  assert tree.active == 2
  assert {tree.sample(rng) for _ in range(200)} == {0, 2}


def _plan(pools, lengths, *, short=None, weights=None, seed=0, **opts):
  kws = [f"kw{i}" for i in range(len(pools))]
  short = np.zeros(len(pools), bool) if short is None else np.asarray(short)
  if weights is None:
    weights = np.array([sum(lengths[d] for d in p) for p in pools], float)
  return plan_samples(kws, [np.asarray(p) for p in pools], np.asarray(weights, float), short,
                      lambda d: lengths[d], SampleOptions(**opts), np.random.default_rng(seed))


def test_samples_are_exactly_L_without_repeats_and_keyword_consistent():
  rng = np.random.default_rng(1)
  lengths = {d: int(rng.integers(3, 40)) for d in range(300)}
  pools = [list(range(i, 300, 12)) for i in range(12)]
  owner = {d: f"kw{i}" for i, p in enumerate(pools) for d in p}
  plans, stats = _plan(pools, lengths, short=[True] * 3 + [False] * 9, length=64)
  assert plans and stats.samples == len(plans)
  for spans in plans:
    assert sum(e - s for _, _, s, e in spans) == 64
    docs = [d for _, d, _, _ in spans]
    assert len(docs) == len(set(docs))                    # no document twice in a sample
    assert all(owner[d] == k for k, d, _, _ in spans)     # every doc belongs to its keyword
    assert all(0 <= s < e <= lengths[d] for _, d, s, e in spans)
    # Only the last span may be cut; earlier ones run to the EOS.
    assert all(s == 0 and e == lengths[d] for _, d, s, e in spans[:-1])
  assert sum(stats.keywords_per_sample.values()) == len(plans)


def test_drop_policy_gives_single_keyword_samples():
  lengths = {d: 10 for d in range(100)}
  pools = [list(range(i * 10, i * 10 + 10)) for i in range(10)]  # 100 tokens per keyword
  plans, stats = _plan(pools, lengths, length=30, fill_policy="drop")
  assert all(len({k for k, *_ in spans}) == 1 for spans in plans)
  assert stats.partial_dropped > 0  # each keyword leaves a 10-token remainder


def test_short_indexes_drawn_at_the_target_share():
  # One doc of exactly L tokens per sample, so the token share = the share of keyword draws.
  lengths = {d: 50 for d in range(20000)}
  pools = [list(range(i * 400, (i + 1) * 400)) for i in range(50)]
  inv = qindex.build_index(list(range(20000)), [f"kw{d // 400:02d}" for d in range(20000)],
                           [50] * 20000)
  w = qindex.split_weights(inv, split_ratio=0.2, target_share=0.35)
  plans, stats = _plan(pools, lengths, short=w.short, weights=w.weights, length=50,
                       num_samples=4000)
  assert stats.samples == 4000
  share = stats.short_tokens / stats.tokens
  assert abs(share - 0.35) < 0.03, share


def test_short_pools_are_reused_up_to_max_epochs_long_pools_once():
  lengths = {d: 10 for d in range(40)}
  pools = [[0, 1], list(range(2, 40))]  # kw0 short (2 docs), kw1 long (38 docs)
  plans, stats = _plan(pools, lengths, short=[True, False], weights=[500.0, 380.0], length=10,
                       max_epochs_short=3)
  uses = Counter(d for spans in plans for _, d, _, _ in spans)
  assert max(uses[0], uses[1]) <= 3 and uses[0] + uses[1] <= 6
  assert all(uses[d] == 1 for d in range(2, 40))  # long pool: one pass, then the run stops
  assert stats.refills <= 2


def test_long_documents_split_or_truncate():
  lengths = {0: 95, 1: 10, 2: 10}
  plans, stats = _plan([[0, 1, 2]], lengths, length=20)
  whole = [s for s in plans if s[0][1] == 0]
  assert sorted((s, e) for spans in whole for _, _, s, e in spans) == [
    (0, 20), (20, 40), (40, 60), (60, 80)]
  assert stats.long_docs == 1 and stats.long_doc_tokens_dropped == 15
  plans, stats = _plan([[0, 1, 2]], lengths, length=20, long_doc_policy="truncate")
  assert [(s, e) for spans in plans for _, d, s, e in spans if d == 0] == [(0, 20)]


def test_carry_remainder_reuses_the_cut_tail():
  lengths = {d: 15 for d in range(8)}
  plans, stats = _plan([list(range(8))], lengths, length=20, carry_remainder=True)
  covered = Counter()
  for spans in plans:
    for _, d, s, e in spans:
      covered[d] += e - s
  assert stats.overflow_tokens_dropped == 0
  assert sum(covered.values()) == 20 * len(plans) and len(plans) == 6  # 120 tokens -> 6 samples


def test_budget_and_tiny_corpus():
  lengths = {d: 10 for d in range(30)}
  plans, stats = _plan([list(range(30))], lengths, length=20, num_samples=4)
  assert len(plans) == 4
  plans, stats = _plan([list(range(30))], lengths, length=20, token_budget=50)
  assert len(plans) == 2
  plans, stats = _plan([[0, 1]], lengths, length=100)  # corpus smaller than one sample
  assert plans == [] and stats.partial_dropped == 1
  assert stats.summary(2)["docs_by_use_count"] == {"0": 2}


def test_same_seed_same_plan():
  rng = np.random.default_rng(3)
  lengths = {d: int(rng.integers(5, 30)) for d in range(200)}
  pools = [list(range(i, 200, 7)) for i in range(7)]
  a, _ = _plan(pools, lengths, length=40, seed=5)
  b, _ = _plan(pools, lengths, length=40, seed=5)
  c, _ = _plan(pools, lengths, length=40, seed=6)
  assert a == b and a != c
