"""Ring attention over the `sequence` mesh axis (spec: shared/specs/ring_attention.md).

Each of the N devices of the `sequence` axis holds c = S/N tokens of Q, K, V. K and V (stacked
in one buffer, with their segment ids and positions) travel around the ring with one
`lax.ppermute` per step, issued before that step's compute so the transfer overlaps it. Block
results are merged in f32 through their logsumexp. The backward is hand-written (custom_vjp):
it re-rotates K/V and sends the f32 dK/dV accumulators one step behind, so they arrive at their
owner after N shifts, and every block uses the *global* o and lse (never autodiff through the
combine: see the spec's pitfall and tests/ops/test_pitfall.py).

Layouts (the token order the caller gave the sequence):
  zigzag (default): device i holds chunks i and 2N-1-i of 2N (see zigzag.py). Step s > 0 does
    Q2 x KV1 plus, chosen by `where` on equal-shape halves, Q1 x KV1 (source before us) or
    Q2 x KV2 (source after us): half a block everywhere, all tiles unmasked.
  contiguous: device i holds chunk i; step s > 0 is a full unmasked block on devices whose
    source precedes them and is skipped (lax.cond) on the others (imbalanced: for tests and
    non-causal use).
Masks inside blocks come from segment ids and positions when the kernel takes them (blockwise
and tokamax take both, the Pallas TPU kernel segment ids only); kernels without positions use
the aligned causal triangle on step 0 and trust the layout. cuDNN takes neither, so with
segment ids the ring uses another kernel. The caller passes `RingOptions(layout=..., loop=...)`
with every call: the layout is the order its input pipeline gave the tokens (there is no
default, since a wrong one silently drops the causal mask on some blocks), the loop form is a
static unrolled loop by default, or lax.scan over steps 1..N-2 (spec R5).

Axis letters: B batch, c local length, N query heads, K kv heads, H head dim.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P

from longjax.ops.axes import BATCH_AXES, HEAD_AXIS, SEQUENCE_AXIS
from longjax.ops.kernels import BlockKernel, BlockMask
from longjax.ops.zigzag import zigzag

LAYOUTS = ("zigzag", "contiguous")
LOOPS = ("unroll", "scan")


@dataclasses.dataclass(frozen=True)
class RingOptions:
  """How the ring reads the sequence. `layout` must match what the input pipeline did:
  'zigzag' (`ops.zigzag` applied with n = the `sequence` axis size) or 'contiguous'."""
  layout: str
  loop: str = "unroll"  # 'unroll': static Python loop; 'scan': lax.scan over the middle steps

  def __post_init__(self):
    if self.layout not in LAYOUTS:
      raise ValueError(f"RingOptions.layout must be one of {LAYOUTS}, got {self.layout!r}")
    if self.loop not in LOOPS:
      raise ValueError(f"RingOptions.loop must be one of {LOOPS}, got {self.loop!r}")


def sequence_axis_size(mesh=None) -> int:
  """Size of the `sequence` axis of the current (abstract) mesh, 1 when there is none."""
  mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
  if mesh is None or mesh.empty or SEQUENCE_AXIS not in mesh.axis_names:
    return 1
  return mesh.shape[SEQUENCE_AXIS]


# ---------------------------------------------------------------------------------------------
# Per-device ring (runs inside shard_map).


def _combine(o, lse, o_s, lse_s):
  """f32 online merge of a block result; -inf rows contribute nothing and never make NaN."""
  new = jnp.logaddexp(lse, lse_s)
  safe = jnp.where(jnp.isfinite(new), new, 0.0)
  w_old = jnp.exp(lse - safe)[..., None]
  w_new = jnp.exp(lse_s - safe)[..., None]
  o_s = jnp.where(jnp.isfinite(lse_s)[..., None], o_s.astype(jnp.float32), 0.0)
  return w_old * o + w_new * o_s, new


def _half(x, i):
  """First (i=0) or second (i=1) half of the local sequence (axis 1); None stays None."""
  if x is None:
    return None
  c = x.shape[1] // 2
  return x[:, :c] if i == 0 else x[:, c:]


def _pick(cond, a, b):
  return None if a is None else jnp.where(cond, a, b)


@dataclasses.dataclass(frozen=True)
class _Ring:
  """Static description of one ring: the kernel, mesh axis size, layout, masking."""
  kernel: BlockKernel
  n: int
  layout: str
  causal: bool
  scale: float
  loop: str = "unroll"

  def mask(self, qseg, kseg, qpos, kpos, causal):
    kern = self.kernel
    if not kern.takes_positions:  # index causality on an aligned block (layout-trusted)
      qpos = kpos = None
    if not kern.takes_segments:
      qseg = kseg = None
    return BlockMask(qseg, kseg, qpos, kpos, causal)

  def shift(self, x):
    """One step around the ring: device i sends to i + 1."""
    return lax.ppermute(x, SEQUENCE_AXIS, [(i, (i + 1) % self.n) for i in range(self.n)])

  def steps(self, step, state):
    """Runs step(s, state, send_next) for s = 0..N-1; send_next is False on the last step.

    With loop='scan' the steps 1..N-2 run in a lax.scan (s traced); the first and last are
    peeled, so the scan issues exactly the N-1 (forward) shifts the unrolled loop does.
    """
    if self.loop == "unroll" or self.n <= 2:
      for s in range(self.n):
        state = step(s, state, s < self.n - 1)
      return state
    state = step(0, state, True)
    state, _ = lax.scan(lambda st, s: (step(s, st, True), None), state,
                        jnp.arange(1, self.n - 1))
    return step(self.n - 1, state, False)


def _first(s) -> bool:
  """Step 0 (local KV, causal block) is always a static Python int."""
  return isinstance(s, int) and s == 0


def _pack(rk: _Ring, k, v, seg, pos):
  """K, V (and, for kernels that mask by data, segment ids and positions) as ONE buffer.

  The int32 arrays are bit-cast to K's dtype and appended, so each ring step is a single
  collective-permute (R4) whatever travels with the KV.
  """
  kv = jnp.stack([k, v])
  ints = [x for x, used in ((seg, rk.kernel.takes_segments), (pos, rk.kernel.takes_positions))
          if x is not None and used]
  if not ints:
    return kv
  ints = lax.bitcast_convert_type(jnp.stack(ints, -1), kv.dtype)
  return jnp.concatenate([kv.reshape(-1), ints.reshape(-1)])


def _unpack(rk: _Ring, buf, k_shape, has_seg):
  """Inverse of `_pack`: (k, v, seg | None, pos | None)."""
  has_seg = has_seg and rk.kernel.takes_segments
  has_pos = rk.kernel.takes_positions
  if not (has_seg or has_pos):
    return buf[0], buf[1], None, None
  size = 2 * int(np.prod(k_shape))
  kv = buf[:size].reshape((2,) + tuple(k_shape))
  width = 4 // buf.dtype.itemsize  # int32 words per element of K's dtype
  shape = tuple(k_shape[:2]) + (has_seg + has_pos,) + ((width,) if width > 1 else ())
  ints = lax.bitcast_convert_type(buf[size:].reshape(shape), jnp.int32)
  return kv[0], kv[1], ints[..., 0] if has_seg else None, ints[..., -1] if has_pos else None


def _step_fwd(rk: _Ring, s, rank, q, qseg, qpos, kv, o, lse):
  """Merge step s's block(s) into (o, lse); o/lse are pairs of halves for zigzag."""
  k, v, kseg, kpos = kv
  fwd = lambda q_, k_, v_, m: rk.kernel.fwd(q_, k_, v_, m, rk.scale)
  if _first(s) or not rk.causal:
    o_s, lse_s = fwd(q, k, v, rk.mask(qseg, kseg, qpos, kpos, rk.causal and _first(s)))
    if rk.layout == "zigzag" and rk.causal:
      parts = [_combine(o[i], lse[i], _half(o_s, i), _half(lse_s, i)) for i in (0, 1)]
      return tuple(p[0] for p in parts), tuple(p[1] for p in parts)
    return _combine(o, lse, o_s, lse_s)
  early = s <= rank  # the source device (rank - s) mod N comes before us
  if rk.layout == "contiguous":
    def compute(_):  # f32 like `skip`: kernels return o in the input dtype
      o_s, lse_s = fwd(q, k, v, rk.mask(qseg, kseg, qpos, kpos, False))
      return o_s.astype(jnp.float32), lse_s
    skip = lambda _: (jnp.zeros(q.shape, jnp.float32), jnp.full(q.shape[:3], -jnp.inf))
    o_s, lse_s = lax.cond(early, compute, skip, None)
    return _combine(o, lse, o_s, lse_s)
  h = _half
  o_c, lse_c = fwd(h(q, 1), h(k, 0), h(v, 0),
                   rk.mask(h(qseg, 1), h(kseg, 0), h(qpos, 1), h(kpos, 0), False))
  sel = lambda x: _pick(early, h(x, 0), h(x, 1))
  o_x, lse_x = fwd(sel(q), sel(k), sel(v),
                   rk.mask(sel(qseg), sel(kseg), sel(qpos), sel(kpos), False))
  ninf = jnp.full_like(lse_x, -jnp.inf)
  o1, lse1 = _combine(o[0], lse[0], o_x, jnp.where(early, lse_x, ninf))
  o2, lse2 = _combine(o[1], lse[1], o_c, lse_c)
  o2, lse2 = _combine(o2, lse2, o_x, jnp.where(early, ninf, lse_x))
  return (o1, o2), (lse1, lse2)


