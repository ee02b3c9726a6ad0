"""The one attention entry point. Every model and benchmark calls `attention`.

q [B, S, N, H], k/v [B, S, K, H] with N a multiple of K (GQA). Causality is `q_pos >= k_pos` within
equal non-zero segment ids, so permuted (zigzag) or packed sequences keep their meaning.
"""

import jax.numpy as jnp

from longjax.ops.reference import reference_attention

IMPLEMENTATIONS = ("reference",)


def _check_shapes(q, k, v):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects q [B,S,N,H], k/v [B,S,K,H]; got {q.shape}, {k.shape}, {v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"k {k.shape} and v {v.shape} must have the same shape")
  if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
    raise ValueError(f"q {q.shape} and k {k.shape} must agree on batch, sequence and head dim")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")


def attention(q, k, v, *, segment_ids=None, positions=None, causal: bool = True,
              implementation: str | None = None):
  """Scaled dot-product attention; returns [B, S, N, H] in q's dtype."""
  _check_shapes(q, k, v)
  b, s = q.shape[:2]
  if segment_ids is None:
    segment_ids = jnp.ones((b, s), jnp.int32)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  implementation = implementation or "reference"
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
  scale = q.shape[-1] ** -0.5
  return reference_attention(q, k, v, segment_ids=segment_ids, positions=positions,
                             causal=causal, scale=scale)
