"""Zigzag (DualChunkSwap) load balancing for causal ring attention.

The sequence is cut into 2n chunks; device i of the ring holds chunks i and 2n-1-i, so every
device gets the same share of causal work. Applied once in the input pipeline to every
per-token array (tokens, labels, positions, segment ids, loss mask), by static reshape, reverse
and concat only: a gather-based reorder lowered to sequential loops on TPU (maxtext PR #4275).
"""

import jax
import jax.numpy as jnp


def _split(x, n: int, axis: int):
  length = x.shape[axis]
  if length % (2 * n):
    raise ValueError(f"zigzag: sequence length ({length}) on axis {axis} must be divisible by "
                     f"2 * n = {2 * n} (n = size of the 'sequence' mesh axis)")
  return length // (2 * n)


def zigzag(x: jax.Array, n: int, axis: int = 1) -> jax.Array:
  """Reorder `axis` so that contiguous shard i of n holds chunks i and 2n-1-i of 2n."""
  axis = axis % x.ndim
  m = _split(x, n, axis)
  shape = x.shape
  y = x.reshape(shape[:axis] + (2, n, m) + shape[axis + 1:])
  first = jax.lax.index_in_dim(y, 0, axis, keepdims=False)  # chunks 0..n-1
  second = jnp.flip(jax.lax.index_in_dim(y, 1, axis, keepdims=False), axis)  # 2n-1..n
  return jnp.stack([first, second], axis=axis + 1).reshape(shape)


def unzigzag(x: jax.Array, n: int, axis: int = 1) -> jax.Array:
  """Inverse of `zigzag`."""
  axis = axis % x.ndim
  m = _split(x, n, axis)
  shape = x.shape
  y = x.reshape(shape[:axis] + (n, 2, m) + shape[axis + 1:])
  first = jax.lax.index_in_dim(y, 0, axis + 1, keepdims=False)
  second = jnp.flip(jax.lax.index_in_dim(y, 1, axis + 1, keepdims=False), axis)
  return jnp.concatenate([first, second], axis=axis).reshape(shape)
