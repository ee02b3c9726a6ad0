"""Zigzag load-balancing permutation: layout, round trip, no gather, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax.ops import unzigzag, zigzag


def test_device_i_holds_chunks_i_and_2n_minus_1_minus_i():
  n, m = 4, 3
  x = jnp.arange(2 * n * m)[None]
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
