"""cuDNN flash attention as an R2 block kernel (NVIDIA GPUs, bf16/fp16).

Forward: cuDNN's fused attention with its softmax statistics (`return_residual=True`). We call
`jax._src.cudnn.fused_attention_stablehlo.dot_product_attention` rather than
`jax.nn.dot_product_attention`, because the latter casts the logsumexp to the output dtype (bf16),
too coarse for the f32 ring combine.

Backward: cuDNN's backward primitive fed the *global* o and lse. JAX exposes it only privately
(the public VJP uses the block's own o/lse, which is wrong once blocks are combined: the spec's
pitfall). Its argument list has changed between JAX releases, so we bind it by the parameter
names of `_dot_product_attention_bwd_impl` and fail loudly on names we do not know;
experiments/bench/attention.py checks o, lse, dq, dk, dv against the reference on the GPU.

Masks: none or the aligned causal triangle; no segment ids (cuDNN's packed layout is not used).
"""

import inspect

import jax
import jax.numpy as jnp

from longjax.ops.kernels import BlockKernel, BlockMask


def _cudnn():
  from jax._src.cudnn import fused_attention_stablehlo as fa  # private; see module docstring
  return fa


def _mask_type(mask: BlockMask):
  if not mask.index_only:
    raise ValueError("the cuDNN kernel takes no segment ids or positions (index causal only)")
  fa = _cudnn()
  return fa.MaskType.CAUSAL if mask.causal else fa.MaskType.NO_MASK


def cudnn_fwd(q, k, v, mask: BlockMask, scale: float):
  """(o [B,T,N,H] in q.dtype, lse [B,T,N] f32)."""
  o, lse = _cudnn().dot_product_attention(q, k, v, scale=scale, mask_type=_mask_type(mask),
                                          return_residual=True)
  lse = jnp.transpose(lse, (0, 2, 1))  # cuDNN keeps the statistics as [B, N, T]
  # An identity select (no row is fully masked here), so that the values the remat policies tag
  # are not the custom call's own outputs: XLA GPU's host offloading fails to compile when they
  # are (`offload_context`; experiments/bench/offload_probe.py). One elementwise pass over o.
  finite = jnp.isfinite(lse)
  return jnp.where(finite[..., None], o, jnp.zeros_like(o)), jnp.where(finite, lse, -jnp.inf)


def cudnn_bwd(q, k, v, o, lse, do, mask: BlockMask, scale: float):
  """(dq, dk, dv) in q.dtype for the given global o and lse [B,T,N] f32."""
  fa = _cudnn()
  names = list(inspect.signature(fa._dot_product_attention_bwd_impl).parameters)
  split = names.index("scale")
  arrays = {"query": q, "key": k, "value": v, "activation": jnp.transpose(lse, (0, 2, 1)),
            "fwd_output": o.astype(q.dtype), "grad_output": do.astype(q.dtype)}
  unused = jnp.zeros((0,), q.dtype)
  statics = {"scale": scale, "seed": 0, "dropout_rate": 0.0, "variadic_args": (False, False),
             "mask_type": _mask_type(mask), "layout": fa.AttentionLayout.BTNH.value,
             "sliding_window_length": None}
  unknown = [n for n in names[split:] if n not in statics]
  if unknown:
    raise NotImplementedError(f"cuDNN backward of jax {jax.__version__} takes unknown "
                              f"parameters {unknown}; update longjax/ops/gpu.py")
  grads = fa._dot_product_attention_bwd_p_wrapper.bind(
      *[arrays.get(n, unused) for n in names[:split]], **{n: statics[n] for n in names[split:]})
  return tuple(grads[:3])


def cudnn_supports(q, k) -> bool:
  """Whether cuDNN flash attention takes these shapes/dtypes on this backend."""
  h = q.shape[-1]
  return (jax.default_backend() == "gpu" and q.dtype in (jnp.bfloat16, jnp.float16)
          and k.dtype == q.dtype and h % 8 == 0 and h <= 128)


CUDNN = BlockKernel(name="gpu", fwd=cudnn_fwd, bwd=cudnn_bwd, takes_segments=False,
                    takes_positions=False)
