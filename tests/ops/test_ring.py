"""Ring attention on 8 simulated CPU devices vs the dense reference (spec T1, T4).

Inputs are generated in natural order; the test applies the layout permutation (zigzag or
identity), runs `attention` under a mesh with a `sequence` axis, and undoes the permutation.
"""

import dataclasses

import jax
import jax.numpy as jnp
import pytest
from jax.ad_checkpoint import checkpoint_policies

from longjax import ops
from tests.helpers.attention import assert_close, make_mesh, make_qkv, packed_segments, reference


ZIGZAG = ops.RingOptions(layout="zigzag")


def _ring_run(mesh, n, layout, q, k, v, do, seg=None, causal=True, implementation="blockwise",
              loop="unroll"):
  perm = (lambda x: ops.zigzag(x, n)) if layout == "zigzag" else (lambda x: x)
  unperm = (lambda x: ops.unzigzag(x, n)) if layout == "zigzag" else (lambda x: x)
  b, s = q.shape[:2]
  pos = perm(jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s)))

  def f(q, k, v):
    o = ops.attention(perm(q), perm(k), perm(v), segment_ids=None if seg is None else perm(seg),
                      positions=pos, causal=causal, implementation=implementation,
                      ring=ops.RingOptions(layout=layout, loop=loop))
    return unperm(o)

  with jax.set_mesh(mesh):
    return jax.jit(lambda q, k, v, do: (lambda o, vjp: (o, vjp(do)))(*jax.vjp(f, q, k, v)))(
        q, k, v, do)


def _check(n, layout, segments, heads, dtype=jnp.float32, data=1, causal=True, s=32):
  n_heads, kv_heads = heads
  b = 2
  q, k, v, do = make_qkv(b=b, s=s, n=n_heads, kh=kv_heads, h=8, dtype=dtype, seed=n)
  seg = packed_segments(b, s, seed=n) if segments else None
  mesh = make_mesh(data=data, sequence=n)
  o, grads = _ring_run(mesh, n, layout, q, k, v, do, seg, causal)
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg, causal=causal)
  assert_close(o, o_ref, dtype)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, dtype)


MHA, GQA = (4, 4), (4, 2)

FAST = [  # (n, layout, segments, heads, data)
    (2, "zigzag", True, GQA, 2),
    (4, "zigzag", False, MHA, 2),
    (8, "zigzag", True, GQA, 1),
    (4, "contiguous", True, MHA, 1),
    (2, "contiguous", False, GQA, 1),
]
FULL = [(n, layout, seg, heads, 1) for n in (2, 4, 8) for layout in ("zigzag", "contiguous")
        for seg in (False, True) for heads in (MHA, GQA)]
SLOW = [c for c in FULL if c not in FAST]


def _id(c):
  return f"n{c[0]}-{c[1]}-{'docs' if c[2] else 'causal'}-{'mha' if c[3] == MHA else 'gqa'}-d{c[4]}"


@pytest.mark.parametrize("case", FAST, ids=_id)
def test_ring_matches_reference(case):
  n, layout, segments, heads, data = case
  _check(n, layout, segments, heads, data=data)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=_id)
def test_ring_matches_reference_full_grid(case):
  n, layout, segments, heads, data = case
  _check(n, layout, segments, heads, data=data)


def test_ring_bf16():
  _check(4, "zigzag", True, GQA, dtype=jnp.bfloat16, s=64)


def test_ring_non_causal():
  _check(4, "zigzag", True, GQA, causal=False)


def test_ring_heads_over_tensor_axis():
  q, k, v, do = make_qkv(b=2, s=32, n=4, kh=2, h=8)
  mesh = make_mesh(sequence=4, tensor=2)
  o, grads = _ring_run(mesh, 4, "zigzag", q, k, v, do)
  o_ref, grads_ref = reference(q, k, v, do)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


def _count(jaxpr, name="ppermute"):
  return str(jaxpr).count(f"{name}[")


@pytest.mark.parametrize("n", [2, 4])
def test_permute_counts(n):
  """T4: N-1 KV shifts forward; backward N-1 KV + N dK/dV shifts; saved context: no re-run."""
  q, k, v, do = make_qkv(b=1, s=8 * n, n=2, kh=1, h=8)
  mesh = make_mesh(sequence=n)
  f = lambda q, k, v: ops.attention(q, k, v, implementation="blockwise", ring=ZIGZAG)
  loss = lambda f: (lambda q, k, v: jnp.sum(f(q, k, v) * do))
  save = jax.checkpoint(f, policy=checkpoint_policies.save_only_these_names(
      "context", "context_lse"))
  full = jax.checkpoint(f, policy=checkpoint_policies.nothing_saveable)
  with jax.set_mesh(mesh):
    assert _count(jax.make_jaxpr(f)(q, k, v)) == n - 1
    assert _count(jax.make_jaxpr(jax.grad(loss(f)))(q, k, v)) == (n - 1) + (2 * n - 1)
    assert _count(jax.make_jaxpr(jax.grad(loss(save)))(q, k, v)) == (n - 1) + (2 * n - 1)
    assert _count(jax.make_jaxpr(jax.grad(loss(full)))(q, k, v)) == 2 * (n - 1) + (2 * n - 1)
    hlo = jax.jit(jax.grad(loss(f))).lower(q, k, v).compile().as_text()
  assert "all-gather" not in hlo
  assert "collective-permute" in hlo


