"""A tiny Llama under a mesh with `sequence`=4 (and data=2) equals the unsharded model.

The input goes through the trainer's path: zigzag-permuted tokens, positions and segment ids,
the trainer's logical-axis rules and sharded parameters; logits are un-permuted before comparing.
Parameter gradients are independent of the token order, so they are compared directly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax import ops
from longjax.models import Llama, LlamaConfig
from longjax.train.sharding import logical_axis_rules
from tests.helpers.attention import make_mesh, packed_segments

B, S, V, N_SEQ = 2, 32, 128, 4


ZIGZAG = ops.RingOptions(layout="zigzag")


def _loss(model, tokens, positions, segment_ids, cot, ring=None):
  return jnp.sum(model(tokens, positions, segment_ids, ring=ring) * cot)


@pytest.mark.parametrize("segments", [False, True], ids=["causal", "documents"])
def test_llama_sequence_sharded_equals_unsharded(segments):
  cfg = LlamaConfig.preset("tiny", vocab_size=V, dtype="float32", param_dtype="float32")
  model = Llama(cfg, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(1), (B, S), 0, V)
  positions = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32), (B, S))
  seg = packed_segments(B, S, seed=2) if segments else None
  cot = jax.random.normal(jax.random.key(3), (B, S, V))

  logits = model(tokens, positions, seg)
  grads = nnx.grad(_loss)(model, tokens, positions, seg, cot)

  z = lambda x: None if x is None else ops.zigzag(x, N_SEQ)
  mesh = make_mesh(data=2, fsdp=1, sequence=N_SEQ, tensor=1)  # the trainer's four axes
  rules = logical_axis_rules()
  graphdef, state = nnx.split(model)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    state = jax.device_put(state, nnx.get_named_sharding(state, mesh))

    def forward(state, t, p, s):
      return nnx.merge(graphdef, state)(t, p, s, ring=ZIGZAG)

    def grad(state, t, p, s, c):
      return jax.grad(lambda st: _loss(nnx.merge(graphdef, st), t, p, s, c, ring=ZIGZAG))(state)

    args = (z(tokens), z(positions), z(seg))
    assert "ppermute" in str(jax.make_jaxpr(forward)(state, *args))  # the ring ran
    logits_ring = jax.jit(forward)(state, *args)
    grads_ring = jax.jit(grad)(state, *args, z(cot))

  np.testing.assert_allclose(ops.unzigzag(logits_ring, N_SEQ), logits, atol=1e-5, rtol=1e-5)
  flat, flat_ring = nnx.to_flat_state(nnx.state(grads)), nnx.to_flat_state(grads_ring)
  ring_by_path = dict(flat_ring)
  for path, g in flat:
    np.testing.assert_allclose(ring_by_path[path][...], g[...], atol=2e-5, rtol=1e-4,
                               err_msg=str(path))
