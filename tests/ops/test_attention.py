"""The `attention` entry point: dispatch, argument checks, ring under a sequence mesh."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from longjax import ops
from tests.helpers.attention import assert_close, make_mesh, make_qkv, packed_segments, reference


def test_default_on_cpu_is_blockwise_and_matches_reference():
  q, k, v, do = make_qkv(b=2, s=32, n=4, kh=2, h=8)
  seg = packed_segments(2, 32)
  jaxpr = str(jax.make_jaxpr(lambda q, k, v: ops.attention(q, k, v, segment_ids=seg))(q, k, v))
  assert "custom_vjp_call" in jaxpr and "scan[" in jaxpr  # the blockwise kernel, not dense
  f = lambda q, k, v: ops.attention(q, k, v, segment_ids=seg)
  o, vjp = jax.vjp(jax.jit(f), q, k, v)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(vjp(do), grads_ref):
    assert_close(g, g_ref, jnp.float32)


def test_sequence_mesh_runs_the_ring_and_size_one_does_not():
  q, k, v, _ = make_qkv(b=2, s=32, n=4, kh=2, h=8)
  ring = functools.partial(ops.attention, ring=ops.RingOptions(layout="zigzag"))
  with jax.set_mesh(make_mesh(sequence=4)):
    assert "ppermute" in str(jax.make_jaxpr(ring)(q, k, v))
  with jax.set_mesh(make_mesh(data=2, sequence=1)):
    assert "ppermute" not in str(jax.make_jaxpr(ring)(q, k, v))


def test_the_ring_needs_the_layout_in_the_call():
  """No default layout: a ring told nothing would guess, and a wrong guess drops masks."""
  q, k, v, _ = make_qkv(b=2, s=32, n=4, kh=2, h=8)
  with jax.set_mesh(make_mesh(sequence=4)):
    with pytest.raises(ValueError, match=r"'sequence' axis of size 4 .* needs the token layout"):
      ops.attention(q, k, v)


@pytest.mark.parametrize("kwargs,shapes,match", [
    ({}, ((2, 8, 4, 8), (2, 8, 3, 8), (2, 8, 3, 8)), r"query heads \(4\) must be a multiple of "
                                                      r"kv heads \(3\)"),
    ({}, ((2, 8, 4, 8), (2, 8, 2, 8), (2, 8, 1, 8)), "must have the same shape"),
    ({}, ((2, 8, 4), (2, 8, 2, 8), (2, 8, 2, 8)), r"expects q \[B,S,N,H\]"),
    ({}, ((2, 8, 4, 8), (2, 6, 2, 8), (2, 6, 2, 8)), "must agree on batch, sequence"),
    ({"implementation": "flash"}, None, "implementation must be one of"),
    ({"implementation": "gpu"}, None, "needs a GPU backend"),
    ({"segment_ids": jnp.ones((2, 7), jnp.int32)}, None, r"segment_ids must be \[B, S\]"),
    ({"positions": jnp.ones((2, 8))}, None, "positions must be an integer array"),
])
def test_bad_arguments_raise_what_was_expected(kwargs, shapes, match):
  shapes = shapes or ((2, 8, 4, 8), (2, 8, 2, 8), (2, 8, 2, 8))
  q, k, v = (jnp.zeros(s) for s in shapes)
  with pytest.raises(ValueError, match=match):
    ops.attention(q, k, v, **kwargs)


def test_integer_inputs_rejected():
  x = jnp.zeros((1, 8, 2, 8), jnp.int32)
  with pytest.raises(ValueError, match="q must be float32, bfloat16 or float16"):
    ops.attention(x, x, x)


def test_gpu_kernel_refuses_segment_ids():
  q, k, v, _ = make_qkv(b=1, s=8, n=2, kh=2, h=8)
  with pytest.raises(ValueError, match="cannot apply segment_ids"):
    ops.attention(q, k, v, segment_ids=jnp.ones((1, 8), jnp.int32), implementation="gpu")


def test_reference_rows_without_keys_are_zero():
  q, k, v, _ = make_qkv(b=1, s=8, n=2, kh=2, h=8)
  seg = jnp.array([[1, 1, 1, 0, 0, 2, 2, 0]], jnp.int32)
  for impl in ("reference", "blockwise"):
    o = ops.attention(q, k, v, segment_ids=seg, implementation=impl)
    np.testing.assert_array_equal(np.asarray(o[0, [3, 4, 7]]), 0.0)
