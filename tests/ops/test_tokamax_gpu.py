"""The tokamax block kernel (ops/tokamax_gpu.py) on CPU.

- The mask translation (BlockMask -> per-query key ranges) against the dense reference mask, on
  every block shape the ring forms from packed rows, and its detection of inputs it cannot express.
- The whole R2 kernel path, one device and the ring, with `dense_attend`/`dense_attend_vjp` in
  place of the GPU kernel: a dense model of tokamax's Mosaic-GPU contract as its kernels compute it
  (residuals m, l in natural log; backward p = exp(z - m) / l masked to the range and
  delta = rowsum(out * dout) from the arrays it is given).
- Where tokamax imports (Python >= 3.12, jax >= 0.11.1: not this project's CPU venv), its own
  `Mask` semantics and its XLA forward through the wrapper.
The GPU kernel itself: tests/ops/test_tokamax_on_gpu.py.
"""

import importlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax import ops
from longjax.ops import reference as ref_lib
from longjax.ops.blockwise import make_blockwise_kernel
from longjax.ops.kernels import BlockMask, fused_attention
from longjax.ops.ring import RingOptions, ring_attention
from longjax.ops.tokamax_gpu import (allowed_from_ranges, key_ranges, make_tokamax_kernel,
                                     tokamax_fwd)
from tests.helpers.attention import (assert_close, document_positions, make_mesh, make_qkv,
                                     packed_segments, reference, two_chunk)


def dense_attend(q, k, v, r, scale):
  """Dense model of tokamax's Mosaic forward: (o, m [B,N,T], l [B,N,T]); empty rows m=-inf, l=0."""
  g = q.shape[2] // k.shape[2]
  kr, vr = (jnp.repeat(x.astype(jnp.float32), g, 2) for x in (k, v))  # test model only
  z = jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), kr) * scale
  z = jnp.where(allowed_from_ranges(r, q.shape[1], k.shape[1])[:, None], z, -jnp.inf)
  m = z.max(-1)
  p = jnp.exp(z - jnp.where(jnp.isfinite(m), m, 0.0)[..., None])
  l = p.sum(-1)
  o = jnp.einsum("bnts,bsnh->btnh", p, vr) / jnp.where(l > 0, l, 1.0).transpose(0, 2, 1)[..., None]
  return o.astype(q.dtype), m, l


def dense_attend_vjp(q, k, v, o, m, l, do, r, scale):
  """Dense model of tokamax's Mosaic VJP, fed residuals (m, l) and the output o from outside."""
  b, t, n, h = q.shape
  s, kh = k.shape[1], k.shape[2]
  g = n // kh
  f32 = lambda x: x.astype(jnp.float32)
  kr, vr = (jnp.repeat(f32(x), g, 2) for x in (k, v))
  z = jnp.einsum("btnh,bsnh->bnts", f32(q), kr) * scale
  allowed = allowed_from_ranges(r, t, s)[:, None]
  p = jnp.where(allowed, jnp.exp(z - m[..., None]) / l[..., None], 0.0)
  delta = jnp.einsum("btnh,btnh->bnt", f32(o), f32(do))
  ds = p * (jnp.einsum("btnh,bsnh->bnts", f32(do), vr) - delta[..., None])
  dq = scale * jnp.einsum("bnts,bsnh->btnh", ds, kr)
  group = lambda x: x.reshape(b, s, kh, g, h).sum(3)
  dk = group(scale * jnp.einsum("bnts,btnh->bsnh", ds, f32(q)))
  dv = group(jnp.einsum("bnts,btnh->bsnh", p, f32(do)))
  return dq, dk, dv


# No fallback: a wrong range would show as a wrong result, not as a silent detour.
MODEL = make_tokamax_kernel(dense_attend, dense_attend_vjp, fallback=None)
MODEL_FALLBACK = make_tokamax_kernel(dense_attend, dense_attend_vjp,
                                     fallback=make_blockwise_kernel(block_q=8, block_k=16))


