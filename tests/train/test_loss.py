"""Chunked cross-entropy vs. the dense reference (full [B, S, V] logits, f32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax.train.loss import chunk_size, chunked_cross_entropy


def dense(hidden, w, targets, weights):
  logits = jnp.einsum("bsd,dv->bsv", hidden.astype(jnp.float32), w.astype(jnp.float32))
  lse = jax.nn.logsumexp(logits, -1)
  label = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return jnp.sum((lse - label) * weights), jnp.sum(lse**2 * weights), jnp.sum(weights)


@pytest.mark.parametrize("shards,chunk", [(1, 8), (1, 64), (2, 4), (4, 2)])
def test_chunked_matches_dense_value_and_grad(shards, chunk):
  rng = np.random.default_rng(shards * 10 + chunk)
  b, s, d, v = 2, 16, 8, 37
  hidden = jnp.asarray(rng.normal(size=(b, s, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, (b, s)), jnp.int32)
  weights = jnp.asarray(rng.integers(0, 2, (b, s)), jnp.float32)
  got = chunked_cross_entropy(hidden, w, targets, weights, shards=shards, chunk=chunk)
  want = dense(hidden, w, targets, weights)
  np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5)

  def objective(fn, **kw):
    return lambda h, w: (lambda ce, z, n: (ce + 1e-2 * z) / n)(*fn(h, w, targets, weights, **kw))
  g_got = jax.grad(objective(chunked_cross_entropy, shards=shards, chunk=chunk), (0, 1))(hidden, w)
  g_want = jax.grad(objective(dense), (0, 1))(hidden, w)
  for a, b_ in zip(g_got, g_want):
    np.testing.assert_allclose(np.array(a), np.array(b_), rtol=1e-4, atol=1e-6)


def test_no_full_logits_in_the_program():
  """The largest f32 intermediate is one chunk's logits, not [B, S, V]."""
  b, s, d, v, chunk = 1, 256, 8, 512, 16
  args = (jnp.zeros((b, s, d)), jnp.zeros((d, v)), jnp.zeros((b, s), jnp.int32), jnp.ones((b, s)))
  fn = jax.grad(lambda h, w, t, m: chunked_cross_entropy(h, w, t, m, chunk=chunk)[0], (0, 1))
  text = jax.jit(fn).lower(*args).as_text()
  assert f"{s}x{v}" not in text and f"{chunk}x{v}" in text


def test_chunk_must_divide_the_shard():
  assert chunk_size(64, 4, 4096) == 16
  with pytest.raises(ValueError, match="loss chunk \\(6\\) must divide"):
    chunk_size(64, 4, 6)
