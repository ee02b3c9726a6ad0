"""The rules table on the real Llama parameters and activations; mesh sizes; batch checks."""

import jax
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from jax.sharding import PartitionSpec as P

from longjax.models import Llama
from longjax.train import sharding
from longjax.train.mesh import MeshConfig, make_mesh
from tests.helpers.training import tiny_model


@pytest.fixture(scope="module")
def mesh():
  return make_mesh(MeshConfig(data=1, fsdp=2, sequence=2, tensor=2))


def test_mesh_sizes_and_errors():
  assert MeshConfig(data=-1, sequence=4).resolve(8) == {"data": 2, "fsdp": 1, "sequence": 4,
                                                         "tensor": 1}
  with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
    MeshConfig(data=-1, fsdp=-1)
  with pytest.raises(ValueError, match="do not divide the 8 devices"):
    MeshConfig(data=-1, sequence=3).resolve(8)
  with pytest.raises(ValueError, match="needs 4 devices, but there are 8"):
    MeshConfig(data=2, sequence=2).resolve(8)
  m = make_mesh(MeshConfig(data=2, sequence=4))
  assert dict(m.shape) == {"data": 2, "fsdp": 1, "sequence": 4, "tensor": 1}
  assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)


def test_parameter_specs(mesh):
  rules = sharding.logical_axis_rules(params_on_sequence=True)
  model = nnx.eval_shape(lambda: Llama(tiny_model(vocab_size=256), rngs=nnx.Rngs(0)))
  specs = jax.tree.map(lambda s: s.spec, sharding.state_shardings(
      nnx.state(model, nnx.Param), mesh, rules))
  fsdp = ("fsdp", "sequence")
  assert specs["embed_tokens"]["embedding"] == P("tensor", fsdp)
  assert specs["layers"]["mlp"]["up_proj"] == P(None, fsdp, "tensor")
  assert specs["layers"]["mlp"]["down_proj"] == P(None, "tensor", fsdp)
  assert specs["layers"]["self_attn"]["q_proj"] == P(None, fsdp, "tensor", None)
  assert specs["layers"]["self_attn"]["k_proj"] == P(None, fsdp, "tensor", None)
  assert specs["norm"]["scale"] == P(fsdp)
  rules = sharding.logical_axis_rules(params_on_sequence=False)
  assert sharding.spec_for(("embed", "mlp"), (64, 176), mesh, rules) == P("fsdp", "tensor")


def test_indivisible_dimension_stays_replicated():
  mesh = make_mesh(MeshConfig(data=1, fsdp=1, sequence=1, tensor=-1))
  rules = sharding.logical_axis_rules()
  spec = sharding.spec_for(("embed", "kv_heads", "head_dim"), (64, 3, 16), mesh, rules)
  assert spec[1] is None  # 3 kv heads on tensor=8: replicated instead of a compile error


def test_activation_specs_do_not_reuse_axes(mesh):
  rules = sharding.logical_axis_rules()
  assert nn.logical_to_mesh_axes(("batch", "sequence", "embed"), rules) == P(
      ("data", "fsdp"), "sequence", None)
  assert nn.logical_to_mesh_axes(("batch", "sequence", "heads", None), rules) == P(
      ("data", "fsdp"), "sequence", "tensor", None)


def test_batch_checks(mesh):
  sharding.check_batch_shape(4, 64, mesh, zigzag=True)
  with pytest.raises(ValueError, match=r"global batch size \(3\) must be divisible by data\*fsdp"):
    sharding.check_batch_shape(3, 64, mesh, zigzag=True)
  with pytest.raises(ValueError, match=r"sequence length \(6\) must be divisible by 2\*sequence"):
    sharding.check_batch_shape(4, 6, mesh, zigzag=True)


def test_global_batch_from_host_data(mesh):
  shape = (4, 8)
  rows, cols = sharding.host_slices(mesh, shape)
  assert (rows, cols) == (slice(0, 4), slice(0, 8))  # one process holds everything
  x = np.arange(32, dtype=np.int32).reshape(shape)
  arr = sharding.global_batch({"x": x}, mesh, shape)["x"]
  assert arr.sharding.spec == P(("data", "fsdp"), "sequence")
  np.testing.assert_array_equal(np.asarray(arr), x)
