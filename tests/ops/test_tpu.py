"""Pallas TPU flash-attention kernel (R2 contract) in interpret mode on CPU, vs the reference.

Interpret mode emulates every grid step, so these run tens of seconds: marked slow.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax import ops
from longjax.ops.kernels import BlockMask
from longjax.ops.tpu import tpu_fwd
from tests.helpers.attention import (assert_close, make_mesh, make_qkv, packed_segments,
                                reference)

pytestmark = pytest.mark.slow


def test_tpu_kernel_with_documents_and_gqa():
  q, k, v, do = make_qkv(b=1, s=128, n=4, kh=2, h=16)
  seg = packed_segments(1, 128, seed=4)
  f = lambda q, k, v: ops.attention(q, k, v, segment_ids=seg, implementation="tpu")
  o, vjp = jax.vjp(jax.jit(f), q, k, v)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(vjp(do), grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_tpu_block_lse_and_unmasked_block():
  """R2: lse of the scaled logits; a non-causal block; rows of padding give lse=-inf, o=0."""
  q, k, v, _ = make_qkv(b=1, s=128, n=2, kh=2, h=16, seed=2)
  seg = jnp.concatenate([jnp.ones((1, 100), jnp.int32), jnp.zeros((1, 28), jnp.int32)], 1)
  o, lse = jax.jit(lambda q, k, v: tpu_fwd(q, k, v, BlockMask(seg, seg, causal=False), 0.25))(
      q, k, v)
  pos = jnp.zeros((1, 128), jnp.int32)
  from longjax.ops.reference import reference_attention
  o_ref, lse_ref = reference_attention(q, k, v, segment_ids=seg, positions=pos, causal=False,
                                       scale=0.25, return_lse=True)
  np.testing.assert_allclose(o, o_ref, atol=2e-5)
  np.testing.assert_allclose(lse[:, :100], lse_ref[:, :100], atol=2e-5)
  assert np.isneginf(np.asarray(lse[:, 100:])).all()


def test_ring_with_tpu_kernel():
  """The ring over 2 devices with the TPU kernel per half-block (zigzag, documents, GQA)."""
  n, s = 2, 512
  q, k, v, do = make_qkv(b=1, s=s, n=4, kh=2, h=16, seed=6)
  seg = packed_segments(1, s, seed=6)
  z = lambda x: ops.zigzag(x, n)

  def f(q, k, v):
    return ops.unzigzag(ops.attention(z(q), z(k), z(v), segment_ids=z(seg), implementation="tpu",
                                      ring=ops.RingOptions(layout="zigzag")), n)

  with jax.set_mesh(make_mesh(sequence=n)):
    o, vjp = jax.vjp(jax.jit(f), q, k, v)
    grads = vjp(do)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_index_kernel_with_positions_is_exact_in_any_order():
  """Kernels that mask by index take positions through a device-side check (lax.cond):
  in-order positions use the kernel, shuffled ones the blockwise kernel; both are exact."""
  q, k, v, do = make_qkv(b=1, s=128, n=2, kh=1, h=16, seed=9)
  pos = jnp.arange(128, dtype=jnp.int32)[None]
  perm = np.random.default_rng(0).permutation(128)
  o_ref, _ = reference(q, k, v, do)
  f = jax.jit(lambda q, k, v, p: ops.attention(q, k, v, positions=p, implementation="tpu"))
  assert "cond[" in str(jax.make_jaxpr(f)(q, k, v, pos))
  assert_close(f(q, k, v, pos), o_ref, jnp.float32)
  shuffled = f(q[:, perm], k[:, perm], v[:, perm], pos[:, perm])
  assert_close(shuffled, o_ref[:, perm], jnp.float32)
