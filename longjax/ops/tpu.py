"""Pallas TPU flash attention as an R2 block kernel (checked on CPU in interpret mode).

Built on `jax.experimental.pallas.ops.tpu.flash_attention`'s internal pieces, which expose what
the ring needs: the forward returns the softmax statistics (l, m), and the dq and dk/dv backward
kernels take (l, m) as inputs. Feeding them l = 1 and m = the *global* lse makes each block's
probabilities exp(z - lse_glob), i.e. the R2 backward, with di = rowsum(dO * o_glob).

Adaptations to longjax's mask semantics:
- segment id 0 is padding and attends nothing, while the kernel only compares ids: kv ids of 0
  become -1, so a padding query matches no key;
- rows that see no key come out of the kernel with m = the finite mask value: we report
  lse = -inf and o = 0 for them (R3's convention);
- causality is by local index (no positions), so the ring uses its layout, as with cuDNN;
- GQA: the kernel wants equal head counts, so K/V heads are repeated *inside this kernel call
  only* (the ring buffers stay at K heads) and dK/dV are summed back over the group.
Tile lengths are multiples of 128 (the kernel's minimum), so T and S must be too.
"""

import contextlib

import jax
import jax.numpy as jnp

from longjax.ops.kernels import BlockKernel, BlockMask

_TILES = (512, 256, 128)


def _fa():
  from jax.experimental.pallas.ops.tpu import flash_attention as fa  # internal API; see docstring
  return fa


def _interpret():
  """Interpret mode (pure XLA emulation) when not on a TPU, so the kernel runs on CPU tests."""
  if jax.default_backend() == "tpu":
    return contextlib.nullcontext()
  from jax.experimental.pallas import tpu as pltpu
  return pltpu.force_tpu_interpret_mode()


def _tile(n: int) -> int:
  for t in _TILES:
    if n % t == 0:
      return t
  raise ValueError(f"the 'tpu' attention kernel needs sequence lengths that are multiples of 128, "
                   f"got {n}")


def _prepare(q, k, v, mask: BlockMask):
  if mask.q_positions is not None:
    raise ValueError("the 'tpu' kernel masks by index, not positions")
  g = q.shape[2] // k.shape[2]
  heads_first = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # [B, L, N, H] -> [B, N, L, H]
  qt = heads_first(q)
  kt = heads_first(jnp.repeat(k, g, axis=2))
  vt = heads_first(jnp.repeat(v, g, axis=2))
  seg = None
  if mask.q_segment_ids is not None:
    kv_seg = jnp.where(mask.kv_segment_ids == 0, -1, mask.kv_segment_ids)
    seg = _fa().SegmentIds(q=mask.q_segment_ids.astype(jnp.int32), kv=kv_seg.astype(jnp.int32))
  return qt, kt, vt, seg, g


def tpu_fwd(q, k, v, mask: BlockMask, scale: float):
  """(o [B,T,N,H] in q.dtype, lse [B,T,N] f32)."""
  fa = _fa()
  qt, kt, vt, seg, _ = _prepare(q, k, v, mask)
  bq, bk = _tile(q.shape[1]), _tile(k.shape[1])
  with _interpret():
    o, l, m = fa._flash_attention_impl(qt, kt, vt, None, seg, True, mask.causal, scale, 1, bq,
                                       bk, bk, False)
  seen = m > fa.DEFAULT_MASK_VALUE / 2  # rows whose logits were all masked keep the mask value
  lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
  o = jnp.where(seen[..., None], o, 0).astype(q.dtype)
  return jnp.transpose(o, (0, 2, 1, 3)), jnp.transpose(lse, (0, 2, 1)).astype(jnp.float32)


def tpu_bwd(q, k, v, o, lse, do, mask: BlockMask, scale: float):
  """(dq, dk, dv) in f32 given the global o and lse [B,T,N]."""
  fa = _fa()
  qt, kt, vt, seg, g = _prepare(q, k, v, mask)
  bq, bk = _tile(q.shape[1]), _tile(k.shape[1])
  heads_first = lambda x: jnp.transpose(x, (0, 2, 1, 3))
  dot = heads_first(do.astype(q.dtype))
  di = jnp.einsum("btnh,btnh->bnt", do.astype(jnp.float32), o.astype(jnp.float32))
  m = jnp.transpose(jnp.where(jnp.isfinite(lse), lse, 0.0), (0, 2, 1))  # p = exp(z - lse) / 1
  l = jnp.ones_like(m)
  with _interpret():
    dk, dv = fa._flash_attention_bwd_dkv(
        qt, kt, vt, None, seg, l, m, dot, di, block_q_major=bq, block_q=bq, block_k_major=bk,
        block_k=bk, sm_scale=scale, causal=mask.causal)
    dq, _ = fa._flash_attention_bwd_dq(
        qt, kt, vt, None, seg, l, m, dot, di, block_q_major=bq, block_k_major=bk, block_k=bk,
        sm_scale=scale, causal=mask.causal, mask_value=fa.DEFAULT_MASK_VALUE, debug=False)
  b, s, kh, h = k.shape
  group_sum = lambda x: jnp.transpose(x, (0, 2, 1, 3)).reshape(b, s, kh, g, h).sum(3)
  return (jnp.transpose(dq, (0, 2, 1, 3)).astype(jnp.float32),
          group_sum(dk.astype(jnp.float32)), group_sum(dv.astype(jnp.float32)))


def tpu_supports(q, k) -> bool:
  """Whether the TPU kernel takes these shapes on this backend (tile lengths of 128)."""
  return jax.default_backend() == "tpu" and q.shape[1] % 128 == 0 and k.shape[1] % 128 == 0


PALLAS_TPU = BlockKernel(name="tpu", fwd=tpu_fwd, bwd=tpu_bwd, takes_segments=True,
                         takes_positions=False)
