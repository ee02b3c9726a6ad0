"""End-to-end training on a real SeqIO task (Shakespeare bytes), 8 simulated CPU devices.

One run on mesh (data=2, sequence=4) with zigzag must learn; a run on (data=8) with two
microbatches must give the same losses for the first steps (same batches, same init), which
checks the sequence sharding, the zigzag permutation and gradient accumulation at once; so must
a run on (fsdp=2, sequence=4) with the weights sharded over both (the multi-GPU layout); a run
interrupted by SIGTERM and restarted must continue with the uninterrupted run's batches and
losses (in-process; tests/train/test_resume.py does the same through the CLI in subprocesses).
"""

import dataclasses
import os
import signal

import numpy as np
import pytest

from longjax.tasks.input import SeqioBatches
from longjax.train.data import IterableSource
from longjax.train.mesh import MeshConfig
from longjax.train.step import StepConfig
from longjax.train.trainer import train
from tests.helpers import shakespeare_task
from tests.helpers.training import logged, small_config, tiny_model


@pytest.fixture(scope="module")
def source():
  return SeqioBatches(shakespeare_task.TASK, {"targets": 64}, seed=0)



class SigtermAt:
  """Wraps a source; sends this process SIGTERM when batch `at` is drawn (once)."""

  def __init__(self, source, at: int):
    self.source, self.at, self.sent = source, at, False

  def batches(self, *, start, rows, global_batch):
    for i, batch in enumerate(self.source.batches(start=start, rows=rows,
                                                  global_batch=global_batch)):
      if start + i == self.at and not self.sent:
        self.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch


def _assert_same_first_steps(got: dict, want: dict, steps: int = 3) -> None:
  """Same batches, losses and gradient norms (up to summation order) for steps 1..steps."""
  for step in range(1, steps + 1):
    assert got[step]["batch_crc"] == want[step]["batch_crc"]
    assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=2e-5)
    assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-3)


def test_ring_learns_matches_data_parallel_and_resumes(tmp_path, source, compile_cache):
  """One test (not a shared fixture) so that pytest-xdist never runs the ring training twice."""
  del compile_cache
  ring_cfg = small_config(tmp_path / "ring", steps=12, mesh=MeshConfig(data=2, sequence=4),
                          seq_len=64, batch_size=16)
  model = tiny_model(shakespeare_task.VOCAB_SIZE)
  train(ring_cfg, source, model)
  ring = logged(tmp_path / "ring")
  first, last = ring[1]["loss"], ring[12]["loss"]
  assert first == pytest.approx(np.log(shakespeare_task.VOCAB_SIZE), abs=0.1)
  assert last < first - 1.0, [r["loss"] for r in ring.values()]

  cfg = small_config(tmp_path / "dp", steps=3, mesh=MeshConfig(data=8), seq_len=64,
                     batch_size=16, step=StepConfig(loss_chunk=16, microbatches=2))
  train(cfg, source, model)
  dp = logged(tmp_path / "dp")
  _assert_same_first_steps(dp, ring)

  # The multi-GPU layout (gin/mesh/ring.gin): weights and Adam state sharded over fsdp x sequence.
  fsdp_cfg = small_config(tmp_path / "fsdp", steps=3, seq_len=64, batch_size=16,
                          mesh=MeshConfig(data=1, fsdp=2, sequence=4, params_on_sequence=True))
  train(fsdp_cfg, source, model)
  fsdp = logged(tmp_path / "fsdp")
  _assert_same_first_steps(fsdp, ring)

  resumed = dataclasses.replace(ring_cfg, model_dir=str(tmp_path / "resumed"))
  train(resumed, SigtermAt(source, at=5), model)
  saved = sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir())
  assert len(saved) == 1 and saved[0] < 12, saved  # stopped early, saved where it stopped
  train(resumed, source, model)
  got = logged(tmp_path / "resumed")
  for step in range(saved[0] + 1, 13):
    assert got[step]["batch_crc"] == ring[step]["batch_crc"], step
    assert got[step]["loss"] == pytest.approx(ring[step]["loss"], rel=1e-6), step


def test_non_finite_loss_raises_with_step_range(tmp_path, source):
  cfg = small_config(tmp_path, steps=6, mesh=MeshConfig(data=8), seq_len=64)
  cfg = cfg.__class__(**{**cfg.__dict__, "optimizer": cfg.optimizer.__class__(
      learning_rate=1e30, warmup_steps=1)})
  with pytest.raises(FloatingPointError, match=r"non-finite between steps \d+ and \d+"):
    train(cfg, source, tiny_model(shakespeare_task.VOCAB_SIZE))


def test_packed_rows_need_document_masks(tmp_path):
  """Rows that pack two documents must not train with unmasked attention (they would see
  each other); the trainer stops at the first such batch and names the rows."""
  tokens = np.random.default_rng(0).integers(3, 200, (8, 64)).astype(np.int32)
  segments = np.repeat(np.array([[1] * 32 + [2] * 32], np.int32), 8, axis=0)
  segments[1:] = 1  # only row 0 is packed
  batch = {"decoder_target_tokens": tokens, "decoder_segment_ids": segments,
           "decoder_positions": np.tile(np.arange(64, dtype=np.int32), (8, 1))}
  cfg = small_config(tmp_path, steps=4, mesh=MeshConfig(data=8), seq_len=64,
                     step=StepConfig(loss_chunk=16, document_masking=False))
  with pytest.raises(ValueError, match=r"batch 0: rows \[0\] pack 2 documents"):
    train(cfg, IterableSource(lambda: [batch] * 4), tiny_model(shakespeare_task.VOCAB_SIZE))
