"""Chunked cross-entropy vs. the dense reference (full [B, S, V] logits, f32)."""

import jax
import jax.extend
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


def _bf16_case(seed=0, b=2, s=32, d=16, v=96):
  rng = np.random.default_rng(seed)
  hidden = jnp.asarray(rng.normal(size=(b, s, d)), jnp.bfloat16)
  w = jnp.asarray(rng.normal(size=(d, v)) * 0.3, jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, (b, s)), jnp.int32)
  weights = jnp.ones((b, s), jnp.float32)
  return hidden, w, targets, weights


def _grads(grad_dtype, hidden, w, targets, weights):
  def objective(h, w_):
    ce, _, n = chunked_cross_entropy(h, w_, targets, weights, chunk=8, grad_dtype=grad_dtype)
    return ce / n
  return jax.grad(objective, (0, 1))(hidden, w)


def test_logits_grad_in_compute_dtype_matches_the_f32_reference():
  """bf16 hidden states: the gradients with the logits' gradient rounded to bf16 agree with the
  dense f32 reference on the same bf16 inputs to bf16 precision, no worse than the f32-gradient
  path does; the loss value is the same either way (only the backward differs)."""
  hidden, w, targets, weights = _bf16_case()
  w16 = w.astype(jnp.bfloat16).astype(jnp.float32)  # the chunked loss multiplies by bf16(w)
  ref = jax.grad(lambda h, w_: (lambda ce, z, n: ce / n)(*dense(h, w_, targets, weights)),
                 (0, 1))(hidden.astype(jnp.float32), w16)
  for grad_dtype in ("compute", "float32"):
    got = _grads(grad_dtype, hidden, w, targets, weights)
    assert got[0].dtype == jnp.bfloat16 and got[1].dtype == jnp.float32
    for a, r in zip(got, ref):
      err = float(jnp.max(jnp.abs(a.astype(jnp.float32) - r)) / jnp.max(jnp.abs(r)))
      assert err < 2e-2, (grad_dtype, err)
  values = [chunked_cross_entropy(hidden, w, targets, weights, chunk=8, grad_dtype=g)
            for g in ("compute", "float32")]
  np.testing.assert_array_equal(np.array(values[0]), np.array(values[1]))


def test_f32_hidden_states_make_both_settings_identical():
  """With f32 compute the compute dtype is f32: the two settings give the same gradients."""
  hidden, w, targets, weights = _bf16_case(seed=1)
  hidden = hidden.astype(jnp.float32)
  a, b_ = _grads("compute", hidden, w, targets, weights), _grads("float32", hidden, w, targets,
                                                                  weights)
  for x, y in zip(a, b_):
    np.testing.assert_allclose(np.array(x), np.array(y), rtol=1e-6, atol=1e-7)


def _vocab_dot_operand_dtypes(grad_dtype):
  """Operand dtypes of every dot in the gradient's jaxpr that has the vocab axis (96)."""
  hidden, w, targets, weights = _bf16_case()
  jaxpr = jax.make_jaxpr(lambda h, w_: _grads(grad_dtype, h, w_, targets, weights))(hidden, w)
  found = []

  def walk(jx):
    for eqn in jx.eqns:
      if eqn.primitive.name == "dot_general" and any(96 in x.aval.shape for x in eqn.invars):
        found.append(tuple(str(x.aval.dtype) for x in eqn.invars))
      for param in eqn.params.values():  # scan, checkpoint and custom_vjp bodies
        for sub in param if isinstance(param, (list, tuple)) else [param]:
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            walk(sub)
  walk(jaxpr.jaxpr)
  return found


def test_compute_grad_runs_the_vocab_matmuls_in_bf16():
  """The speed claim itself: with 'compute' every vocab-sized matmul of the forward and
  backward takes bf16 operands; with 'float32' the backward's take an f32 gradient."""
  compute = _vocab_dot_operand_dtypes("compute")
  f32 = _vocab_dot_operand_dtypes("float32")
  assert len(compute) >= 3 and all(d == ("bfloat16", "bfloat16") for d in compute), compute
  assert any("float32" in d for d in f32), f32


def test_unknown_grad_dtype_is_refused():
  hidden, w, targets, weights = _bf16_case()
  with pytest.raises(ValueError, match="grad_dtype must be one of"):
    chunked_cross_entropy(hidden, w, targets, weights, grad_dtype="bf16")