def _step_bwd(rk: _Ring, s, rank, q, qseg, qpos, kv, o, lse, do):
  """(dq [B,c,N,H] f32, dkv [2,B,c,K,H] f32) of step s's block(s) against the global o/lse."""
  k, v, kseg, kpos = kv
  f32 = lambda *xs: [x.astype(jnp.float32) for x in xs]
  bwd = lambda q_, k_, v_, o_, l_, do_, m: f32(*rk.kernel.bwd(q_, k_, v_, o_, l_, do_, m,
                                                                rk.scale))
  if _first(s) or not rk.causal:
    dq, dk, dv = bwd(q, k, v, o, lse, do,
                     rk.mask(qseg, kseg, qpos, kpos, rk.causal and _first(s)))
    return dq, jnp.stack([dk, dv])
  early = s <= rank
  if rk.layout == "contiguous":
    def compute(_):
      dq, dk, dv = bwd(q, k, v, o, lse, do, rk.mask(qseg, kseg, qpos, kpos, False))
      return dq, jnp.stack([dk, dv])
    skip = lambda _: (jnp.zeros(q.shape, jnp.float32), jnp.zeros((2,) + k.shape, jnp.float32))
    return lax.cond(early, compute, skip, None)
  h = _half
  dq2_c, dk1_c, dv1_c = bwd(h(q, 1), h(k, 0), h(v, 0), h(o, 1), h(lse, 1), h(do, 1),
                            rk.mask(h(qseg, 1), h(kseg, 0), h(qpos, 1), h(kpos, 0), False))
  sel = lambda x: _pick(early, h(x, 0), h(x, 1))
  dq_x, dk_x, dv_x = bwd(sel(q), sel(k), sel(v), sel(o), sel(lse), sel(do),
                         rk.mask(sel(qseg), sel(kseg), sel(qpos), sel(kpos), False))
  zero = jnp.zeros_like(dq_x)
  dq = jnp.concatenate([jnp.where(early, dq_x, zero), dq2_c + jnp.where(early, zero, dq_x)], 1)
  dkv_x = jnp.stack([dk_x, dv_x])
  zkv = jnp.zeros_like(dkv_x)
  dkv1 = jnp.stack([dk1_c, dv1_c]) + jnp.where(early, dkv_x, zkv)
  dkv2 = jnp.where(early, zkv, dkv_x)
  return dq, jnp.concatenate([dkv1, dkv2], 2)