def test_errors_say_what_was_expected():
  q, k, v, _ = make_qkv(b=2, s=24, n=4, kh=2, h=8)
  with jax.set_mesh(make_mesh(sequence=8)):
    with pytest.raises(ValueError, match=r"divisible by 2 \* 'sequence' axis size = 16"):
      ops.attention(q, k, v, ring=ZIGZAG)
  q2, k2, v2, _ = make_qkv(b=2, s=32, n=3, kh=3, h=8)
  with jax.set_mesh(make_mesh(sequence=4, tensor=2)):
    with pytest.raises(ValueError, match=r"query heads \(3\) and kv heads \(3\) must both be "
                                         r"divisible by the 'tensor' mesh axis size \(2\)"):
      ops.attention(q2, k2, v2, ring=ZIGZAG)
  with jax.set_mesh(make_mesh(data=2)):
    with pytest.raises(ValueError, match=r"needs a mesh with a 'sequence' axis.*\('data',\)"):
      ops.ring_attention(q, k, v, kernel=ops.attention.__globals__["BLOCKWISE"], options=ZIGZAG)
  with pytest.raises(ValueError, match="needs a mesh with a 'sequence' axis"):
    ops.ring_attention(q, k, v, kernel=ops.attention.__globals__["BLOCKWISE"], options=ZIGZAG)
  with pytest.raises(ValueError, match="layout must be one of"):
    ops.RingOptions(layout="striped")


def test_scan_loop_matches_reference_without_extra_permutes():
  """R5: loop='scan' (steps 1..N-2 in a lax.scan) is correct and sends no extra KV shift."""
  n = 4
  q, k, v, do = make_qkv(b=2, s=32, n=4, kh=2, h=8, seed=11)
  seg = packed_segments(2, 32, seed=11)
  mesh = make_mesh(sequence=n)
  o, grads = _ring_run(mesh, n, "zigzag", q, k, v, do, seg, loop="scan")
  scan = ops.RingOptions(layout="zigzag", loop="scan")
  with jax.set_mesh(mesh):
    jaxpr = jax.make_jaxpr(lambda q, k, v: ops.attention(q, k, v, implementation="blockwise",
                                                         ring=scan))(q, k, v)
  # one shift before the scan (step 0) + one in its body (run N-2 times) = N-1 at run time
  assert "scan[" in str(jaxpr) and _count(jaxpr) == 2
  o_ref, grads_ref = reference(q, k, v, do, segment_ids=seg)
  assert_close(o, o_ref, jnp.float32)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, jnp.float32)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("n,layout", [(4, "zigzag"), (2, "contiguous")])
def test_ring_with_an_index_only_kernel(n, layout, dtype):
  """The path cuDNN takes (no segment ids, no positions: aligned causal block on step 0, layout
  trusted, only K/V in the ring buffer, o returned in the input dtype), exercised on CPU with
  blockwise under cuDNN's contract; f32 for tight tolerances, bf16 as cuDNN runs."""
  from longjax.ops.blockwise import BLOCKWISE

  def fwd_in_input_dtype(q, k, v, mask, scale):
    o, lse = BLOCKWISE.fwd(q, k, v, mask, scale)
    return o.astype(q.dtype), lse
  index_only = dataclasses.replace(BLOCKWISE, name="index-only", fwd=fwd_in_input_dtype,
                                   takes_segments=False, takes_positions=False)
  q, k, v, do = make_qkv(b=2, s=32, n=4, kh=2, h=8, dtype=dtype, seed=13)
  perm = (lambda x: ops.zigzag(x, n)) if layout == "zigzag" else (lambda x: x)
  unperm = (lambda x: ops.unzigzag(x, n)) if layout == "zigzag" else (lambda x: x)

  def f(q, k, v):
    return unperm(ops.ring_attention(perm(q), perm(k), perm(v), kernel=index_only,
                                     options=ops.RingOptions(layout=layout)))

  with jax.set_mesh(make_mesh(sequence=n)):
    o, vjp = jax.vjp(jax.jit(f), q, k, v)
    grads = vjp(do)
    jaxpr = str(jax.make_jaxpr(f)(q, k, v))
  assert "bitcast_convert_type" not in jaxpr  # nothing but K/V travels
  o_ref, grads_ref = reference(q, k, v, do)
  assert_close(o, o_ref, dtype)
  for g, g_ref in zip(grads, grads_ref):
    assert_close(g, g_ref, dtype)
