"""Memory shape of the real train step: no buffer as large as a full [S, S] attention matrix.

Lowers (does not run) the train step of the tiny Llama at S = 4096 and checks every tensor type in
the StableHLO. Both with unrolled and scanned layers the largest buffers must be O(S). A
regression guard: the blockwise kernel's tile masks depend only on positions, the same for every
layer, so the layer scan's partial evaluation once hoisted them out of the loop for all tile
pairs at once, O(S^2), which made 64K unbuildable on an H100
(experiments/bench/results/train_bench_h100_scanned_layers_failed.log); a
`lax.optimization_barrier` tying them to the tile (ops/blockwise.py) fixes it.
"""

import re

from longjax.models import LlamaConfig
from longjax.train.data import SyntheticSource, complete
from longjax.train.mesh import MeshConfig
from longjax.train.optimizer import OptimizerConfig
from longjax.train.sharding import activate, global_batch
from longjax.train.step import StepConfig
from longjax.train.trainer import TrainConfig, prepare

S = 4096


def largest_tensor(scan_layers: bool) -> int:
  model = LlamaConfig.preset("tiny", vocab_size=256, scan_layers=scan_layers,
                             remat_policy="save_context")
  config = TrainConfig(model_dir="/tmp/unused", train_steps=100, batch_size=8,
                       task_feature_lengths={"targets": S}, mesh=MeshConfig(data=-1),
                       optimizer=OptimizerConfig(warmup_steps=10), step=StepConfig(loss_chunk=1024))
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