def _ring_forward(rk: _Ring, q, k, v, seg, pos):
  rank = lax.axis_index(SEQUENCE_AXIS)
  own = (k, v, seg, pos)
  o = jnp.zeros(q.shape, jnp.float32)
  lse = jnp.full(q.shape[:3], -jnp.inf, jnp.float32)
  if rk.layout == "zigzag" and rk.causal:
    o, lse = (_half(o, 0), _half(o, 1)), (_half(lse, 0), _half(lse, 1))

  def step(s, state, send_next):
    cur, o, lse = state
    nxt = rk.shift(cur) if send_next else cur  # issued before this step's compute
    kv = own if _first(s) else _unpack(rk, cur, k.shape, seg is not None)
    o, lse = _step_fwd(rk, s, rank, q, seg, pos, kv, o, lse)
    return nxt, o, lse

  _, o, lse = rk.steps(step, (_pack(rk, k, v, seg, pos), o, lse))
  if isinstance(o, tuple):
    o, lse = jnp.concatenate(o, 1), jnp.concatenate(lse, 1)
  return o.astype(q.dtype), lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring(rk: _Ring, q, k, v, seg, pos):
  return _ring_forward(rk, q, k, v, seg, pos)[0]


def _ring_fwd(rk, q, k, v, seg, pos):
  o, lse = _ring_forward(rk, q, k, v, seg, pos)
  o = checkpoint_name(o, "context")
  lse = checkpoint_name(lse, "context_lse")
  return o, (q, k, v, seg, pos, o, lse)


