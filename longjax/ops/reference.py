"""Dense attention in plain XLA: the oracle every other implementation is tested against.

Axis letters: B batch, S/T query/key sequence, N query heads, K kv heads, G = N/K, H head dim.
"""

import jax
import jax.numpy as jnp


def mask(q_segment_ids, k_segment_ids, q_positions, k_positions, causal: bool):
  """Allowed[b, s, t]: same non-zero segment and (if causal) q position >= k position."""
  allowed = (q_segment_ids[:, :, None] == k_segment_ids[:, None, :]) & (
      q_segment_ids[:, :, None] != 0)
  if causal:
    allowed &= q_positions[:, :, None] >= k_positions[:, None, :]
  return allowed


def reference_attention(q, k, v, *, segment_ids, positions, causal: bool, scale: float,
                        kv_segment_ids=None, kv_positions=None, return_lse: bool = False):
  """softmax(q kᵀ · scale) v in f32 with GQA by reshape (K/V never repeated).

  Rows with no visible key return zeros (and lse = -inf).
  """
  b, s, n, h = q.shape
  kh = k.shape[2]
  kv_segment_ids = segment_ids if kv_segment_ids is None else kv_segment_ids
  kv_positions = positions if kv_positions is None else kv_positions
  qg = q.reshape(b, s, kh, n // kh, h).astype(jnp.float32)
  logits = jnp.einsum("bskgh,btkh->bkgst", qg, k.astype(jnp.float32)) * scale
  allowed = mask(segment_ids, kv_segment_ids, positions, kv_positions, causal)[:, None, None]
  logits = jnp.where(allowed, logits, -jnp.inf)
  lse = jax.nn.logsumexp(logits, axis=-1)  # [B, K, G, S]
  safe_lse = jnp.where(jnp.isfinite(lse), lse, 0.0)
  probs = jnp.where(allowed, jnp.exp(logits - safe_lse[..., None]), 0.0)
  out = jnp.einsum("bkgst,btkh->bskgh", probs, v.astype(jnp.float32)).reshape(b, s, n, h)
  out = out.astype(q.dtype)
  if return_lse:
    return out, lse.reshape(b, n, s).transpose(0, 2, 1)  # [B, S, N]
  return out
