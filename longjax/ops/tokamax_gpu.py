"""tokamax's Mosaic-GPU flash attention as an R2 block kernel that applies document masks.

Packed documents under a causal mask are "each query sees the keys of its own document up to
itself": one contiguous key range per query, which tokamax's `Mask(k_start=..., k_end=...,
is_causal=...)` takes without an S x S mask and whose forward skips the key tiles outside it
(measured at 1.07-1.12x the speed of unmasked cuDNN with 8-64 documents per row:
experiments/bench/tokamax_probe.py). This module turns a `BlockMask` into those ranges and wraps
tokamax 0.0.17's internal API in the R2 contract (kernels.py):

- forward: `PallasMosaicGpuFlashAttention()(..., return_residuals=True)` returns o and the
  softmax statistics (m, l), [B, N, T] f32, m the row max of the *scaled* logits in natural
  units (`pallas_mosaic_gpu_kernel_sm90.py` stores m_i / log2(e)); lse = m + log(l).
- backward: the op's VJP, `PallasMosaicGpuFlashAttentionVjp`, is called directly as
  `op.vjp(residuals, out, dout, q, k, v, **kwargs)` (what tokamax's own custom_vjp does). Its
  kernels compute p = exp(z - m) / l and delta = rowsum(out * dout) from the arrays passed in,
  so feeding m = the *global* lse, l = 1 and out = the global o gives the R2 backward. (tokamax's
  XLA VJP, `base.DotProductAttentionVjp`, ignores the residuals passed in and recomputes the
  block's own softmax: it cannot serve the ring.)

Mask translation (`key_ranges`, pure JAX, tested on CPU against reference.mask): the visible keys
of query t are [k_start, k_end) whenever every non-zero segment id forms one contiguous run of
the key block and positions do not decrease within a run, which holds for packed rows and for
every block the ring forms from them (zigzag halves are contiguous slices of the row). Causal
blocks (the ring's diagonal step and the one-device call) are passed as k_start plus tokamax's
index causality (k_end left out): then tokamax's backward also skips the tiles above the
diagonal, which it does not do for a k_end range. Rows that see nothing get an empty range and
come back as lse = -inf, o = 0. Inputs the ranges cannot express exactly (a segment id in two
runs, positions out of order within a document) are detected on the device and computed by the
`fallback` kernel (blockwise) instead, through `lax.cond`, so the kernel is exact for any input.

GQA: tokamax takes K/V at their own head count (query head n reads kv head n // G), as longjax.
Inputs: bf16/fp16 on Hopper (sm90) or Blackwell (sm100); its backward has no sm80 kernel.
Importing this module does not import tokamax; only calling the GPU kernel does.

Axis letters: B batch, T query length, S key length, N query heads, K kv heads, H head dim.
"""

import functools
import importlib
import importlib.metadata
import importlib.util
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from longjax.ops.blockwise import BLOCKWISE
from longjax.ops.kernels import BlockKernel, BlockMask

_NO_ID = jnp.iinfo(jnp.int32).max  # sorts after every segment id


class KeyRanges(NamedTuple):
  """Per-query visible keys: k_start <= s < k_end, and s <= t where `causal` (index causality).

  k_start / k_end are [B, T] int32 or None (no bound); rows that see no key have k_start = S
  (and k_end = 0), so they leave the per-tile min/max bounds of their neighbours untouched.
  `exact` ([] bool, or True when static) says whether the ranges equal the BlockMask.
  """
  k_start: jax.Array | None
  k_end: jax.Array | None
  causal: bool
  exact: jax.Array | bool


def _row_ranges(qseg, kseg, qpos, kpos, causal: bool):
  """KeyRanges fields for one row: qseg/qpos [T], kseg/kpos [S] int32 (qpos/kpos None: index)."""
  t, s = qseg.shape[0], kseg.shape[0]
  idx = jnp.arange(s, dtype=jnp.int32)
  first = jnp.concatenate([jnp.ones((1,), bool), kseg[1:] != kseg[:-1]])  # a run starts here
  last = jnp.concatenate([kseg[1:] != kseg[:-1], jnp.ones((1,), bool)])
  run_end = lax.cummin(jnp.where(last, idx + 1, s), reverse=True)  # end of the run holding s
  # One key per run (at its start), sorted by segment id: the query's run by binary search.
  key = jnp.where(first & (kseg != 0), kseg, _NO_ID)
  order = jnp.argsort(key, stable=True).astype(jnp.int32)
  ids = key[order]
  unique = ~jnp.any((ids[1:] == ids[:-1]) & (ids[1:] != _NO_ID))  # no id in two runs
  unique &= ~jnp.any(kseg == _NO_ID)  # (an id equal to the sentinel: not expressible)
  i = jnp.clip(jnp.searchsorted(ids, qseg), 0, s - 1)
  found = (ids[i] == qseg) & (qseg != 0) & (qseg != _NO_ID)  # (ids pads with the sentinel)
  a = order[i]  # start of the query's run
  b = run_end[a]
  if not causal:
    return jnp.where(found, a, s), jnp.where(found, b, 0), unique
  tq = jnp.arange(t, dtype=jnp.int32)
  if qpos is None:
    end, ordered = jnp.minimum(b, tq + 1), True
  else:  # keys of the run with kpos <= qpos: a prefix of the run if kpos does not decrease in it
    ordered = jnp.all(first | (kpos >= jnp.concatenate([kpos[:1], kpos[:-1]])))
    end = _first_greater(kpos, a, b, qpos)
  visible = found & (end > a)
  # Passed as k_start + index causality, i.e. [a, t + 1): right where the range ends at t + 1.
  diagonal = jnp.all(~visible | (end == tq + 1))
  return jnp.where(visible, a, s), None, unique & ordered & diagonal


