"""Zigzag (DualChunkSwap) load balancing for causal ring attention.

The sequence is cut into 2n chunks; device i of the ring holds chunks i and 2n-1-i, so every
device gets the same share of causal work. Applied once in the input pipeline to every
per-token array (tokens, labels, positions, segment ids, loss mask), by static reshape, reverse
and concat only: a gather-based reorder lowered to sequential loops on TPU (maxtext PR #4275).

Both functions take numpy arrays (the trainer permutes host batches, which must not make a
host -> device -> host round trip) or JAX arrays (traced code), and return the same kind.
"""

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array | np.ndarray


def _split(x: Array, n: int, axis: int) -> int:
  length = x.shape[axis]
  if length % (2 * n):
    raise ValueError(f"zigzag: sequence length ({length}) on axis {axis} must be divisible by "
                     f"2 * n = {2 * n} (n = size of the 'sequence' mesh axis)")
  return length // (2 * n)


def _xp(x: Array):
  """numpy for host arrays, jax.numpy otherwise."""
  return np if isinstance(x, np.ndarray) else jnp


def _index(y: Array, i: int, axis: int) -> Array:
  """y[..., i, ...] on `axis` by basic indexing (a static slice, never a gather)."""
  return y[(slice(None),) * axis + (i,)]


def zigzag(x: Array, n: int, axis: int = 1) -> Array:
  """Reorder `axis` so that contiguous shard i of n holds chunks i and 2n-1-i of 2n."""
  xp = _xp(x)
  axis = axis % x.ndim
  m = _split(x, n, axis)
  shape = x.shape
  y = x.reshape(shape[:axis] + (2, n, m) + shape[axis + 1:])
  first = _index(y, 0, axis)  # chunks 0..n-1
  second = xp.flip(_index(y, 1, axis), axis)  # 2n-1..n
  return xp.stack([first, second], axis=axis + 1).reshape(shape)


def unzigzag(x: Array, n: int, axis: int = 1) -> Array:
  """Inverse of `zigzag`."""
  xp = _xp(x)
  axis = axis % x.ndim
  m = _split(x, n, axis)
  shape = x.shape
  y = x.reshape(shape[:axis] + (n, 2, m) + shape[axis + 1:])
  first = _index(y, 0, axis + 1)
  second = xp.flip(_index(y, 1, axis + 1), axis)
  return xp.concatenate([first, second], axis=axis).reshape(shape)