# ---------------------------------------------------------------------------------------------
# Mask translation.


def _ring_blocks(seg, pos, n):
  """(name, BlockMask) for blocks the zigzag ring forms on device 0 and n-1 from a packed row."""
  z = lambda x: ops.zigzag(x, n)
  zs, zp = z(seg), z(pos)
  c = seg.shape[1] // n
  dev = lambda x, r: x[:, r * c:(r + 1) * c]
  half = lambda x, i: x[:, i * c // 2:(i + 1) * c // 2]
  out = []
  for r in (0, n - 1):
    s_, p_ = dev(zs, r), dev(zp, r)
    out.append((f"diagonal{r}", BlockMask(s_, s_, p_, p_, True)))
  src, dst = (dev(zs, 0), dev(zp, 0)), (dev(zs, n - 1), dev(zp, n - 1))
  for i, j in ((1, 0), (0, 0), (1, 1)):  # Q2 x KV1, Q1 x KV1, Q2 x KV2 (non-causal)
    out.append((f"q{i + 1}kv{j + 1}", BlockMask(half(dst[0], i), half(src[0], j),
                                                half(dst[1], i), half(src[1], j), False)))
  return out


def _cases():
  b, s = 2, 64
  seg = packed_segments(b, s, seed=3)
  idx = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
  doc = document_positions(seg)
  cases = [
      ("causal documents, index", BlockMask(seg, seg, None, None, True)),
      ("causal documents, global positions", BlockMask(seg, seg, idx, idx, True)),
      ("causal documents, per-document positions", BlockMask(seg, seg, doc, doc, True)),
      ("causal, positions only", BlockMask(None, None, idx, idx, True)),
      ("non-causal documents", BlockMask(seg, seg, doc, doc, False)),
      ("non-causal, T != S", BlockMask(seg[:, 32:], seg[:, :16], None, None, False)),
  ]
  for n in (2, 4):
    cases += [(f"zigzag n={n} {name}", m) for name, m in _ring_blocks(seg, doc, n)]
  return cases


def _dense(mask: BlockMask, t, s):
  b = max(x.shape[0] for x in mask if isinstance(x, jax.Array))
  seg_q = jnp.ones((b, t), jnp.int32) if mask.q_segment_ids is None else mask.q_segment_ids
  seg_k = jnp.ones((b, s), jnp.int32) if mask.kv_segment_ids is None else mask.kv_segment_ids
  pos_q = jnp.arange(t)[None] if mask.q_positions is None else mask.q_positions
  pos_k = jnp.arange(s)[None] if mask.kv_positions is None else mask.kv_positions
  return ref_lib.mask(seg_q, seg_k, pos_q, pos_k, mask.causal)


@pytest.mark.parametrize("name,mask", _cases(), ids=[c[0] for c in _cases()])
def test_key_ranges_equal_the_reference_mask(name, mask):
  t = (mask.q_segment_ids if mask.q_segment_ids is not None else mask.q_positions).shape[1]
  s = (mask.kv_segment_ids if mask.kv_segment_ids is not None else mask.kv_positions).shape[1]
  r = key_ranges(mask, t, s)
  assert bool(r.exact), name
  np.testing.assert_array_equal(np.broadcast_to(allowed_from_ranges(r, t, s), (2, t, s)),
                                _dense(mask, t, s))
  if mask.causal:  # causal blocks keep tokamax's index causality (its backward skips tiles)
    assert r.causal and r.k_end is None


def test_key_ranges_flag_what_they_cannot_express():
  seg = jnp.array([[1, 1, 2, 2, 1, 1, 0, 0]], jnp.int32)  # document 1 in two runs
  ok = jnp.array([[1, 1, 1, 2, 2, 2, 3, 3]], jnp.int32)
  pos = jnp.arange(8, dtype=jnp.int32)[None]
  dup = jnp.array([[0, 1, 1, 2, 3, 4, 5, 6]], jnp.int32)  # two tokens at one position
  shuffled = jnp.array([[2, 0, 1, 3, 4, 5, 6, 7]], jnp.int32)
  assert not bool(key_ranges(BlockMask(seg, seg, causal=False), 8, 8).exact)
  assert not bool(key_ranges(BlockMask(seg, seg, pos, pos, True), 8, 8).exact)
  assert not bool(key_ranges(BlockMask(ok, ok, dup, dup, True), 8, 8).exact)
  assert not bool(key_ranges(BlockMask(ok, ok, shuffled, shuffled, True), 8, 8).exact)
  assert not bool(key_ranges(BlockMask(None, None, shuffled, shuffled, True), 8, 8).exact)
  assert bool(key_ranges(BlockMask(ok, ok, pos, pos, True), 8, 8).exact)


def test_query_id_equal_to_the_sentinel_sees_no_keys():
  """The sorted run ids are padded with int32 max: a query whose id is that value (and that no
  key holds) must find no run, not a padding slot."""
  top = np.iinfo(np.int32).max
  q = jnp.array([[1, 1, top, top]], jnp.int32)
  k = jnp.array([[1, 1, 2, 2, 3, 3, 4, 4]], jnp.int32)
  for causal in (False, True):
    mask = BlockMask(q, k, causal=causal)
    r = key_ranges(mask, 4, 8)
    assert bool(r.exact)
    np.testing.assert_array_equal(allowed_from_ranges(r, 4, 8), _dense(mask, 4, 8))


# ---------------------------------------------------------------------------------------------
# The R2 kernel path with the dense model of tokamax's contract.


def test_block_forward_lse_and_empty_rows():
  """R2: lse of the scaled logits; padding rows (segment 0) give lse = -inf and o = 0."""
  q, k, v, _ = make_qkv(b=2, s=32, n=4, kh=2, h=8, seed=1)
  seg = packed_segments(2, 32, seed=2).at[:, -5:].set(0)
  doc = document_positions(seg)
  for causal in (True, False):
    o, lse = jax.jit(lambda q, k, v: tokamax_fwd(
        q, k, v, BlockMask(seg, seg, doc, doc, causal), 0.3, attend=dense_attend,
        fallback=None))(q, k, v)
    o_ref, lse_ref = ref_lib.reference_attention(q, k, v, segment_ids=seg, positions=doc,
                                                 causal=causal, scale=0.3, return_lse=True)
    np.testing.assert_allclose(o, o_ref, atol=2e-5)
    np.testing.assert_allclose(lse, lse_ref, atol=2e-5)
    assert np.isneginf(np.asarray(lse[:, -5:])).all()
    np.testing.assert_array_equal(np.asarray(o[:, -5:]), 0.0)


def _fused(kernel, q, k, v, do, seg, pos, causal=True):
  f = lambda q, k, v: fused_attention(kernel, q, k, v, segment_ids=seg, positions=pos,
                                      causal=causal, scale=q.shape[-1] ** -0.5)
  o, vjp = jax.vjp(jax.jit(f), q, k, v)
  return o, vjp(do)


@pytest.mark.parametrize("kh", [1, 2, 4], ids=["mqa", "gqa", "mha"])
@pytest.mark.parametrize("positions", ["per-document", "none"])
def test_one_device_matches_reference(kh, positions):
  q, k, v, do = make_qkv(b=2, s=48, n=4, kh=kh, h=8, seed=kh)
  seg = packed_segments(2, 48, seed=kh)
  pos = document_positions(seg) if positions == "per-document" else None
  o, grads = _fused(MODEL, q, k, v, do, seg, pos)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)  # per-document = same mask
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_two_chunks_through_global_lse_match_reference():
  """R2 backward: blocks fed the global o/lse sum to the reference gradients (cf. test_pitfall)."""
  q, k, v, do = make_qkv(b=1, s=64, n=4, kh=2, h=8, seed=4)
  seg = packed_segments(1, 64, seed=4)
  pos = document_positions(seg)
  o, lse, grads = jax.jit(lambda *a: two_chunk(MODEL, *a, seg, pos, 8 ** -0.5))(q, k, v, do)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  _, lse_ref = ref_lib.reference_attention(q, k, v, segment_ids=seg, positions=pos, causal=True,
                                           scale=8 ** -0.5, return_lse=True)
  assert_close(o, o_ref, jnp.float32)
  np.testing.assert_allclose(np.where(np.isfinite(lse_ref), lse, 0),
                             np.where(np.isfinite(lse_ref), lse_ref, 0), atol=2e-5)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_inputs_the_ranges_cannot_express_take_the_fallback():
  q, k, v, do = make_qkv(b=1, s=32, n=2, kh=1, h=8, seed=7)
  seg = jnp.asarray(np.repeat([1, 2, 1, 3], 8)[None], jnp.int32)  # document 1 in two runs
  f = lambda q, k, v: fused_attention(MODEL_FALLBACK, q, k, v, segment_ids=seg, positions=None,
                                      causal=True, scale=8 ** -0.5)
  assert "cond[" in str(jax.make_jaxpr(f)(q, k, v))
  o, grads = _fused(MODEL_FALLBACK, q, k, v, do, seg, None)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


