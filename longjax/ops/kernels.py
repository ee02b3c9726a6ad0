"""The block-kernel contract (spec R2) and the single-device custom_vjp built on it.

Every attention backend (pure-JAX blockwise, cuDNN, Pallas) is a `BlockKernel`:

  fwd(q, k, v, mask, scale) -> (o, lse)
      o [B, T, N, H] normalised within the block (any float dtype), lse [B, T, N] f32, natural
      log of the *scaled* logits, -inf on rows that see no key.
  bwd(q, k, v, o, lse, do, mask, scale) -> (dq, dk, dv)
      gradients of the block given the *global* o and lse (so that blocks combined through
      their lse get the right dq/dk: P = exp(Z - lse_glob), dZ = P * (dO Vᵀ - rowsum(dO * o))).

The ring (ring.py) and the one-device path (`fused_attention`) only talk to kernels through this
contract, so a kernel is swapped without touching either.

Axis letters: B batch, T query length, S key length, N query heads, K kv heads, H head dim.
"""

import dataclasses
import functools
from typing import Callable, NamedTuple

import jax
from jax.ad_checkpoint import checkpoint_name


class BlockMask(NamedTuple):
  """Which (query, key) pairs of a block may attend.

  allowed[t, s] = (q_segment_ids[t] == kv_segment_ids[s] != 0, when segment ids are given)
                  and (q_positions[t] >= kv_positions[s], when causal; positions default to the
                  local index, i.e. the aligned lower triangle).
  Arrays are [B, T] / [B, S] int32 or None; `causal` is a static bool.
  """
  q_segment_ids: jax.Array | None = None
  kv_segment_ids: jax.Array | None = None
  q_positions: jax.Array | None = None
  kv_positions: jax.Array | None = None
  causal: bool = True

  @property
  def index_only(self) -> bool:
    """True when the mask needs no data: no segments and causality (if any) by local index."""
    return self.q_segment_ids is None and self.q_positions is None


@dataclasses.dataclass(frozen=True)
class BlockKernel:
  """A backend implementing the R2 contract. `name` is what `implementation=` selects."""
  name: str
  fwd: Callable
  bwd: Callable
  takes_segments: bool  # False: no document masks (cuDNN).
  takes_positions: bool  # False: causality by local index only (trust the token order).


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _fused(q, k, v, segment_ids, positions, causal, scale, kernel):
  out, _ = _fused_fwd(q, k, v, segment_ids, positions, causal, scale, kernel)
  return out


def _mask(segment_ids, positions, causal):
  return BlockMask(segment_ids, segment_ids, positions, positions, causal)


def _fused_fwd(q, k, v, segment_ids, positions, causal, scale, kernel):
  o, lse = kernel.fwd(q, k, v, _mask(segment_ids, positions, causal), scale)
  o = checkpoint_name(o.astype(q.dtype), "context")
  lse = checkpoint_name(lse, "context_lse")
  return o, (q, k, v, segment_ids, positions, o, lse)


def _fused_bwd(causal, scale, kernel, res, do):
  q, k, v, segment_ids, positions, o, lse = res
  dq, dk, dv = kernel.bwd(q, k, v, o, lse, do, _mask(segment_ids, positions, causal), scale)
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_attention(kernel: BlockKernel, q, k, v, *, segment_ids, positions, causal: bool,
                    scale: float):
  """One-device attention through `kernel` with a hand-written VJP; O(S) residuals (o, lse)."""
  return _fused(q, k, v, segment_ids, positions, causal, scale, kernel)
