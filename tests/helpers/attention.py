"""Attention-test helpers: random q/k/v, packed segment ids, meshes, the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType

from longjax import ops
from longjax.ops.kernels import BlockMask


def make_qkv(b=2, s=32, n=4, kh=2, h=8, dtype=jnp.float32, seed=0):
  """q [B,S,N,H], k/v [B,S,K,H] and a cotangent do, unit normal."""
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (b, s, n, h), dtype)
  k = jax.random.normal(ks[1], (b, s, kh, h), dtype)
  v = jax.random.normal(ks[2], (b, s, kh, h), dtype)
  do = jax.random.normal(ks[3], (b, s, n, h), dtype)
  return q, k, v, do


def packed_segments(b, s, seed=0):
  """[B,S] int32: 2-4 documents per row then padding (0), different per row."""
  rng = np.random.default_rng(seed)
  out = np.zeros((b, s), np.int32)
  for i in range(b):
    cuts = np.sort(rng.choice(np.arange(1, s - 2), size=3, replace=False))
    bounds = [0, *cuts[:-1], s - int(rng.integers(0, 4))]
    for d, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
      out[i, lo:hi] = d + 1
  return jnp.asarray(out)


def document_positions(segment_ids):
  """[B,S] int32 positions restarting at 0 at each document (run of equal segment ids)."""
  seg = np.asarray(segment_ids)
  idx = np.broadcast_to(np.arange(seg.shape[1]), seg.shape)
  first = np.concatenate([np.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], 1)
  start = np.maximum.accumulate(np.where(first, idx, 0), axis=1)
  return jnp.asarray(idx - start, jnp.int32)


def make_mesh(**sizes):
  """Auto-axes mesh over the first prod(sizes) CPU devices, e.g. make_mesh(data=2, sequence=4)."""
  names = tuple(sizes)
  return jax.make_mesh(tuple(sizes.values()), names, axis_types=(AxisType.Auto,) * len(names),
                       devices=jax.devices()[:int(np.prod(list(sizes.values())))])


def reference(q, k, v, do, segment_ids=None, positions=None, causal=True):
  """Dense f32 output and (dq, dk, dv)."""
  f = lambda q, k, v: ops.attention(q, k, v, segment_ids=segment_ids, positions=positions,
                                    causal=causal, implementation="reference")
  f32 = lambda x: x.astype(jnp.float32)
  o, vjp = jax.vjp(f, f32(q), f32(k), f32(v))
  return o, vjp(f32(do))


def assert_close(actual, expected, dtype):
  """fp32: |a - e| <= 2e-5 (+2e-5 relative); bf16: relative Frobenius error <= 2e-2."""
  a = np.asarray(jnp.asarray(actual, jnp.float32))
  e = np.asarray(jnp.asarray(expected, jnp.float32))
  assert np.isfinite(a).all()
  if dtype == jnp.float32:
    np.testing.assert_allclose(a, e, atol=2e-5, rtol=2e-5)
  else:
    rel = np.linalg.norm(a - e) / np.linalg.norm(e)
    assert rel <= 2e-2, f"relative error {rel:.3g} > 2e-2"


def two_chunk(kernel, q, k, v, do, seg, pos, scale):
  """The ring's arithmetic for two contiguous chunks on one device: blocks (1,1) and (2,2)
  causal, (2,1) not, merged through lse in f32; each block's backward fed the global o/lse.
  Returns o (q.dtype), lse, (dq, dk, dv)."""
  c = q.shape[1] // 2
  h = lambda x, i: x[:, i * c:(i + 1) * c]
  mask = lambda i, j, causal: BlockMask(h(seg, i), h(seg, j), h(pos, i), h(pos, j), causal)
  blk = lambda i, j, causal: kernel.fwd(h(q, i), h(k, j), h(v, j), mask(i, j, causal), scale)
  (o11, l11), (o22, l22), (o21, l21) = blk(0, 0, True), blk(1, 1, True), blk(1, 0, False)
  lse2 = jnp.logaddexp(l22, l21)
  safe = jnp.where(jnp.isfinite(lse2), lse2, 0.0)
  w = lambda o_, l_: jnp.exp(l_ - safe)[..., None] * o_.astype(jnp.float32)
  o = jnp.concatenate([o11.astype(jnp.float32), w(o22, l22) + w(o21, l21)], 1).astype(q.dtype)
  lse = jnp.concatenate([l11, lse2], 1)
  back = lambda i, j, causal: [x.astype(jnp.float32) for x in kernel.bwd(
      h(q, i), h(k, j), h(v, j), h(o, i), h(lse, i), h(do, i), mask(i, j, causal), scale)]
  g11, g22, g21 = back(0, 0, True), back(1, 1, True), back(1, 0, False)
  dq = jnp.concatenate([g11[0], g22[0] + g21[0]], 1)
  dk = jnp.concatenate([g11[1] + g21[1], g22[1]], 1)
  dv = jnp.concatenate([g11[2] + g21[2], g22[2]], 1)
  return o, lse, (dq, dk, dv)


def relative_error(a, b) -> float:
  """||a - b|| / ||b|| in f32."""
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_with_grads(fn, q, k, v, do, mesh=None):
  """(o, (dq, dk, dv)) of `fn(q, k, v)` with cotangent `do`, jitted, under `mesh` if given."""
  def both(q, k, v, do):
    o, vjp = jax.vjp(fn, q, k, v)
    return o, vjp(do)
  if mesh is None:
    return jax.jit(both)(q, k, v, do)
  with jax.set_mesh(mesh):
    return jax.jit(both)(q, k, v, do)


def grad_errors(o, grads, o_ref, grads_ref) -> dict[str, float]:
  """Relative errors of o, dq, dk, dv against a reference."""
  return {name: relative_error(a, b) for name, a, b in
          zip(("o", "dq", "dk", "dv"), (o, *grads), (o_ref, *grads_ref))}
