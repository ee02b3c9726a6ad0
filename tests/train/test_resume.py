"""Preemption and exact resume through the real CLI, in subprocesses.

Run A trains 10 steps uninterrupted. Run B is the same command: it gets SIGTERM after a few
steps, must save and exit 0, and when started again must produce exactly A's batches (CRC of the
targets) and losses for every step after the one it saved.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.training import logged

DRIVER = Path(__file__).with_name("cli_driver.py")
REPO = Path(__file__).resolve().parents[2]
STEPS = 10


def command(model_dir) -> list[str]:
  return [sys.executable, str(DRIVER), "--gin_file=gin/models/tiny.gin",
          "--gin_file=gin/runs/pretrain.gin", "--gin_file=gin/mesh/cpu_data2_seq4.gin",
          f"--gin.MODEL_DIR='{model_dir}'", f"--gin.TRAIN_STEPS={STEPS}",
          "--gin.MIXTURE_OR_TASK_NAME='longjax_test_shakespeare_bytes'",
          "--gin.TASK_FEATURE_LENGTHS={'targets': 64}", "--gin.BATCH_SIZE=8",
          "--gin.CHECKPOINT_EVERY=3", "--gin.WARMUP_STEPS=2", "--gin.LEARNING_RATE=0.01",
          "--gin.TrainConfig.log_every=1", "--gin.StepConfig.loss_chunk=16",
          "--gin.model_config.overrides={'vocab_size': 259, 'dtype': 'float32'}"]


def env() -> dict:
  return {**os.environ, "SLOW_BATCHES": "0.4", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_sigterm_then_restart_matches_uninterrupted_run(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  run_a = subprocess.Popen(command(a), cwd=REPO, env=env(), stderr=subprocess.PIPE, text=True)
  run_b = subprocess.Popen(command(b), cwd=REPO, env=env(), stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while not ((b / "metrics.jsonl").is_file() and len(logged(b)) >= 2):
    assert run_b.poll() is None, run_b.stderr.read()[-3000:]
    assert time.time() < deadline, "run B never logged two steps"
    time.sleep(0.1)
  run_b.send_signal(signal.SIGTERM)
  _, err_b = run_b.communicate(timeout=300)
  assert run_b.returncode == 0, err_b[-3000:]
  assert "preempted at step" in err_b
  saved = max(int(p.name) for p in (b / "checkpoints").iterdir() if p.name.isdigit())
  assert saved < STEPS, "run B finished before the signal arrived"

  restart = subprocess.run(command(b), cwd=REPO, env=env(), capture_output=True, text=True,
                           timeout=600)
  assert restart.returncode == 0, restart.stderr[-3000:]
  assert f"resumed from step {saved} (data position {saved})" in restart.stderr
  _, err_a = run_a.communicate(timeout=600)
  assert run_a.returncode == 0, err_a[-3000:]
  ref, got = logged(a), logged(b)
  assert sorted(got) == list(range(1, STEPS + 1))
  for step in range(saved + 1, STEPS + 1):
    assert got[step]["batch_crc"] == ref[step]["batch_crc"], step
    assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-6), step
