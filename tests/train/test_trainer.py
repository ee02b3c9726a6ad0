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


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory, source):
  model_dir = tmp_path_factory.mktemp("ring")
  train(small_config(model_dir, steps=12, mesh=MeshConfig(data=2, sequence=4), seq_len=64,
                     batch_size=16), source,
        tiny_model(shakespeare_task.VOCAB_SIZE))
  return logged(model_dir)


def test_loss_falls_on_real_text(ring_run):
  first, last = ring_run[1]["loss"], ring_run[12]["loss"]
  assert first == pytest.approx(np.log(shakespeare_task.VOCAB_SIZE), abs=0.1)
  assert last < first - 1.0, [r["loss"] for r in ring_run.values()]


def test_data_parallel_with_microbatches_matches_ring(tmp_path, ring_run, source):
  cfg = small_config(tmp_path, steps=3, mesh=MeshConfig(data=8), seq_len=64, batch_size=16,
                     step=StepConfig(loss_chunk=16, microbatches=2))
  train(cfg, source, tiny_model(shakespeare_task.VOCAB_SIZE))
  dp = logged(tmp_path)
  for step in (1, 2, 3):
    assert dp[step]["batch_crc"] == ring_run[step]["batch_crc"]
    assert dp[step]["loss"] == pytest.approx(ring_run[step]["loss"], rel=2e-5)
    assert dp[step]["grad_norm"] == pytest.approx(ring_run[step]["grad_norm"], rel=1e-3)


def test_non_finite_loss_raises_with_step_range(tmp_path, source):
  cfg = small_config(tmp_path, steps=6, mesh=MeshConfig(data=8), seq_len=64)
  cfg = cfg.__class__(**{**cfg.__dict__, "optimizer": cfg.optimizer.__class__(
      learning_rate=1e30, warmup_steps=1)})
  with pytest.raises(FloatingPointError, match=r"non-finite between steps \d+ and \d+"):
    train(cfg, source, tiny_model(shakespeare_task.VOCAB_SIZE))
