"""Blockwise (flash-style) attention vs the dense reference: output and dq/dk/dv."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax.ops.blockwise import make_blockwise_kernel
from longjax.ops.kernels import fused_attention
from tests.helpers.attention import assert_close, make_qkv, packed_segments, reference

SMALL_TILES = make_blockwise_kernel(block_q=8, block_k=16)  # several tiles on every axis


def _run(q, k, v, do, segment_ids=None, positions=None, causal=True, kernel=SMALL_TILES):
  def f(q, k, v):
    return fused_attention(kernel, q, k, v, segment_ids=segment_ids, positions=positions,
                           causal=causal, scale=q.shape[-1] ** -0.5)
  o, vjp = jax.vjp(f, q, k, v)
  return o, vjp(do)


@pytest.mark.parametrize("n,kh", [(4, 4), (4, 1), (6, 2)], ids=["mha", "mqa", "gqa3"])
@pytest.mark.parametrize("segments", [False, True], ids=["causal", "documents"])
def test_matches_reference_fp32(n, kh, segments):
  q, k, v, do = make_qkv(b=2, s=48, n=n, kh=kh, h=8)
  seg = packed_segments(2, 48) if segments else None
  o, grads = jax.jit(lambda *a: _run(*a, segment_ids=seg))(q, k, v, do)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_non_causal_and_bf16():
  q, k, v, do = make_qkv(b=1, s=64, n=4, kh=2, h=16, dtype=jnp.bfloat16, seed=3)
  for causal in (False, True):
    o, grads = jax.jit(lambda *a: _run(*a, causal=causal))(q, k, v, do)
    o_ref, grads_ref = reference(q, k, v, do, causal=causal)
    assert o.dtype == jnp.bfloat16 and grads[0].dtype == jnp.bfloat16
    assert_close(o, o_ref, jnp.bfloat16)
    for g, g_ref in zip(grads, grads_ref):
      assert_close(g, g_ref, jnp.bfloat16)


def test_positions_define_the_mask_in_any_token_order():
  """Shuffling tokens together with their positions/segments just shuffles the output."""
  q, k, v, do = make_qkv(b=2, s=32, n=2, kh=1, h=8, seed=5)
  seg = packed_segments(2, 32, seed=1)
  pos = jnp.broadcast_to(jnp.arange(32), (2, 32))
  perm = np.random.default_rng(0).permutation(32)
  p = lambda x: x[:, perm]
  o, grads = jax.jit(lambda *a: _run(*a, segment_ids=p(seg), positions=p(pos)))(
      p(q), p(k), p(v), p(do))
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, p(o_ref), jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, p(g_ref), jnp.float32)


def test_padding_rows_are_zero_not_nan():
  q, k, v, do = make_qkv(b=1, s=32, n=2, kh=2, h=8)
  seg = jnp.concatenate([jnp.ones((1, 20), jnp.int32), jnp.zeros((1, 12), jnp.int32)], 1)
  o, grads = jax.jit(lambda *a: _run(*a, segment_ids=seg))(q, k, v, do)
  assert np.isfinite(np.asarray(o)).all() and all(np.isfinite(np.asarray(g)).all() for g in grads)
  np.testing.assert_array_equal(np.asarray(o[:, 20:]), 0.0)
  np.testing.assert_array_equal(np.asarray(grads[0][:, 20:]), 0.0)

