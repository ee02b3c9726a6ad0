"""Next-token cross-entropy computed in chunks of the sequence, so [S, V] logits never exist.

hidden [B, S, D] (after the final norm) and the unembedding [D, V] go in; the sums of the weighted
CE and z-loss terms and of the weights come out (the caller divides, so that microbatches and
devices can be summed first). Axis letters: B batch, S sequence, D model, V vocab; below, the
sequence is split as S = N * n * C: N shards of the `sequence` mesh axis, n chunks per shard of C
tokens each. The scan runs over n, so every step works on C tokens of every shard at once and no
shard waits for another; each step is rematerialised, so the backward pass keeps only the scan
inputs and recomputes one chunk's [B, N, C, V] f32 logits at a time.

The logits are accumulated in f32 whatever the compute dtype. Their gradient, [B, N, C, V] like
them, feeds the two largest matmuls of the backward (into the hidden states and the
unembedding); with `grad_dtype="compute"` it is rounded to the hidden states' dtype first, so
those run as bf16 GEMMs instead of f32 (TF32) ones: 7% of a Llama-3.2-1B step at 64K was
f32 GEMMs before (docs/training.md). `"float32"` keeps the gradient in f32, as autodiff gives it.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn


def _split(x: jax.Array, shards: int, chunk: int) -> jax.Array:
  """[B, S, ...] -> [n, B, N, C, ...] where S = N * n * C (the scan axis first)."""
  b, s = x.shape[:2]
  x = x.reshape(b, shards, s // (shards * chunk), chunk, *x.shape[2:])
  return jnp.moveaxis(x, 2, 0)


def chunk_size(seq_len: int, shards: int, chunk: int) -> int:
  """The chunk actually used: `chunk`, capped at the per-shard length, which it must divide."""
  if seq_len % shards:
    raise ValueError(f"sequence length ({seq_len}) must be divisible by the sequence shards "
                     f"({shards})")
  local = seq_len // shards
  chunk = min(chunk, local)
  if local % chunk:
    raise ValueError(f"loss chunk ({chunk}) must divide the per-shard sequence length ({local})")
  return chunk


GRAD_DTYPES = ("compute", "float32")


def _logits_f32(h: jax.Array, unembedding: jax.Array) -> jax.Array:
  """[B, N, C, D] x [D, V] -> [B, N, C, V] logits, h's dtype in, f32 accumulated and out."""
  return jnp.einsum("bncd,dv->bncv", h, unembedding.astype(h.dtype),
                    preferred_element_type=jnp.float32)


@jax.custom_vjp
def _logits_compute_grad(h: jax.Array, unembedding: jax.Array) -> jax.Array:
  """`_logits_f32` whose backward rounds the logits' gradient to h's dtype."""
  return _logits_f32(h, unembedding)


def _logits_fwd(h, unembedding):
  return _logits_f32(h, unembedding), (h, unembedding)


def _logits_bwd(res, g):
  h, unembedding = res
  g = g.astype(h.dtype)
  dh = jnp.einsum("bncv,dv->bncd", g, unembedding.astype(h.dtype))
  # f32 out: the scan adds every chunk's share into the f32 parameter's gradient.
  dw = jnp.einsum("bncd,bncv->dv", h, g, preferred_element_type=jnp.float32)
  return dh, dw.astype(unembedding.dtype)


_logits_compute_grad.defvjp(_logits_fwd, _logits_bwd)


def chunked_cross_entropy(hidden: jax.Array, unembedding: jax.Array, targets: jax.Array,
                          weights: jax.Array, *, shards: int = 1, chunk: int = 4096,
                          grad_dtype: str = "compute"
                          ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Returns (sum of w * CE, sum of w * logsumexp^2, sum of w), all f32 scalars.

  CE = logsumexp(z) - z[target] with z = hidden @ unembedding accumulated in f32. The second sum
  is the z-loss numerator (PaLM's auxiliary loss, 1e-4 * log^2 Z), which keeps logits from
  drifting; the caller scales it. `grad_dtype`: the logits' gradient in the compute dtype
  ("compute") or in f32 ("float32"); see the module docstring.
  """
  if grad_dtype not in GRAD_DTYPES:
    raise ValueError(f"grad_dtype must be one of {GRAD_DTYPES}, got {grad_dtype!r}")
  logits_of = _logits_compute_grad if grad_dtype == "compute" else _logits_f32
  chunk = chunk_size(hidden.shape[1], shards, chunk)
  xs = (_split(hidden, shards, chunk), _split(targets, shards, chunk),
        _split(weights.astype(jnp.float32), shards, chunk))
  xs = (nn.with_logical_constraint(xs[0], (None, "batch", "sequence", None, "embed")),) + xs[1:]

  @jax.checkpoint
  def body(carry, x):
    h, t, w = x
    logits = logits_of(h, unembedding)
    lse = jax.nn.logsumexp(logits, axis=-1)
    # A masked sum picks the target logit and partitions cleanly over a vocab-sharded axis.
    hit = jax.lax.broadcasted_iota(jnp.int32, logits.shape, 3) == t[..., None]
    label = jnp.sum(jnp.where(hit, logits, 0.0), axis=-1)
    ce_sum, z_sum = carry
    return (ce_sum + jnp.sum((lse - label) * w), z_sum + jnp.sum(jnp.square(lse) * w)), None

  zero = jnp.zeros((), jnp.float32)
  (ce_sum, z_sum), _ = jax.lax.scan(body, (zero, zero), xs)
  return ce_sum, z_sum, jnp.sum(weights.astype(jnp.float32))