def _first_greater(x, lo, hi, value):
  """Per query: the first index in [lo, hi) with x > value (hi if none); x sorted there."""
  steps = max(1, math.ceil(math.log2(x.shape[0] + 1)))

  def body(_, bounds):
    lo, hi = bounds
    mid = (lo + hi) // 2
    right = (lo < hi) & (x[jnp.clip(mid, 0, x.shape[0] - 1)] <= value)
    return jnp.where(right, mid + 1, lo), jnp.where((lo < hi) & ~right, mid, hi)

  lo, _ = lax.fori_loop(0, steps, body, (lo, hi))
  return lo


def key_ranges(mask: BlockMask, t: int, s: int) -> KeyRanges:
  """The BlockMask of a [T, S] block as per-query key ranges (see the module docstring)."""
  if mask.q_segment_ids is None and (mask.q_positions is None or not mask.causal):
    return KeyRanges(None, None, mask.causal, True)  # unmasked, or the aligned triangle
  arrays = [mask.q_segment_ids, mask.kv_segment_ids, mask.q_positions, mask.kv_positions]
  b = max(x.shape[0] for x in arrays if x is not None)
  row = lambda x, n: None if x is None else jnp.broadcast_to(x.astype(jnp.int32), (b, n))
  qseg, kseg = row(mask.q_segment_ids, t), row(mask.kv_segment_ids, s)
  one_document = qseg is None  # positions only
  if one_document:
    qseg, kseg = jnp.ones((b, t), jnp.int32), jnp.ones((b, s), jnp.int32)
  qpos = kpos = None
  if mask.causal and mask.q_positions is not None:
    qpos, kpos = row(mask.q_positions, t), row(mask.kv_positions, s)
  fn = functools.partial(_row_ranges, causal=mask.causal)
  if qpos is None:
    k_start, k_end, exact = jax.vmap(lambda a, c: fn(a, c, None, None))(qseg, kseg)
  else:
    k_start, k_end, exact = jax.vmap(fn)(qseg, kseg, qpos, kpos)
  if one_document:  # plain index causality when every row sees [0, t]: no range array at all
    return KeyRanges(None, None, True, jnp.all(exact) & jnp.all(k_start == 0))
  return KeyRanges(k_start, k_end, mask.causal, jnp.all(exact))


def allowed_from_ranges(r: KeyRanges, t: int, s: int):
  """[B|1, T, S] bool: the dense mask the ranges stand for (tests; tokamax's Mask semantics)."""
  q = jnp.arange(t)[None, :, None]
  k = jnp.arange(s)[None, None, :]
  allowed = jnp.ones((1, t, s), bool)
  if r.k_start is not None:
    allowed = allowed & (k >= r.k_start[:, :, None])
  if r.k_end is not None:
    allowed = allowed & (k < r.k_end[:, :, None])
  if r.causal:
    allowed = allowed & (q >= k)
  return allowed


# ---------------------------------------------------------------------------------------------
# tokamax calls (lazy import). `attend` and `attend_vjp` are the only functions that touch it;
# tests on CPU pass a dense model of the same contract instead.


@functools.cache
def _tokamax():
  from tokamax._src.ops.attention import base, pallas_mosaic_gpu  # internal API; see docstring
  return base, pallas_mosaic_gpu.PallasMosaicGpuFlashAttention()


def _tokamax_mask(base, r: KeyRanges):
  heads = lambda x: None if x is None else x[:, None, :]  # [B, 1 (all heads), T]
  return base.Mask(k_start=heads(r.k_start), k_end=heads(r.k_end), is_causal=r.causal)


def mosaic_attend(q, k, v, r: KeyRanges, scale: float):
  """tokamax forward: (o [B,T,N,H] in q.dtype, m [B,N,T], l [B,N,T] f32)."""
  base, op = _tokamax()
  o, (m, l) = op(q, k, v, mask=_tokamax_mask(base, r), logits_scale=scale,
                 return_residuals=True)
  return o, m, l