@pytest.mark.parametrize("n,layout,causal", [(2, "zigzag", True), (4, "zigzag", True),
                                             (4, "contiguous", True), (2, "contiguous", False)])
def test_ring_matches_reference(n, layout, causal):
  """The ring over n devices with the kernel per block: documents, per-document positions, GQA.
  (Non-causal: key blocks after the queries' own, where document ranges end inside the block.)"""
  s = 64
  q, k, v, do = make_qkv(b=2, s=s, n=4, kh=2, h=8, seed=n)
  seg = packed_segments(2, s, seed=n)
  pos = document_positions(seg)
  perm = (lambda x: ops.zigzag(x, n)) if layout == "zigzag" else (lambda x: x)
  unperm = (lambda x: ops.unzigzag(x, n)) if layout == "zigzag" else (lambda x: x)

  def f(q, k, v):
    return unperm(ring_attention(perm(q), perm(k), perm(v), kernel=MODEL,
                                 options=RingOptions(layout=layout), segment_ids=perm(seg),
                                 positions=perm(pos), causal=causal))

  with jax.set_mesh(make_mesh(sequence=n)):
    o, vjp = jax.vjp(jax.jit(f), q, k, v)
    grads = vjp(do)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg, causal=causal)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


# ---------------------------------------------------------------------------------------------
# Selection and imports.


