"""Spec T2: autodiff through an LSE combine of stop-gradient lse gives wrong dq/dk.

Kernels that return (o, lse) as residuals (cuDNN `return_residual`, splash `save_residuals`)
carry no gradient through lse. Merging two blocks with such a kernel and differentiating the merge
drops the term w_i (O_i - O) of dO/dlse_i: dV stays right, dQ and dK go wrong. The ring avoids
it by a hand-written backward that feeds each block the global (o, lse) (R2 contract).
"""

import jax
import jax.numpy as jnp
import numpy as np

from longjax.ops.blockwise import blockwise_bwd, blockwise_fwd
from longjax.ops.kernels import BlockMask
from tests.helpers.attention import make_qkv, reference

NO_MASK = BlockMask(causal=False)


def _residual_kernel(q, k, v, scale):
  """(o, lse) of one block with lse stop-gradient'ed, like `return_residual` kernels."""
  seg = jnp.ones(q.shape[:2], jnp.int32)
  pos = jnp.zeros(q.shape[:2], jnp.int32)
  from longjax.ops.reference import reference_attention
  o, lse = reference_attention(q, k, v, segment_ids=seg, positions=pos, causal=False,
                               scale=scale, kv_segment_ids=jnp.ones(k.shape[:2], jnp.int32),
                               kv_positions=jnp.zeros(k.shape[:2], jnp.int32), return_lse=True)
  return o, jax.lax.stop_gradient(lse)


def _merge(parts):
  lse = jnp.logaddexp(parts[0][1], parts[1][1])
  return sum(jnp.exp(l - lse)[..., None] * o for o, l in parts), lse


def _rel(a, b):
  return float(np.linalg.norm(np.asarray(a - b)) / np.linalg.norm(np.asarray(b)))


def test_autodiff_through_stop_gradient_lse_combine_is_wrong():
  q, k, v, do = make_qkv(b=1, s=32, n=2, kh=2, h=8, seed=7)
  scale = 8 ** -0.5
  half = 16

  def two_block(q, k, v):
    parts = [_residual_kernel(q, k[:, :half], v[:, :half], scale),
             _residual_kernel(q, k[:, half:], v[:, half:], scale)]
    return _merge(parts)[0]

  o, vjp = jax.vjp(two_block, q, k, v)
  dq, dk, dv = vjp(do)
  o_ref, (dq_ref, dk_ref, dv_ref) = reference(q, k, v, do, causal=False)
  np.testing.assert_allclose(o, o_ref, atol=1e-5)  # the forward is fine
  np.testing.assert_allclose(dv, dv_ref, atol=1e-5)  # dV survives
  assert _rel(dq, dq_ref) > 0.05 and _rel(dk, dk_ref) > 0.05  # dQ, dK do not

  # The R2 contract: each block's backward fed the global o and lse gives the right gradients.
  fwd = [blockwise_fwd(q, k[:, sl], v[:, sl], NO_MASK, scale) for sl in (slice(0, half),
                                                                          slice(half, None))]
  o_glob, lse_glob = _merge(fwd)
  grads = [blockwise_bwd(q, k[:, sl], v[:, sl], o_glob, lse_glob, do, NO_MASK, scale)
           for sl in (slice(0, half), slice(half, None))]
  np.testing.assert_allclose(grads[0][0] + grads[1][0], dq_ref, atol=2e-5)
  np.testing.assert_allclose(jnp.concatenate([grads[0][1], grads[1][1]], 1), dk_ref, atol=2e-5)
  np.testing.assert_allclose(jnp.concatenate([grads[0][2], grads[1][2]], 1), dv_ref, atol=2e-5)
