"""tokamax's Mosaic-GPU kernel as the R2 block kernel (ops/tokamax_gpu.py) on a Hopper GPU.

Tolerance: each relative error of o, dq, dk, dv against the dense f32 reference must be within
2x cuDNN's own error on the same inputs without documents (cuDNN cannot apply them), as
test_ring_gpu.py holds the ring to, at two shapes: B=1, head dim 128, S=8192 and B=2, head dim
64 (the Llama-3.2-1B / SmolLM2 head size), S=4096, each row its own documents. Checked: the
kernel alone (one device, through ops.attention, 8 and 64 documents per row plus a padding
tail), the ring's arithmetic on two chunks of one device (lse, and each block's backward from the global o/lse), the ring on a
one-device `sequence` axis, and the ring over 2-8 GPUs where a machine with several is lent.
Every case also asserts that the key ranges are exact on the device, i.e. that the tokamax path
ran and not the blockwise fallback.

Run through the device tool (Python 3.12, jax 0.11.2 there), with tokamax 0.0.17 and its
pure-Python dependencies carried as wheels (see docs/attention.md for the list) and a stub
`xprof` (tokamax imports it for its own benchmarking helpers only):
  JAX_PLATFORMS=cuda NCCL_NVLS_ENABLE=0 python3 -m pytest -m gpu tests/ops/test_tokamax_on_gpu.py
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax import ops
from longjax.ops.kernels import BlockMask
from longjax.ops.reference import reference_attention
from longjax.ops.ring import RingOptions, ring_attention
from longjax.ops.tokamax_gpu import TOKAMAX, key_ranges, tokamax_supports
from tests.helpers.attention import (document_positions, grad_errors, make_mesh, make_qkv,
                                     reference, relative_error, run_with_grads, two_chunk)


def _usable() -> bool:
  if jax.default_backend() != "gpu" or importlib.util.find_spec("tokamax") is None:
    return False
  return tokamax_supports(jnp.zeros((1, 1, 1, 128), jnp.bfloat16),
                          jnp.zeros((1, 1, 1, 128), jnp.bfloat16))


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _usable(), reason="needs tokamax and a Hopper/Blackwell GPU"),
]
SHARDS = [n for n in (2, 4, 8) if n <= jax.device_count()]


def _documents(s, n_docs, b=1, pad=64, seed=0):
  """[B, S] segment ids: per row, n_docs documents at random cuts, then `pad` tokens of
  padding (0)."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(b):
    cuts = np.sort(rng.choice(np.arange(1, s - pad), n_docs - 1, replace=False))
    seg = np.searchsorted(cuts, np.arange(s), side="right") + 1
    seg[s - pad:] = 0
    rows.append(seg)
  return jnp.asarray(np.stack(rows), jnp.int32)


def _assert_as_accurate(errors, cudnn, label):
  print(f"\n{label}: {errors}; cuDNN without documents: {cudnn}")
  for name, err in errors.items():
    assert err <= 2 * cudnn[name], (label, name, errors, cudnn)


def _assert_fast_path(seg, pos, causal=True):
  """The ranges of the whole-row block are exact on the device: tokamax ran, not the fallback."""
  n = seg.shape[1]
  exact = jax.jit(lambda s, p: jnp.asarray(key_ranges(BlockMask(s, s, p, p, causal), n,
                                                     n).exact))(seg, pos)
  assert bool(exact)


# (B, head dim, S): S as large as the dense f32 reference's [B, N, S, S] buffers fit one GPU
# (B=2 at S=8192 ran out of memory on an H200), as test_ring_gpu.py.
@pytest.fixture(scope="module", params=[(1, 128, 8192), (2, 64, 4096)],
                ids=["b1_d128", "b2_d64"])
def inputs(request):
  """bf16 q, k, v, do (B rows of S tokens, 32 query / 8 kv heads, head dim D) and cuDNN's
  errors without documents on them."""
  b, h, s = request.param
  q, k, v, do = make_qkv(b=b, s=s, n=32, kh=8, h=h, dtype=jnp.bfloat16, seed=7)
  cudnn = {}
  for causal in (True, False):
    o_ref, grads_ref = reference(q, k, v, do, causal=causal)
    fn = lambda q, k, v, c=causal: ops.attention(q, k, v, causal=c, implementation="gpu")
    cudnn[causal] = grad_errors(*run_with_grads(fn, q, k, v, do), o_ref, grads_ref)
  return (q, k, v, do), cudnn


