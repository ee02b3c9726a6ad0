"""Memory shape of the real train step: no [S, S] buffer, and no attention output saved twice.

Lowers (does not run) the train step of the tiny Llama at S = 4096 and checks every tensor type in
the StableHLO. Both with unrolled and scanned layers the largest buffers must be O(S). A
regression guard: the blockwise kernel's tile masks depend only on positions, the same for every
layer, so the layer scan's partial evaluation once hoisted them out of the loop for all tile
pairs at once, O(S^2), which made 64K unbuildable on an H100
(experiments/bench/results/train_bench_h100_scanned_layers_failed.log); a
`lax.optimization_barrier` tying them to the tile (ops/blockwise.py) fixes it.
"""

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from longjax import ops
from longjax.models import Llama, LlamaConfig
from longjax.train.data import SyntheticSource, complete
from longjax.train.mesh import MeshConfig, make_mesh
from longjax.train.optimizer import OptimizerConfig
from longjax.train.remat import RematConfig
from longjax.train.sharding import activate, global_batch, logical_axis_rules
from longjax.train.step import StepConfig
from longjax.train.trainer import TrainConfig, prepare

S = 4096


def largest_tensor(scan_layers: bool) -> int:
  model = LlamaConfig.preset("tiny", vocab_size=256, scan_layers=scan_layers)
  config = TrainConfig(model_dir="/tmp/unused", train_steps=100, batch_size=8,
                       task_feature_lengths={"targets": S}, mesh=MeshConfig(data=-1),
                       optimizer=OptimizerConfig(warmup_steps=10), step=StepConfig(loss_chunk=1024),
                       remat=RematConfig(policy="save_context"))
  run = prepare(config, model)
  host = complete(next(SyntheticSource(256, S).batches(start=0, rows=slice(0, 8),
                                                        global_batch=8)))
  with activate(run.mesh, run.rules):
    state = run.init_state()
    text = run.train_step.lower(state, global_batch(host, run.mesh, (8, S))).as_text()
  dims = re.findall(r"tensor<([0-9x]+)x(?:i1|i32|f32|bf16)>", text)
  return max(eval(d.replace("x", "*")) for d in dims)  # pylint: disable=eval-used


def test_unrolled_layers_keep_attention_memory_linear():
  assert largest_tensor(scan_layers=False) < S * S


def test_scanned_layers_keep_attention_memory_linear():
  assert largest_tensor(scan_layers=True) < S * S


@pytest.mark.parametrize("sequence,impl", [(1, "blockwise"), (1, "reference"), (2, "blockwise")],
                         ids=["one-device", "reference", "ring"])
def test_save_context_keeps_one_context_per_layer(sequence, impl, capsys):
  """save_context keeps per layer: its input and ONE attention output (plus its log-sum-exp).

  The kernels tag their residuals inside their VJP rules, the dense reference its output; a
  second tag on the model's side once saved the output twice (one more [S, N*H] bf16 per layer:
  16 GiB per GPU in theory for Llama-3-8B at 128K tokens on 2 GPUs; the compiled program shrank
  from 128.4 to 118.5 GiB).
  """
  cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    remat_policy="save_context", dtype="bfloat16", attention_impl=impl)
  b, s = 1, 64
  graphdef, state = nnx.split(Llama(cfg, rngs=nnx.Rngs(0)))
  tokens = jnp.zeros((b, s), jnp.int32)
  positions = ops.zigzag(jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s)), sequence)

  def loss(st):
    model = nnx.merge(graphdef, st)
    return jnp.sum(model(tokens, positions, ring=ops.RingOptions(layout="zigzag")).astype(
        jnp.float32))
  mesh = make_mesh(MeshConfig(data=1, sequence=sequence), jax.devices()[:sequence])
  with activate(mesh, logical_axis_rules()):
    print_saved_residuals(loss, state)
  saved = [line for line in capsys.readouterr().out.splitlines() if "from the argument" not in line]
  context = [line for line in saved if line.startswith("bf16[3,1,64,4,16]")]
  inputs = [line for line in saved if line.startswith("bf16[3,1,64,64]")]
  assert len(context) == 1 and len(inputs) == 1, "\n".join(saved)


def test_save_dots_keeps_the_attention_output_too(capsys):
  """The ladder's order (remat.LADDER) assumes each policy keeps a superset of the next one's:
  save_dots must keep the attention output, which is no dot (a custom call in the kernels), or
  the backward re-runs attention. On one H200, 1B shape at 64K, matmul outputs alone took 4.06
  s/step (experiments/bench/results/train_bench_h200_1b_64k_ladder.json); save_context took 3.50
  s in an earlier loan."""
  cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    remat_policy="save_dots", dtype="bfloat16", attention_impl="blockwise")
  graphdef, state = nnx.split(Llama(cfg, rngs=nnx.Rngs(0)))
  tokens = jnp.zeros((1, 64), jnp.int32)

  def loss(st):
    return jnp.sum(nnx.merge(graphdef, st)(tokens).astype(jnp.float32))
  mesh = make_mesh(MeshConfig(data=1, sequence=1), jax.devices()[:1])
  with activate(mesh, logical_axis_rules()):
    print_saved_residuals(loss, state)
  saved = [line for line in capsys.readouterr().out.splitlines() if "from the argument" not in line]
  shapes = [line.split(" ")[0] for line in saved]
  # q's projection and the attention output share a shape; the log-sum-exp is the kernel's
  assert shapes.count("bf16[3,1,64,4,16]") == 2 and shapes.count("f32[3,1,64,4]") == 1, \
      "\n".join(saved)
