"""Standard: a seeded shuffle streamed through the carry packer, disjoint shard ranges."""

import json

import numpy as np
import pytest

from longjax import io
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.standard import StandardMethod
from tests.helpers.synth import EOS, byte_tokenizer, make_store

L = 64


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  index_dir = tmp_path_factory.mktemp("std")
  rng = np.random.default_rng(0)
  texts = [f"doc{i} " + "x" * int(rng.integers(1, 40)) for i in range(60)]
  store = make_store(index_dir, texts)
  tok = byte_tokenizer()
  StandardMethod().build(BuildContext(store, tok, None, {}, index_dir))
  return index_dir, texts, tok


def _examples(built, **kw):
  index_dir, _, tok = built
  args = dict(length=L, tokenizer=tok, shard=0, num_shards=1, seed=5) | kw
  return list(StandardMethod().examples(index_dir, **args))


def test_samples_are_the_shuffled_eos_joined_stream(built):
  index_dir, texts, tok = built
  out = _examples(built)
  spans = [s for ex in out for s in json.loads(ex["provenance"])["spans"]]
  order = list(dict.fromkeys(d for d, _, _ in spans))
  assert order != sorted(order)  # shuffled
  stream = np.concatenate([tok.encode(texts[d]) + [EOS] for d in order])
  got = np.concatenate([ex["targets"] for ex in out])
  assert all(ex["targets"].shape == (L,) and ex["targets"].dtype == np.int32 for ex in out)
  np.testing.assert_array_equal(got, stream[:len(got)])
  assert len(stream) - len(got) < L + len(texts[order[-1]]) + 1  # only the tail is dropped
  assert io.read_manifest(index_dir / "standard")["counts"]["documents"] == len(texts)


def test_seed_determinism(built):
  a, b, c = _examples(built), _examples(built), _examples(built, seed=6)
  assert [e["provenance"] for e in a] == [e["provenance"] for e in b]
  assert [e["targets"].tolist() for e in a] == [e["targets"].tolist() for e in b]
  assert [e["targets"].tolist() for e in a] != [e["targets"].tolist() for e in c]


def test_shards_are_disjoint_contiguous_ranges(built):
  perm = np.random.default_rng(5).permutation(60).tolist()  # the spec's seeded permutation
  flat = []
  for shard in range(3):
    docs = list(dict.fromkeys(d for ex in _examples(built, shard=shard, num_shards=3)
                              for d, _, _ in json.loads(ex["provenance"])["spans"]))
    mine = perm[20 * shard:20 * (shard + 1)]
    assert docs == mine[:len(docs)] and len(docs) >= 15  # a prefix: only the tail is dropped
    flat += docs
  assert len(flat) == len(set(flat))  # no document in two shards
