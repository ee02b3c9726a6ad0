"""Attention-test helpers: random q/k/v, packed segment ids, meshes, the dense reference."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType

from longjax import ops


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
