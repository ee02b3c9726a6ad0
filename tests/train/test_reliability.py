"""Faults around training: failed saves, Ctrl-C, damaged checkpoints, replayed metrics.

Each test reproduces a case of issue #18 (docs/reliability.md). Hangs are caught with a
subprocess timeout; the rest run in-process on the tiny model with synthetic batches.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

from longjax.train.checkpoint import CheckpointConfig
from longjax.train.data import IterableSource, SyntheticSource
from longjax.train.mesh import MeshConfig
from longjax.train.metrics import MetricWriter
from longjax.train.trainer import train
from tests.helpers.training import small_config, tiny_model

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("fault_driver.py")


def _driver(model_dir: Path, steps: int, **env: str) -> list[str]:
  """The fault driver's command; as root, without the capability that ignores file modes."""
  command = [sys.executable, str(DRIVER), str(model_dir), str(steps)]
  if os.geteuid() == 0 and env.get("READONLY_AT"):
    if not shutil.which("setpriv"):
      pytest.skip("root ignores file modes and setpriv is missing")
    command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] + command
  return command


def _env(**extra: str) -> dict[str, str]:
  return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **extra}


def _steps(model_dir: Path) -> list[int]:
  return [json.loads(line)["step"]
          for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


def test_failed_save_ends_the_process(tmp_path):
  """MODEL_DIR/checkpoints turns read-only once training started (the input pipeline does it
  while step 1 compiles), before the first save: an error and an exit, not a hang."""
  env = _env(READONLY_AT="2")
  try:
    run = subprocess.run(_driver(tmp_path, 10, **env), cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=240)
  except subprocess.TimeoutExpired:
    pytest.fail("the run hung after a failed checkpoint save")
  finally:
    os.chmod(tmp_path / "checkpoints", 0o755)
  assert run.returncode != 0
  assert "DONE" not in run.stdout
  last = run.stderr.strip().splitlines()[-1]  # the error (the probe's, or orbax's if it came first)
  assert last.startswith("PermissionError") and f"{tmp_path}/checkpoints" in last, last


def test_sigint_saves_then_exits(tmp_path):
  """Ctrl-C is handled like SIGTERM: the step finishes, a checkpoint is saved, exit 0."""
  env = _env(SLOW_BATCHES="0.5")
  run = subprocess.Popen(_driver(tmp_path, 40), cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not ((tmp_path / "metrics.jsonl").is_file() and len(_steps(tmp_path)) >= 3):
    assert run.poll() is None, run.stderr.read()[-3000:]
    assert time.time() < deadline, "no step was logged"
    time.sleep(0.1)
  run.send_signal(signal.SIGINT)
  out, err = run.communicate(timeout=240)
  assert run.returncode == 0, err[-3000:]
  assert "DONE" in out and "preempted at step" in err
  names = [p.name for p in (tmp_path / "checkpoints").iterdir()]
  assert not [n for n in names if "tmp" in n], names
  assert max(int(n) for n in names if n.isdigit()) == _steps(tmp_path)[-1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A run of 6 steps with checkpoints at 2, 4 and 6 (and a persistent compile cache)."""
  root = tmp_path_factory.mktemp("trained")
  old = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", str(root / "jax_cache"))
  train(_config(root / "run", 6), SyntheticSource(259, 32), tiny_model())
  yield root / "run"
  jax.config.update("jax_compilation_cache_dir", old)


def _config(model_dir: Path, steps: int):
  return small_config(model_dir, steps=steps, mesh=MeshConfig(data=8), seq_len=32,
                      checkpoint=CheckpointConfig(every=2))


def _truncate_largest(step_dir: Path) -> None:
  data = max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
             key=lambda p: p.stat().st_size)
  data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])


DAMAGES = {
    "truncated data file": _truncate_largest,
    "state/_METADATA deleted": lambda d: (d / "state" / "_METADATA").unlink(),
    "data/metadata deleted": lambda d: (d / "data" / "metadata").unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_latest_checkpoint_falls_back(trained, tmp_path, damage, caplog):
  model_dir = tmp_path / "run"
  shutil.copytree(trained, model_dir)
  DAMAGES[damage](model_dir / "checkpoints" / "6")
  caplog.set_level("INFO", logger="longjax.train")
  train(_config(model_dir, 8), SyntheticSource(259, 32), tiny_model())
  assert "resumed from step 4 (data position 4)" in caplog.text
  assert "skipped step 6" in caplog.text
  assert [p.name.split("-")[0] for p in (tmp_path / "run" / "checkpoints.damaged").iterdir()] \
      == ["6"]
  assert _steps(model_dir) == list(range(1, 9))  # steps 5 and 6 logged once, by the replay
  assert (model_dir / "checkpoints" / "8").is_dir()


def test_every_checkpoint_failing_is_an_error_that_moves_nothing(trained, tmp_path):
  model_dir = tmp_path / "run"
  shutil.copytree(trained, model_dir)
  for step in (2, 4, 6):
    (model_dir / "checkpoints" / str(step) / "data" / "metadata").unlink()
  with pytest.raises(ValueError, match=r"restores: step 6: .*; step 4: .*; step 2: "):
    train(_config(model_dir, 8), SyntheticSource(259, 32), tiny_model())
  assert sorted(p.name for p in (model_dir / "checkpoints").iterdir() if p.name.isdigit()) \
      == ["2", "4", "6"]


def test_metric_records_past_the_resumed_step_are_dropped(tmp_path):
  """A kill after step 7 with the last checkpoint at 5: steps 6-7 run again, logged once."""
  jsonl = tmp_path / "metrics.jsonl"
  jsonl.write_text("".join(json.dumps({"step": s, "loss": 1.0}) + "\n" for s in range(1, 8))
                   + '{"step": 8, "lo')  # torn by the kill
  MetricWriter(tmp_path, after_step=5).close()
  assert _steps(tmp_path) == [1, 2, 3, 4, 5]


def test_unwritable_checkpoint_directory_fails_before_training(tmp_path):
  (tmp_path / "checkpoints").write_text("a file where the directory should be")
  with pytest.raises(OSError, match="checkpoints"):
    train(_config(tmp_path, 4), SyntheticSource(259, 32), tiny_model())
  assert not (tmp_path / "metrics.jsonl").exists()


def test_data_running_out_is_a_clear_error(tmp_path):
  """An empty or short Task ends in a ValueError naming the step, not a bare StopIteration."""
  with pytest.raises(ValueError, match="the data ran out at step 1"):
    train(_config(tmp_path, 4), IterableSource(lambda: []), tiny_model())
