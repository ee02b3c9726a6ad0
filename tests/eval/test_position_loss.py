"""Loss by position against the model's own full logits and brute-force truncated contexts."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax.eval import position_loss as pl
from longjax.models import Llama, LlamaConfig
from longjax.models.tokenizer import Boundaries


@pytest.fixture(scope="module")
def model():
  return Llama(LlamaConfig.preset("tiny", dtype="float32"), rngs=nnx.Rngs(0))


@nnx.jit
def _logits(model, tokens):
  return model(tokens)


def _reference_nll(model, tokens):
  """NLL of tokens[1:] from log_softmax of the full [S, V] logits (no chunking)."""
  logits = _logits(model, jnp.asarray(tokens)[None])[0, :-1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -np.asarray(jnp.take_along_axis(logp, jnp.asarray(tokens)[1:, None], axis=-1)[:, 0])


def test_token_nll_matches_full_logits(model):
  toks = np.random.default_rng(0).integers(0, 49152, size=(2, 37))
  got = pl.token_nll(model, toks, chunk=8)  # 36 targets: exercises the padded last chunk
  for b in range(2):
    np.testing.assert_allclose(got[b], _reference_nll(model, toks[b]), rtol=1e-5, atol=1e-5)


def test_windowed_nll_uses_only_the_last_w_tokens(model):
  s, w, stride = 24, 8, 2
  toks = np.random.default_rng(1).integers(0, 49152, size=(1, s))
  got = pl.windowed_nll(model, toks, w, stride=stride)[0]
  full = _reference_nll(model, toks[0])
  np.testing.assert_allclose(got[:w - 1], full[:w - 1], rtol=1e-5, atol=1e-5)  # exact below w
  # Brute force: target t scored from exactly c preceding tokens, for each allowed c.
  by_c = {}
  for c in range(w - stride, w):
    rows = jnp.asarray(np.stack([toks[0, t - c:t + 1] for t in range(w, s)]))
    logp = jax.nn.log_softmax(_logits(model, rows)[:, -2], axis=-1)
    by_c[c] = -np.asarray(jnp.take_along_axis(logp, rows[:, -1:], axis=-1)[:, 0])
  for t in range(w, s):  # the windowed score is one of them: w - stride <= context <= w - 1
    assert min(abs(got[t - 1] - by_c[c][t - w]) for c in by_c) < 1e-4, t
    assert abs(got[t - 1] - full[t - 1]) > 1e-6  # truncation changed the score


def test_buckets_and_means():
  assert pl.log_buckets(1000) == [(0, 128), (128, 256), (256, 512), (512, 1000)]
  assert pl.linear_buckets(2500) == [(0, 1024), (1024, 2048), (2048, 2500)]
  nll = np.arange(1, 10, dtype=np.float32)[None]  # targets at positions 1..9
  assert pl.bucket_means(nll, [(0, 4), (4, 10)]) == [2.0, 6.5]
  assert pl.window_starts(20, 8, 4) == [0, 4, 8, 12]
  assert pl.window_starts(21, 8, 4) == [0, 4, 8, 12, 13]


class _CharTokenizer:
  """One token per character (ids >= 2), with a given boundary convention; its BOS (1) is one
  that the SmolLM2-style convention (end token 0 only) does not name."""
  bos_id = 1

  def __init__(self, boundaries):
    self.boundaries = boundaries

  def encode(self, text):
    return [ord(c) % 200 + 2 for c in text]


X = ord("x") % 200 + 2  # 122


def test_heldout_sequences_single_then_concatenated():
  doc = lambda key, n: types.SimpleNamespace(key=key, text="x" * n)
  docs = [doc("sotu/a", 5), doc("sotu/b", 30), doc("sotu/c", 6), doc("sotu/d", 7),
          doc("shakespeare/p", 40), doc("shakespeare/q", 50), doc("bbc/z", 100)]
  end_only = _CharTokenizer(Boundaries((), (0,), "separator"))
  seqs = pl.heldout_sequences(docs, end_only, 12, 2)
  assert [s.keys for s in seqs] == [("sotu/b",), ("sotu/a", "sotu/c"),
                                    ("shakespeare/p",), ("shakespeare/q",)]
  assert [s.concatenated for s in seqs] == [False, True, False, False]
  # Documents as in training data: no BOS; the separator after each one.
  assert seqs[0].tokens.tolist() == [X] * 12
  assert seqs[1].tokens.tolist() == [X] * 5 + [0] + [X] * 6
  with pytest.raises(ValueError, match="'sotu': only 1 sequences of 45 tokens, 3 asked"):
    pl.heldout_sequences(docs, end_only, 45, 3)
  start_end = _CharTokenizer(Boundaries((1,), (0,), "BOS + document + EOS"))
  seqs = pl.heldout_sequences(docs, start_end, 12, 1)
  assert [s.keys for s in seqs] == [("sotu/b",), ("shakespeare/p",)]
  assert seqs[0].tokens.tolist() == [1] + [X] * 11
  seqs = pl.heldout_sequences(docs[:1] + docs[2:], start_end, 14, 1)  # without sotu/b
  assert seqs[0].keys == ("sotu/a", "sotu/c")
  assert seqs[0].tokens.tolist() == [1] + [X] * 5 + [0, 1] + [X] * 6


def test_loss_by_position_reports_gain(model):
  toks = np.random.default_rng(2).integers(0, 49152, size=(64,)).astype(np.int32)
  seqs = [pl.LossSequence("sotu", ("sotu/x",), toks)]
  r = pl.loss_by_position(model, seqs, [16, 512])
  assert r["windows"] == [16]  # windows >= the length are dropped
  t = r["log"]
  assert t["buckets"] == [(0, 64)]
  assert t["gain_w16"][0] == pytest.approx(t["nll_w16"][0] - t["nll_full"][0])


def test_loss_by_position_per_sequence_tables(model):
  """Each sequence's own bucket means (for statistics over sequences) from its direct NLL."""
  rng = np.random.default_rng(3)
  seqs = [pl.LossSequence("sotu", (f"sotu/{i}",), rng.integers(0, 49152, size=(200,)))
          for i in range(2)]
  r = pl.loss_by_position(model, seqs, [64])
  assert [s["keys"] for s in r["sequences"]] == [["sotu/0"], ["sotu/1"]]
  ref = [_reference_nll(model, s.tokens) for s in seqs]  # targets at positions 1..199
  for s, nll in zip(r["sequences"], ref):
    assert s["mean_nll_full"] == pytest.approx(float(nll.mean()), rel=1e-5)
    assert s["log"]["nll_full"] == pytest.approx(
        [nll[:127].mean(), nll[127:199].mean()], rel=1e-5)  # buckets (0, 128), (128, 200)
    assert s["1k"]["nll_full"] == pytest.approx([nll.mean()], rel=1e-5)
    assert set(s["log"]) == {"nll_full", "nll_w64", "gain_w64"}
  for key in ("nll_full", "nll_w64", "gain_w64"):  # the aggregate is the mean over sequences
    per = np.asarray([s["log"][key] for s in r["sequences"]])
    assert r["log"][key] == pytest.approx(per.mean(0).tolist(), rel=1e-5, abs=1e-5)


def test_gold_loglik_matches_direct_scoring(model, smol_tokenizer):
  from longjax.eval import suite
  from longjax.eval.runner import gold_answer_text, gold_loglik
  from longjax.eval.task import ExampleGenerator
  gen = ExampleGenerator(smol_tokenizer)
  task = suite.make_tasks()["niah_single_1"]
  [got] = gold_loglik(model, gen, task, 512, 1)
  ex = gen.example(task, 512, 0)
  prompt = gen.encode_prompt(ex)
  answer = smol_tokenizer.encode(gold_answer_text(ex.outputs))
  nll = _reference_nll(model, np.asarray(prompt + answer))[len(prompt) - 1:]
  assert got["gold_nll"] == pytest.approx(float(nll.mean()), rel=1e-4)
  logits = _logits(model, jnp.asarray(prompt + answer)[None])[0, len(prompt) - 1:-1]
  assert got["gold_exact"] == bool((np.asarray(logits).argmax(-1) == answer).all())
  assert got["gold_tokens"] == len(answer)