def test_none_leaves_document_masks_to_blockwise_even_where_tokamax_runs(monkeypatch):
  """tokamax is chosen by name only: its GPU tests cover one shape (D=128, B=1, one GPU), so
  `None` must not send packed rows of other shapes, or a multi-GPU ring, to it."""
  # longjax.ops exports the function `attention` under the module's name: import the module.
  attention_lib = importlib.import_module("longjax.ops.attention")
  q, k, _, _ = make_qkv(b=1, s=16, n=2, kh=1, h=8, dtype=jnp.bfloat16)
  monkeypatch.setattr(attention_lib.tokamax_gpu, "tokamax_supports", lambda q, k: True)
  assert attention_lib._pick(None, q, k, jnp.ones((1, 16), jnp.int32)) == "blockwise"
  assert attention_lib._pick("tokamax", q, k, jnp.ones((1, 16), jnp.int32)) == "tokamax"


def test_implementation_tokamax_needs_its_gpu():
  q, k, v, _ = make_qkv(b=1, s=16, n=2, kh=1, h=8, dtype=jnp.bfloat16)
  with pytest.raises(ValueError, match="tokamax"):
    ops.attention(q, k, v, implementation="tokamax")


def test_longjax_imports_without_tokamax():
  code = ("import sys, longjax.ops, longjax.ops.tokamax_gpu; "
          "assert 'tokamax' not in sys.modules, 'tokamax imported'")
  subprocess.run([sys.executable, "-c", code], check=True, env={"JAX_PLATFORMS": "cpu"})