def _ring_bwd(rk, res, do):
  q, k, v, seg, pos, o, lse = res
  rank = lax.axis_index(SEQUENCE_AXIS)
  own = (k, v, seg, pos)
  zeros_kv = jnp.zeros((2,) + k.shape, jnp.float32)

  def step(s, state, send_next):
    cur, acc, pend, dq = state
    nxt = rk.shift(cur) if send_next else cur
    if not _first(s):  # dK/dV of the previous step's KV travel on with it, overlapping compute
      acc = rk.shift(acc + pend)
    kv = own if _first(s) else _unpack(rk, cur, k.shape, seg is not None)
    dq_s, pend = _step_bwd(rk, s, rank, q, seg, pos, kv, o, lse, do)
    return nxt, acc, pend, dq + dq_s

  state = (_pack(rk, k, v, seg, pos), zeros_kv, zeros_kv, jnp.zeros(q.shape, jnp.float32))
  _, acc, pend, dq = rk.steps(step, state)
  acc = rk.shift(acc + pend)  # N-th shift: dK/dV are back at their owner
  return dq.astype(q.dtype), acc[0].astype(k.dtype), acc[1].astype(v.dtype), None, None


_ring.defvjp(_ring_fwd, _ring_bwd)


# ---------------------------------------------------------------------------------------------
# Global entry: specs, checks, shard_map.


def _axes_spec(mesh, axes):
  present = tuple(a for a in axes if a in mesh.axis_names)
  return present if present else None


def _check(mesh, q, k, layout, n):
  b, s, nh, _ = q.shape
  kh = k.shape[2]
  if s % n:
    raise ValueError(f"ring attention: sequence length ({s}) must be divisible by the "
                     f"'{SEQUENCE_AXIS}' mesh axis size ({n})")
  if layout == "zigzag" and s % (2 * n):
    raise ValueError(f"ring attention with zigzag layout: sequence length ({s}) must be "
                     f"divisible by 2 * '{SEQUENCE_AXIS}' axis size = {2 * n}")
  batch = _axes_spec(mesh, BATCH_AXES) or ()
  nb = 1
  for a in batch:
    nb *= mesh.shape[a]
  if b % nb:
    raise ValueError(f"ring attention: batch ({b}) must be divisible by the product of mesh "
                     f"axes {batch} ({nb})")
  if HEAD_AXIS in mesh.axis_names:
    tp = mesh.shape[HEAD_AXIS]
    if nh % tp or kh % tp:
      raise ValueError(f"ring attention: query heads ({nh}) and kv heads ({kh}) must both be "
                       f"divisible by the '{HEAD_AXIS}' mesh axis size ({tp})")


def ring_attention(q, k, v, *, kernel: BlockKernel, options: RingOptions, segment_ids=None,
                   positions=None, causal: bool = True, scale: float | None = None):
  """Ring attention on global arrays sharded along S over the current mesh's `sequence` axis.

  q [B,S,N,H], k/v [B,S,K,H], segment_ids/positions [B,S] in the order given by
  `options.layout` (positions default to the global token index of that order).
  """
  mesh = jax.sharding.get_abstract_mesh()
  n = sequence_axis_size(mesh)
  if mesh is None or mesh.empty or SEQUENCE_AXIS not in mesh.axis_names:
    axes = () if mesh is None or mesh.empty else mesh.axis_names
    raise ValueError(f"ring attention needs a mesh with a '{SEQUENCE_AXIS}' axis set with "
                     f"jax.set_mesh(mesh); the current mesh has axes {axes}")
  _check(mesh, q, k, options.layout, n)
  if segment_ids is not None and not kernel.takes_segments:
    raise ValueError(f"the '{kernel.name}' kernel cannot apply segment_ids (document masks); "
                     "use implementation='blockwise', 'tokamax' (GPU) or None for packed "
                     "sequences")
  b, s = q.shape[:2]
  scale = q.shape[-1] ** -0.5 if scale is None else scale
  if positions is None:
    positions = jnp.arange(s, dtype=jnp.int32)[None]
    if options.layout == "zigzag":
      positions = zigzag(positions, n)
    positions = jnp.broadcast_to(positions, (b, s))
  rk = _Ring(kernel=kernel, n=n, layout=options.layout, causal=causal, scale=float(scale),
             loop=options.loop)
  batch = _axes_spec(mesh, BATCH_AXES)
  heads = HEAD_AXIS if HEAD_AXIS in mesh.axis_names else None
  qspec = P(batch, SEQUENCE_AXIS, heads, None)
  tspec = P(batch, SEQUENCE_AXIS)
  if segment_ids is None:
    local = lambda q, k, v, pos: _ring(rk, q, k, v, None, pos)
    args, specs = (q, k, v, positions), (qspec, qspec, qspec, tspec)
  else:
    local = functools.partial(_ring, rk)
    args, specs = (q, k, v, segment_ids, positions), (qspec, qspec, qspec, tspec, tspec)
  fn = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=qspec, check_vma=False)
  return fn(*args)
