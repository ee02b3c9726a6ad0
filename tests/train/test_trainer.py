"""End-to-end training on a real SeqIO task (Shakespeare bytes), 8 simulated CPU devices.

One run on mesh (data=2, sequence=4) with zigzag must learn; a run on (data=8) with two
microbatches must give the same losses for the first steps (same batches, same init), which
checks the sequence sharding, the zigzag permutation and gradient accumulation at once.
"""

import numpy as np
import pytest

import shakespeare_task
from longjax.tasks.input import SeqioBatches
from longjax.train.mesh import MeshConfig
from longjax.train.step import StepConfig
from longjax.train.trainer import train
from train_helpers import logged, small_config, tiny_model


@pytest.fixture(scope="module")
def source():
  return SeqioBatches(shakespeare_task.TASK, {"targets": 64}, seed=0)


def test_ring_learns_and_data_parallel_with_microbatches_agrees(tmp_path, source):
  """One test (not a shared fixture) so that pytest-xdist never runs the ring training twice."""
  ring_dir, dp_dir = tmp_path / "ring", tmp_path / "dp"
  train(small_config(ring_dir, steps=12, mesh=MeshConfig(data=2, sequence=4), seq_len=64,
                     batch_size=16), source, tiny_model(shakespeare_task.VOCAB_SIZE))
  ring = logged(ring_dir)
  first, last = ring[1]["loss"], ring[12]["loss"]
  assert first == pytest.approx(np.log(shakespeare_task.VOCAB_SIZE), abs=0.1)
  assert last < first - 1.0, [r["loss"] for r in ring.values()]

  cfg = small_config(dp_dir, steps=3, mesh=MeshConfig(data=8), seq_len=64, batch_size=16,
                     step=StepConfig(loss_chunk=16, microbatches=2))
  train(cfg, source, tiny_model(shakespeare_task.VOCAB_SIZE))
  dp = logged(dp_dir)
  for step in (1, 2, 3):
    assert dp[step]["batch_crc"] == ring[step]["batch_crc"]
    assert dp[step]["loss"] == pytest.approx(ring[step]["loss"], rel=2e-5)
    assert dp[step]["grad_norm"] == pytest.approx(ring[step]["grad_norm"], rel=1e-3)


def test_non_finite_loss_raises_with_step_range(tmp_path, source):
  cfg = small_config(tmp_path, steps=6, mesh=MeshConfig(data=8), seq_len=64)
  cfg = cfg.__class__(**{**cfg.__dict__, "optimizer": cfg.optimizer.__class__(
      learning_rate=1e30, warmup_steps=1)})
  with pytest.raises(FloatingPointError, match=r"non-finite between steps \d+ and \d+"):
    train(cfg, source, tiny_model(shakespeare_task.VOCAB_SIZE))
