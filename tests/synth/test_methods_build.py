"""End to end: build every method on a small store (hashing embedder), then stream examples.

Checks what holds for all methods (exact length, provenance, seed determinism, disjoint and
complete shards, manifests that account for every document) and the KNN/ICLM/NExtLong
properties that only show after a real build.
"""

import json

import numpy as np
import pytest

from longjax import io
from longjax.synth import embed
from longjax.synth.methods import METHODS, contexts
from longjax.synth.methods.base import BuildContext
from tests.helpers.synth import BOS, EOS, byte_tokenizer, make_store

L = 128
TOPICS = [["river", "boat", "water", "fish", "bank"], ["stock", "market", "price", "trade"],
          ["goal", "match", "team", "score", "league"], ["chip", "code", "server", "data"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  index_dir = tmp_path_factory.mktemp("build")
  rng = np.random.default_rng(0)
  texts = []
  for i in range(80):
    words = TOPICS[i % 4]
    lines = [" ".join(rng.choice(words, int(rng.integers(3, 12)))) for _ in range(
        int(rng.integers(1, 6)))]
    texts.append(f"doc {i}: " + "\n".join(lines))
  store = make_store(index_dir, texts)
  tok = byte_tokenizer()
  ctx = BuildContext(store, tok, embed.HashingEmbedder(64),
                     {"nextlong": {"chunk_size": 40, "chars_per_token": 1.0}}, index_dir,
                     lengths=(L,))
  for name in ("standard", "knn", "iclm", "nextlong"):
    METHODS[name].build(ctx)
  return index_dir, texts, tok


def _run(built, method, shard=0, num_shards=1, seed=3):
  index_dir, _, tok = built
  return list(METHODS[method].examples(index_dir, length=L, tokenizer=tok, shard=shard,
                                       num_shards=num_shards, seed=seed))


@pytest.mark.parametrize("method", ["standard", "knn", "iclm", "nextlong"])
def test_examples_are_exact_deterministic_and_sharded(built, method):
  whole = _run(built, method)
  assert len(whole) >= 3
  for ex in whole:
    assert ex["targets"].shape == (L,) and ex["targets"].dtype == np.int32
    assert json.loads(ex["provenance"])["seed"] == 3
  again = _run(built, method)
  assert [e["provenance"] for e in again] == [e["provenance"] for e in whole]
  other = _run(built, method, seed=4)
  assert [e["provenance"] for e in other] != [e["provenance"] for e in whole]
  shards = [_run(built, method, shard=s, num_shards=3) for s in range(3)]
  key = lambda e: json.dumps({k: v for k, v in json.loads(e["provenance"]).items()
                              if k not in ("shard", "num_shards", "context")})
  keys = [key(e) for s in shards for e in s]
  assert len(keys) == len(set(keys))  # disjoint
  if method != "standard":  # planned methods: the shards together are exactly the whole
    assert sorted(keys) == sorted(key(e) for e in whole)


@pytest.mark.parametrize("method", ["knn", "iclm"])
def test_planned_contexts_decode_to_their_spans(built, method):
  _, texts, tok = built
  for ex in _run(built, method):
    spans = json.loads(ex["provenance"])["spans"]
    expect = np.concatenate([(tok.encode(texts[d]) + [EOS])[s:e] for d, s, e in spans])
    np.testing.assert_array_equal(ex["targets"], expect)


def _doc_stream(plan):
  """The documents of a plan's contexts in order, each document's spans merged."""
  stream = []
  for c in range(len(plan)):
    for d, s, e in plan.context(c):
      if stream and stream[-1][0] == d and stream[-1][2] == s:
        stream[-1] = (d, stream[-1][1], e)
      else:
        stream.append((d, s, e))
  return stream


def test_knn_groups_follow_the_neighbour_lists_and_keep_every_token(built):
  index_dir, texts, tok = built
  n_tok = {d: len(tok.encode(t)) + 1 for d, t in enumerate(texts)}
  plan = contexts.Plan(index_dir / "knn", L)
  stream = _doc_stream(plan)
  docs = [d for d, _, _ in stream]
  assert len(docs) == len(set(docs))  # each document once, globally
  # Every document is whole (the group stream is cut with carry), except the very last one.
  assert all(s == 0 and e == n_tok[d] for d, s, e in stream[:-1])
  manifest = io.read_manifest(index_dir / "knn")
  skipped = {s["doc_id"] for s in manifest["skipped"]}
  assert skipped.isdisjoint(docs) and len(skipped) + len(docs) == len(texts)
  # Regroup the stream by the rule (independent of knn_groups): a group opens with a seed and
  # takes the seed's nearest unused neighbours (self excluded) until it holds >= L tokens; when
  # the seed's list has no unused neighbour left, the next document is a new seed. A group
  # counts the tokens the previous one carried past its last context boundary.
  table = np.load(index_dir / "neighbours" / "docs-k257" / "neighbours.npy")
  used, total, seed = set(), 0, None
  for d in docs:
    if seed is not None and total < L:
      free = [int(x) for x in table[seed] if x != seed and x >= 0 and x not in used]
      if free:
        assert d == free[0]
      else:
        seed = d
    else:
      seed, total = d, total % L
    used.add(d)
    total += n_tok[d]
  budget = manifest["counts"]["budget"][f"L{L}"]
  assert budget["samples"] == len(plan)
  assert budget["source_tokens"] == sum(n_tok.values())
  kept = sum(e - s for d, s, e in stream)
  assert budget["source_tokens_dropped"] == sum(n_tok.values()) - kept
  leftover = sum(n_tok[d] for d in skipped)
  assert budget["source_tokens_dropped"] < L + leftover  # only the tail and the last group


def test_iclm_stream_follows_the_built_order(built):
  index_dir, texts, _ = built
  order = np.load(index_dir / "iclm" / "order.npy").tolist()
  manifest = io.read_manifest(index_dir / "iclm")
  dropped = {s["doc_id"] for s in manifest["skipped"]}
  assert sorted(order + [d for d in dropped if d not in order]) == list(range(len(texts)))
  ctxs = {json.loads(e["provenance"])["context"]: json.loads(e["provenance"])["spans"]
          for e in _run(built, "iclm")}
  stream = [d for c in sorted(ctxs) for d, _, _ in ctxs[c]]
  assert list(dict.fromkeys(stream)) == order[:len(dict.fromkeys(stream))]


def test_nextlong_samples_keep_every_meta_chunk(built):
  index_dir, texts, tok = built
  manifest = io.read_manifest(index_dir / "nextlong")
  stats = manifest["counts"][f"L{L}"]
  assert manifest["counts"]["documents_with_chunks"] == len(texts)
  assert stats["meta_documents_losing_a_meta_chunk"] == 0
  assert stats["check"]["lost_a_meta_chunk_share"] == 0
  meta_docs = np.load(index_dir / "nextlong" / "plans" / f"L{L}.meta_docs.npy")
  assert sorted(set(meta_docs[:, 0].tolist())) == list(range(len(texts)))
  # a meta-document of several chunks holds at most half of L (max_meta_share), so that
  # negatives interleave; one chunk longer than that stands alone
  chunk_tokens = np.load(index_dir / "nextlong" / "plans" / "chunk_tokens.npy")
  several = [chunk_tokens[f:e].sum() for _, f, e in meta_docs if e - f > 1]
  assert several and max(several) <= L // 2
  assert "no_interleaving_share" in stats["check"]
  examples = _run(built, "nextlong")
  assert len(examples) == len(meta_docs)  # none discarded on this corpus
  for ex in examples:
    info = json.loads(ex["provenance"])
    assert BOS not in ex["targets"].tolist()  # the boundary convention: no BOS for this tokenizer
    assert info["meta_chunks_complete"] == info["p"]
    negs = [c for block in info["negatives"] for c in block]
    assert len(negs) == len(set(negs)) and not set(negs) & set(info["meta_chunks"])
    assert info["tokens_before_truncation"] >= L


@pytest.mark.parametrize("method", ["standard", "knn", "iclm", "quest", "nextlong"])
def test_unknown_options_are_named(built, tmp_path, method):
  """Each build parses its options before any work: a misspelt one stops it, naming it."""
  index_dir, _, tok = built
  from longjax.synth import corpus
  ctx = BuildContext(corpus.open_store(index_dir), tok, embed.HashingEmbedder(8),
                     {method: {"w": 2.0}}, tmp_path, lengths=(L,))
  with pytest.raises(ValueError, match=rf"^{method}: unknown option 'w'; known: "):
    METHODS[method].build(ctx)