@pytest.mark.parametrize("n_docs", [8, 64])
def test_kernel_with_documents(inputs, n_docs):
  (q, k, v, do), cudnn = inputs
  seg = _documents(q.shape[1], n_docs, b=q.shape[0], seed=n_docs)
  pos = document_positions(seg)
  _assert_fast_path(seg, pos)
  fn = lambda q, k, v: ops.attention(q, k, v, segment_ids=seg, positions=pos,
                                     implementation="tokamax")
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  o, grads = run_with_grads(fn, q, k, v, do)
  assert np.isfinite(np.asarray(o, np.float32)).all()
  np.testing.assert_array_equal(np.asarray(o[:, -64:], np.float32), 0.0)  # padding rows
  _assert_as_accurate(grad_errors(o, grads, o_ref, grads_ref), cudnn[True],
                      f"tokamax, {n_docs} documents")


def test_lse_and_backward_from_global_lse(inputs):
  """Two chunks merged through lse, each block's backward fed the global o/lse (R2)."""
  (q, k, v, do), cudnn = inputs
  seg = _documents(q.shape[1], 8, b=q.shape[0], seed=1)
  pos = document_positions(seg)
  scale = q.shape[-1] ** -0.5
  o, lse, grads = jax.jit(lambda *a: two_chunk(TOKAMAX, *a, seg, pos, scale))(q, k, v, do)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  f32 = lambda x: x.astype(jnp.float32)
  _, lse_ref = reference_attention(f32(q), f32(k), f32(v), segment_ids=seg, positions=pos,
                                   causal=True, scale=scale, return_lse=True)
  seen = np.isfinite(np.asarray(lse_ref))
  assert (np.isfinite(np.asarray(lse)) == seen).all()
  lse_err = relative_error(np.where(seen, lse, 0), np.where(seen, lse_ref, 0))
  print(f"\nlse relative error {lse_err:.2e}")
  assert lse_err <= 1e-3
  _assert_as_accurate(grad_errors(o, grads, o_ref, grads_ref), cudnn[True], "two chunks via lse")


@pytest.mark.parametrize("layout,causal", [("zigzag", True), ("contiguous", True),
                                           ("contiguous", False)])
def test_ring_on_one_device(inputs, layout, causal):
  (q, k, v, do), cudnn = inputs
  seg = _documents(q.shape[1], 8, b=q.shape[0], seed=2)
  pos = document_positions(seg)
  fn = lambda q, k, v: ring_attention(q, k, v, kernel=TOKAMAX, options=RingOptions(layout=layout),
                                      segment_ids=seg, positions=pos, causal=causal)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg, causal=causal)
  errors = grad_errors(*run_with_grads(fn, q, k, v, do, make_mesh(sequence=1)), o_ref, grads_ref)
  _assert_as_accurate(errors, cudnn[causal], f"ring1(tokamax) {layout} causal={causal}")


@pytest.mark.skipif(not SHARDS, reason="needs 2 or more GPUs")
@pytest.mark.parametrize("n", SHARDS)
def test_ring_on_gpus(inputs, n):
  (q, k, v, do), cudnn = inputs
  seg = _documents(q.shape[1], 8, b=q.shape[0], seed=n)
  pos = document_positions(seg)
  z = lambda x: ops.zigzag(x, n)

  def fn(q, k, v):
    return ops.unzigzag(ops.attention(z(q), z(k), z(v), segment_ids=z(seg), positions=z(pos),
                                      implementation="tokamax",
                                      ring=RingOptions(layout="zigzag")), n)

  mesh = make_mesh(sequence=n)
  with jax.set_mesh(mesh):
    assert "ppermute" in str(jax.make_jaxpr(fn)(q, k, v))
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  errors = grad_errors(*run_with_grads(fn, q, k, v, do, mesh), o_ref, grads_ref)
  _assert_as_accurate(errors, cudnn[True], f"ring(tokamax) n={n}")

