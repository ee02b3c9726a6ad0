"""Zigzag load-balancing permutation: layout, round trip, no gather, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax.ops import unzigzag, zigzag


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_device_i_holds_chunks_i_and_2n_minus_1_minus_i(xp):
  n, m = 4, 3
  x = xp.arange(2 * n * m)[None]
  shards = np.asarray(zigzag(x, n)).reshape(n, 2 * m)
  for i in range(n):
    expected = np.concatenate([np.arange(i * m, (i + 1) * m),
                               np.arange((2 * n - 1 - i) * m, (2 * n - i) * m)])
    np.testing.assert_array_equal(shards[i], expected)


@pytest.mark.parametrize("n,axis", [(1, 1), (2, 1), (4, 0), (8, -2)])
def test_round_trip(n, axis):
  x = jax.random.normal(jax.random.key(0), (16, 32, 3))
  y = zigzag(x, n, axis=axis)
  np.testing.assert_array_equal(np.asarray(unzigzag(y, n, axis=axis)), np.asarray(x))
  if n > 1:
    assert not np.array_equal(np.asarray(y), np.asarray(x))


def test_jaxpr_has_no_gather():
  x = jnp.zeros((2, 64, 4))
  for fn in (zigzag, unzigzag):
    jaxpr = str(jax.make_jaxpr(lambda x: fn(x, 4))(x))
    assert "gather" not in jaxpr and "take" not in jaxpr
    assert "reshape" in jaxpr


def test_length_must_divide_2n():
  with pytest.raises(ValueError, match=r"divisible by 2 \* n = 8"):
    zigzag(jnp.zeros((1, 12)), 4)


@pytest.mark.parametrize("n,axis", [(2, 1), (4, 0), (8, -2)])
def test_numpy_in_numpy_out_without_device_transfers(n, axis):
  """Host batches stay on the host: the same permutation as on device, no transfer at all."""
  x = np.random.default_rng(0).normal(size=(16, 32, 3)).astype(np.float32)
  with jax.transfer_guard("disallow"):
    y = zigzag(x, n, axis=axis)
    back = unzigzag(y, n, axis=axis)
  assert type(y) is np.ndarray and type(back) is np.ndarray
  np.testing.assert_array_equal(y, np.asarray(zigzag(jnp.asarray(x), n, axis=axis)))
  np.testing.assert_array_equal(back, x)
