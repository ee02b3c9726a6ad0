"""Flash-style attention in pure JAX: tiles of queries x tiles of keys, f32 online softmax.

Runs on every backend, holds O(S) memory (one [bq, bk] logit tile per head at a time, plus o
and lse), and skips tiles whose mask is empty with a data-dependent `lax.cond`, so causal and
document masks cost about the visible fraction of the work for any token order. It implements
the R2 block-kernel contract (kernels.py) and is the kernel the ring uses for document masks.

Axis letters: B batch, T query length, S key length, N query heads, K kv heads, G = N/K,
H head dim; q/k tile lengths bq/bk and tile counts nq/nk.
"""

import functools

import jax.numpy as jnp
from jax import lax

from longjax.ops.kernels import BlockKernel, BlockMask

DEFAULT_BLOCK = 512


def _block(n: int, want: int) -> int:
  """Largest tile length <= want that divides n."""
  for b in range(min(n, want), 0, -1):
    if n % b == 0:
      return b
  return 1


def _tiles(x, tile: int):
  """[B, L, ...] -> [L/tile, B, tile, ...]; None stays None."""
  if x is None:
    return None
  x = x.reshape(x.shape[0], x.shape[1] // tile, tile, *x.shape[2:])
  return jnp.moveaxis(x, 1, 0)


def _mask_tiles(mask: BlockMask, t: int, s: int, bq: int, bk: int):
  """Per-tile (segment ids, positions) for queries and keys; positions default to the index."""
  qpos = mask.q_positions
  kpos = mask.kv_positions
  if qpos is None:
    qpos = jnp.arange(t, dtype=jnp.int32)[None]
    kpos = jnp.arange(s, dtype=jnp.int32)[None]
  qm = (_tiles(mask.q_segment_ids, bq), _tiles(qpos, bq))
  km = (_tiles(mask.kv_segment_ids, bk), _tiles(kpos, bk))
  return qm, km


def _allowed(qm, km, causal: bool):
  """[B|1, bq, bk] bool for one tile pair, or None when nothing is masked."""
  (qseg, qpos), (kseg, kpos) = qm, km
  allowed = None
  if qseg is not None:
    allowed = (qseg[:, :, None] == kseg[:, None, :]) & (qseg[:, :, None] != 0)
  if causal:
    c = qpos[:, :, None] >= kpos[:, None, :]
    allowed = c if allowed is None else allowed & c
  return allowed


def _if_visible(allowed, update, carry):
  """Run `update` only when some pair of the tile is visible (skips masked tiles)."""
  if allowed is None:
    return update(carry)
  return lax.cond(allowed.any(), update, lambda c: c, carry)


def blockwise_fwd(q, k, v, mask: BlockMask, scale: float, *, block_q: int = DEFAULT_BLOCK,
                  block_k: int = DEFAULT_BLOCK):
  """(o [B,T,N,H] f32 normalised, lse [B,T,N] f32) for one block; R2 forward."""
  b, t, n, h = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = n // kh
  bq, bk = _block(t, block_q), _block(s, block_k)
  qm_t, km_t = _mask_tiles(mask, t, s, bq, bk)
  q_t = _tiles(q.reshape(b, t, kh, g, h), bq)  # [nq, B, bq, K, G, H]
  k_t, v_t = _tiles(k, bk), _tiles(v, bk)  # [nk, B, bk, K, H]

  def q_tile(xs):
    qi, qm = xs

    def kv_step(carry, ys):
      kj, vj, km = ys
      # The masks depend only on positions, the same in every layer: without this barrier a
      # differentiated layer scan hoists them out for all tile pairs at once, O(S^2) memory.
      qm_, km, kj = lax.optimization_barrier((qm, km, kj))
      allowed = _allowed(qm_, km, mask.causal)

      def update(carry):
        m, l, acc = carry
        z = jnp.einsum("bqkgh,bskh->bkgqs", qi, kj, preferred_element_type=jnp.float32) * scale
        if allowed is not None:
          z = jnp.where(allowed[:, None, None], z, -jnp.inf)
        m_new = jnp.maximum(m, z.max(-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # all-masked rows: no NaN
        p = jnp.exp(z - m_safe[..., None])
        corr = jnp.exp(m - m_safe)
        pv = jnp.einsum("bkgqs,bskh->bkgqh", p.astype(vj.dtype), vj,
                        preferred_element_type=jnp.float32)
        return m_new, l * corr + p.sum(-1), acc * corr[..., None] + pv

      return _if_visible(allowed, update, carry), None

    init = (jnp.full((b, kh, g, bq), -jnp.inf, jnp.float32), jnp.zeros((b, kh, g, bq), jnp.float32),
            jnp.zeros((b, kh, g, bq, h), jnp.float32))
    (m, l, acc), _ = lax.scan(kv_step, init, (k_t, v_t, km_t))
    seen = l > 0
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
    return acc / jnp.where(seen, l, 1.0)[..., None], lse

  o, lse = lax.map(q_tile, (q_t, qm_t))  # [nq, B, K, G, bq, H], [nq, B, K, G, bq]
  o = o.transpose(1, 0, 4, 2, 3, 5).reshape(b, t, n, h)
  lse = lse.transpose(1, 0, 4, 2, 3).reshape(b, t, n)
  return o, lse


def blockwise_bwd(q, k, v, o, lse, do, mask: BlockMask, scale: float, *,
                  block_q: int = DEFAULT_BLOCK, block_k: int = DEFAULT_BLOCK):
  """(dq, dk, dv) in f32 given the global o and lse; R2 backward (FlashAttention-2 order).

  Outer scan over key tiles carries dq for all query tiles; the inner scan over query tiles
  accumulates this key tile's dk/dv and updates each dq tile (passed through as scan xs/ys).
  """
  b, t, n, h = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = n // kh
  bq, bk = _block(t, block_q), _block(s, block_k)
  qm_t, km_t = _mask_tiles(mask, t, s, bq, bk)
  dsum = jnp.einsum("btnh,btnh->btn", do.astype(jnp.float32), o.astype(jnp.float32))
  lse = jnp.where(jnp.isfinite(lse), lse, 0.0)  # rows that see nothing: every p is masked to 0
  q_t = _tiles(q.reshape(b, t, kh, g, h), bq)  # [nq, B, bq, K, G, H]
  do_t = _tiles(do.reshape(b, t, kh, g, h), bq)
  lse_t = _tiles(lse.reshape(b, t, kh, g), bq)  # [nq, B, bq, K, G]
  dsum_t = _tiles(dsum.reshape(b, t, kh, g), bq)
  k_t, v_t = _tiles(k, bk), _tiles(v, bk)

  def kv_tile(dq_t, ys):
    kj, vj, km = ys

    def q_step(carry, xs):
      qi, doi, lsei, dsi, qm, dqi = xs
      qm, km_, qi = lax.optimization_barrier((qm, km, qi))  # as in the forward: keep masks per tile
      allowed = _allowed(qm, km_, mask.causal)

      def update(args):
        dk, dv, dqi = args
        z = jnp.einsum("bqkgh,bskh->bkgqs", qi, kj, preferred_element_type=jnp.float32) * scale
        p = jnp.exp(z - lsei.transpose(0, 2, 3, 1)[..., None])
        if allowed is not None:
          p = jnp.where(allowed[:, None, None], p, 0.0)
        dp = jnp.einsum("bqkgh,bskh->bkgqs", doi, vj, preferred_element_type=jnp.float32)
        ds = p * (dp - dsi.transpose(0, 2, 3, 1)[..., None])
        dv = dv + jnp.einsum("bkgqs,bqkgh->bskh", p.astype(doi.dtype), doi,
                             preferred_element_type=jnp.float32)
        dk = dk + scale * jnp.einsum("bkgqs,bqkgh->bskh", ds.astype(qi.dtype), qi,
                                     preferred_element_type=jnp.float32)
        dqi = dqi + scale * jnp.einsum("bkgqs,bskh->bqkgh", ds.astype(kj.dtype), kj,
                                       preferred_element_type=jnp.float32)
        return dk, dv, dqi

      dk, dv = carry
      dk, dv, dqi = _if_visible(allowed, update, (dk, dv, dqi))
      return (dk, dv), dqi

    zeros = jnp.zeros((b, bk, kh, h), jnp.float32)
    (dk, dv), dq_t = lax.scan(q_step, (zeros, zeros), (q_t, do_t, lse_t, dsum_t, qm_t, dq_t))
    return dq_t, (dk, dv)

  dq0 = jnp.zeros((t // bq, b, bq, kh, g, h), jnp.float32)
  dq_t, (dk_t, dv_t) = lax.scan(kv_tile, dq0, (k_t, v_t, km_t))
  dq = jnp.moveaxis(dq_t, 0, 1).reshape(b, t, n, h)
  dk = jnp.moveaxis(dk_t, 0, 1).reshape(b, s, kh, h)
  dv = jnp.moveaxis(dv_t, 0, 1).reshape(b, s, kh, h)
  return dq, dk, dv


def make_blockwise_kernel(block_q: int = DEFAULT_BLOCK, block_k: int = DEFAULT_BLOCK
                          ) -> BlockKernel:
  """The blockwise backend with the given tile lengths (tests use small tiles)."""
  return BlockKernel(
      name="blockwise",
      fwd=functools.partial(blockwise_fwd, block_q=block_q, block_k=block_k),
      bwd=functools.partial(blockwise_bwd, block_q=block_q, block_k=block_k),
      takes_segments=True, takes_positions=True)


BLOCKWISE = make_blockwise_kernel()