def test_tokamax_mask_semantics_and_xla_forward():
  """Where tokamax imports: its Mask(k_start, k_end, is_causal) is the dense mask of our ranges,
  and its XLA forward's residuals (m, l) give the reference o and lse through the wrapper."""
  base = pytest.importorskip("tokamax._src.ops.attention.base")
  for name, mask in _cases():
    t = (mask.q_segment_ids if mask.q_segment_ids is not None else mask.q_positions).shape[1]
    s = (mask.kv_segment_ids if mask.kv_segment_ids is not None else mask.kv_positions).shape[1]
    r = key_ranges(mask, t, s)
    heads = lambda x: None if x is None else x[:, None, :]
    tk = base.Mask(k_start=heads(r.k_start), k_end=heads(r.k_end), is_causal=r.causal)
    dense = tk.as_array(t, s)  # [B|1, 1 (heads), T, S] or [1, T, S]
    dense = jnp.ones((1, t, s), bool) if dense is None else dense.reshape(-1, t, s)
    np.testing.assert_array_equal(np.broadcast_to(dense, (2, t, s)), _dense(mask, t, s),
                                  err_msg=name)

  def xla_attend(q, k, v, r, scale):
    tk = base.Mask(k_start=None if r.k_start is None else r.k_start[:, None],
                   k_end=None if r.k_end is None else r.k_end[:, None], is_causal=r.causal)
    o, (m, l) = base.DotProductAttention()(q, k, v, mask=tk, logits_scale=scale,
                                           return_residuals=True)
    return o, m, l

  q, k, v, _ = make_qkv(b=2, s=32, n=4, kh=2, h=8, seed=3)
  seg = packed_segments(2, 32, seed=5).at[:, -3:].set(0)
  doc = document_positions(seg)
  for causal in (True, False):
    o, lse = tokamax_fwd(q, k, v, BlockMask(seg, seg, doc, doc, causal), 0.3, attend=xla_attend,
                         fallback=None)
    o_ref, lse_ref = ref_lib.reference_attention(q, k, v, segment_ids=seg, positions=doc,
                                                 causal=causal, scale=0.3, return_lse=True)
    np.testing.assert_allclose(o, o_ref, atol=1e-5)
    np.testing.assert_allclose(lse, lse_ref, atol=1e-5)


def test_tokamax_op_calls_on_one_block(monkeypatch):
  """Where tokamax imports: the wrapper's calls into tokamax's Op API (forward with residuals,
  `op.bind`, `op.vjp(residuals, out, dout, ...)`) run end to end on CPU with tokamax's XLA op and
  XLA VJP in place of the Mosaic pair. On one block the global lse is the block's own, so its
  block-local VJP is the R2 backward here (and only here: it ignores the residuals it is given).
  No padding: tokamax's XLA op masks with finfo.min, so a row that sees no key attends uniformly
  there (the Mosaic kernel and the wrapper give o = 0, lse = -inf)."""
  base = pytest.importorskip("tokamax._src.ops.attention.base")
  from longjax.ops import tokamax_gpu
  xla = base.DotProductAttention(vjp=base.DotProductAttentionVjp())
  monkeypatch.setattr(tokamax_gpu, "_tokamax", lambda: (base, xla))
  kernel = make_tokamax_kernel(fallback=None)  # the default, tokamax-calling attend functions
  q, k, v, do = make_qkv(b=2, s=32, n=4, kh=2, h=8, seed=8)
  seg = packed_segments(2, 32, seed=8)
  seg = jnp.where(seg == 0, 9, seg)  # the padding tail becomes a document of its own
  for pos in (document_positions(seg), None):
    o, grads = _fused(kernel, q, k, v, do, seg, pos)
    o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
    assert_close(o, o_ref, jnp.float32)
    for g, g_ref in zip(grads, grads_ref):
      assert_close(g, g_ref, jnp.float32)
