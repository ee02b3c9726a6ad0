"""Embedders and the resumable corpus embedding job."""

import numpy as np
import pytest

from longjax import io
from longjax.synth.embed import Embedder, HashingEmbedder, embed_corpus, make_embedder


class _Texts:
  def __init__(self, texts):
    self.texts = texts

  def __len__(self):
    return len(self.texts)

  def text(self, i):
    return self.texts[i]


class _Counting:
  def __init__(self, inner):
    self.inner, self.name, self.dim, self.calls = inner, inner.name, inner.dim, 0

  def embed(self, texts):
    self.calls += len(texts)
    return self.inner.embed(texts)


def test_hashing_embedder_properties():
  e = HashingEmbedder(64)
  assert isinstance(e, Embedder)
  texts = ["the cat sat on the mat", "the cat sat on a mat", "stock markets fell", ""]
  v = e.embed(texts)
  assert v.shape == (4, 64) and v.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-6)
  assert v[0] @ v[1] > v[0] @ v[2]
  np.testing.assert_array_equal(v, HashingEmbedder(64).embed(texts))  # no hidden state
  # Word-order-free unigram part: the same words give the same unigram buckets.
  assert e.embed(["Cat"])[0] @ e.embed(["cat"])[0] == pytest.approx(1.0)


def test_make_embedder_needs_a_known_name():
  assert make_embedder("hashing-32").dim == 32
  with pytest.raises(ValueError, match="unknown embedder 'bert'"):
    make_embedder("bert")


def test_embed_corpus_matches_direct_and_resumes(tmp_path):
  texts = _Texts([f"document {i} about topic {i % 7}" for i in range(23)])
  e = _Counting(HashingEmbedder(32))
  inputs = {"texts": io.fingerprint_json(texts.texts)}
  first = embed_corpus(texts, e, tmp_path / "emb", inputs=inputs, block_size=10, batch_size=4)
  np.testing.assert_array_equal(first, HashingEmbedder(32).embed(texts.texts))
  assert e.calls == 23
  assert embed_corpus(texts, e, tmp_path / "emb", inputs=inputs, block_size=10).shape == (23, 32)
  assert e.calls == 23  # finished stage reused
  # Interrupted run: only the missing block is recomputed.
  e2 = _Counting(HashingEmbedder(32))
  parts = tmp_path / "emb2" / "parts" / io.fingerprint_json(
      [{"embedder": e2.name, "dim": 32, "block_size": 10}, inputs])[:12]
  parts.mkdir(parents=True)
  io.write_npy(parts / "000000.npy", first[:10])
  io.write_npy(parts / "000001.npy", first[10:20])
  again = embed_corpus(texts, e2, tmp_path / "emb2", inputs=inputs, block_size=10)
  assert e2.calls == 3
  np.testing.assert_array_equal(again, first)
  assert not (tmp_path / "emb2" / "parts").exists()


def test_embed_corpus_rejects_unnormalised(tmp_path):
  class Bad:
    name, dim = "bad", 4

    def embed(self, texts):
      return np.ones((len(texts), 4), np.float32)
  with pytest.raises(ValueError, match="not L2-normalised"):
    embed_corpus(_Texts(["a", "b"]), Bad(), tmp_path / "e", inputs={})