def mosaic_attend_vjp(q, k, v, o, m, l, do, r: KeyRanges, scale: float):
  """tokamax backward with the given residuals (m, l) and output o: (dq, dk, dv)."""
  base, op = _tokamax()
  bound = op.bind(q, k, v, mask=_tokamax_mask(base, r), logits_scale=scale)
  kwargs = dict(bound.kwargs)
  kwargs.pop("return_residuals")  # the VJP op's own flag; tokamax's custom_vjp drops it too
  grads = op.vjp((m, l), o, do, *bound.args, **kwargs)
  return grads["q"], grads["k"], grads["v"]


# ---------------------------------------------------------------------------------------------
# The R2 kernel.


def _exact_or(fallback, r: KeyRanges, fast, slow):
  if fallback is None or r.exact is True:
    return fast()
  return lax.cond(r.exact, fast, slow)


def tokamax_fwd(q, k, v, mask: BlockMask, scale: float, *, attend: Callable = mosaic_attend,
                fallback: BlockKernel | None = BLOCKWISE):
  """(o [B,T,N,H] in q.dtype, lse [B,T,N] f32); R2 forward."""
  r = key_ranges(mask, q.shape[1], k.shape[1])

  def fast():
    o, m, l = attend(q, k, v, r, scale)
    m, l = m.astype(jnp.float32), l.astype(jnp.float32)
    seen = (l > 0) & (m > jnp.finfo(jnp.float32).min / 2)  # XLA models mask with finfo.min
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)
    lse = jnp.transpose(lse, (0, 2, 1))
    return jnp.where(jnp.isfinite(lse)[..., None], o, 0).astype(q.dtype), lse

  def slow():
    o, lse = fallback.fwd(q, k, v, mask, scale)
    return o.astype(q.dtype), lse.astype(jnp.float32)

  return _exact_or(fallback, r, fast, slow)


def tokamax_bwd(q, k, v, o, lse, do, mask: BlockMask, scale: float, *,
                attend_vjp: Callable = mosaic_attend_vjp,
                fallback: BlockKernel | None = BLOCKWISE):
  """(dq, dk, dv) in f32 given the global o and lse [B,T,N]; R2 backward."""
  r = key_ranges(mask, q.shape[1], k.shape[1])
  f32 = lambda *xs: tuple(x.astype(jnp.float32) for x in xs)

  def fast():
    # p = exp(z - m) / l = exp(z - lse_glob); rows with lse = -inf see no key here either.
    m = jnp.transpose(jnp.where(jnp.isfinite(lse), lse, 0.0), (0, 2, 1)).astype(jnp.float32)
    return f32(*attend_vjp(q, k, v, o.astype(q.dtype), m, jnp.ones_like(m), do.astype(q.dtype),
                           r, scale))

  return _exact_or(fallback, r, fast, lambda: f32(*fallback.bwd(q, k, v, o, lse, do, mask, scale)))


def make_tokamax_kernel(attend: Callable = mosaic_attend,
                        attend_vjp: Callable = mosaic_attend_vjp,
                        fallback: BlockKernel | None = BLOCKWISE) -> BlockKernel:
  """The tokamax backend. `fallback=None` trusts the layout (no device check, no lax.cond):
  inputs the ranges cannot express are then computed wrongly, so only for benchmarks."""
  return BlockKernel(
      name="tokamax",
      fwd=functools.partial(tokamax_fwd, attend=attend, fallback=fallback),
      bwd=functools.partial(tokamax_bwd, attend_vjp=attend_vjp, fallback=fallback),
      takes_segments=True, takes_positions=True)


TESTED_VERSIONS = ("0.0.17",)  # the internal attention API `attend` calls was read from these


@functools.cache
def tokamax_importable() -> bool:
  """Whether tokamax imports here (Python >= 3.12, jax >= 0.11.1) at a version whose internal
  attention API this wrapper was written and GPU-tested against."""
  if importlib.util.find_spec("tokamax") is None:
    return False
  try:
    for module in ("base", "pallas_mosaic_gpu"):  # what `attend` imports
      importlib.import_module(f"tokamax._src.ops.attention.{module}")
    return importlib.metadata.version("tokamax") in TESTED_VERSIONS
  except Exception:  # pylint: disable=broad-except  (any failure to import means: not usable)
    return False


def tokamax_supports(q, k) -> bool:
  """Whether the tokamax kernel takes these inputs here: tokamax importable at a tested version,
  an sm90/sm100 GPU (its backward has kernels for those only), bf16/fp16."""
  if jax.default_backend() != "gpu" or not tokamax_importable():
    return False
  cc = float(getattr(jax.devices()[0], "compute_capability", 0) or 0)
  return (9.0 <= cc < 11.0 and q.dtype in (jnp.bfloat16, jnp.float16) and k.dtype == q.dtype
          and q.shape[-1] <= 256)


TOKAMAX = make_tokamax_kernel()
