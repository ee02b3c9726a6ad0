"""The one attention entry point. Every model and benchmark calls `attention`.

q [B, S, N, H], k/v [B, S, K, H] with N a multiple of K (GQA). Causality is `q_pos >= k_pos` within
equal non-zero segment ids, so permuted (zigzag) or packed sequences keep their meaning.

Under a mesh (jax.set_mesh) whose `sequence` axis is larger than 1, the call runs ring attention
(ring.py) with the chosen kernel per block; otherwise the kernel runs on the whole sequence. The
ring needs to know the token order the caller gave S (`ring=RingOptions(layout=...)`); it is an
argument of the call, never a default, so a caller with contiguous rows cannot get zigzag blocks.
"""

import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from longjax.ops import gpu, tokamax_gpu, tpu
from longjax.ops.blockwise import BLOCKWISE
from longjax.ops.kernels import BlockKernel, fused_attention
from longjax.ops.reference import reference_attention
from longjax.ops.ring import RingOptions, ring_attention, sequence_axis_size

IMPLEMENTATIONS = ("reference", "blockwise", "gpu", "tpu", "tokamax")
_FLOATS = (jnp.float32, jnp.bfloat16, jnp.float16)


def _check_inputs(q, k, v, segment_ids, positions):
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects q [B,S,N,H], k/v [B,S,K,H]; got {q.shape}, {k.shape}, "
                     f"{v.shape}")
  if k.shape != v.shape:
    raise ValueError(f"k {k.shape} and v {v.shape} must have the same shape")
  if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
    raise ValueError(f"q {q.shape} and k {k.shape} must agree on batch, sequence and head dim")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads ({k.shape[2]})")
  for name, x in (("q", q), ("k", k), ("v", v)):
    if x.dtype not in _FLOATS:
      raise ValueError(f"attention: {name} must be float32, bfloat16 or float16, got {x.dtype}")
  if not q.dtype == k.dtype == v.dtype:
    raise ValueError(f"attention: q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
  for name, x in (("segment_ids", segment_ids), ("positions", positions)):
    if x is None:
      continue
    if x.shape != q.shape[:2]:
      raise ValueError(f"attention: {name} must be [B, S] = {q.shape[:2]}, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.integer):
      raise ValueError(f"attention: {name} must be an integer array, got {x.dtype}")


def _pick(implementation, q, k, segment_ids) -> str:
  if implementation is None:
    if segment_ids is None and gpu.cudnn_supports(q, k):
      return "gpu"
    if tpu.tpu_supports(q, k):
      return "tpu"
    return "blockwise"
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"implementation must be one of {IMPLEMENTATIONS} or None, "
                     f"got {implementation!r}")
  if implementation == "gpu":
    if segment_ids is not None:
      raise ValueError("implementation='gpu' (cuDNN) cannot apply segment_ids (document masks); "
                       "use 'blockwise' or None")
    if not gpu.cudnn_supports(q, k):
      raise ValueError(f"implementation='gpu' needs a GPU backend, bf16/fp16 inputs and head dim "
                       f"a multiple of 8 up to 128; got backend {jax.default_backend()}, "
                       f"{q.dtype}, head dim {q.shape[-1]}")
  if implementation == "tokamax" and not tokamax_gpu.tokamax_supports(q, k):
    raise ValueError(f"implementation='tokamax' needs tokamax "
                     f"{' or '.join(tokamax_gpu.TESTED_VERSIONS)} importable, a Hopper or "
                     f"Blackwell GPU and bf16/fp16 inputs with head dim up to 256; got backend "
                     f"{jax.default_backend()}, {q.dtype}, head dim {q.shape[-1]}")
  return implementation


def _kernel(name: str) -> BlockKernel:
  return {"gpu": gpu.CUDNN, "tpu": tpu.PALLAS_TPU, "tokamax": tokamax_gpu.TOKAMAX}.get(name,
                                                                                    BLOCKWISE)


def attention(q, k, v, *, segment_ids=None, positions=None, causal: bool = True,
              implementation: str | None = None, ring: RingOptions | None = None):
  """Scaled dot-product attention; returns [B, S, N, H] in q's dtype.

  segment_ids [B, S] int (0 = padding, attends nothing); positions [B, S] int (default: the
  index). implementation: 'reference' (dense oracle), 'blockwise' (pure JAX, any backend),
  'gpu' (cuDNN), 'tpu' (Pallas TPU flash attention; interpret mode elsewhere), 'tokamax'
  (tokamax's Mosaic-GPU kernel: document masks at cuDNN's speed on Hopper/Blackwell; by name
  only until its GPU tests cover more than one shape), or None for the fastest correct one on
  this backend for these inputs: cuDNN without segment ids, the Pallas TPU kernel on TPU, else
  blockwise. ring: the layout (and loop form) of S, required when the current mesh has a
  `sequence` axis larger than 1 and ignored otherwise.
  """
  _check_inputs(q, k, v, segment_ids, positions)
  name = _pick(implementation, q, k, segment_ids)
  scale = q.shape[-1] ** -0.5
  if name == "reference":
    b, s = q.shape[:2]
    seg = jnp.ones((b, s), jnp.int32) if segment_ids is None else segment_ids
    pos = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s)) if positions is None \
        else positions
    out = reference_attention(q, k, v, segment_ids=seg, positions=pos, causal=causal,
                              scale=scale)
    return checkpoint_name(out, "context")  # the kernels tag theirs inside their VJP rules
  kernel = _kernel(name)
  n = sequence_axis_size()
  if n > 1:
    if ring is None:
      raise ValueError(f"attention under a mesh with a 'sequence' axis of size {n} runs ring "
                       "attention, which needs the token layout of S: pass "
                       "ring=RingOptions(layout='zigzag') or RingOptions(layout='contiguous')")
    return ring_attention(q, k, v, kernel=kernel, options=ring, segment_ids=segment_ids,
                          positions=positions, causal=causal, scale=scale)
  call = lambda kern, pos: fused_attention(kern, q, k, v, segment_ids=segment_ids,
                                           positions=pos, causal=causal, scale=scale)
  if kernel.takes_positions or positions is None or not causal:
    return call(kernel, positions)
  # Kernels that mask by index equal the positions mask exactly when positions strictly increase.
  ordered = jnp.all(positions[:, 1:] > positions[:, :-1])
  return lax.cond(ordered, lambda: call(kernel, None), lambda: call(BLOCKWISE, positions))
