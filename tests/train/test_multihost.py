"""Multi-host training on one machine: 2 processes x 4 CPU devices against 1 process x 8.

Each 2-process job runs `tests/train/multihost_driver.py` (the real trainer, the tiny float32
model) through `longjax.train.launch.start_local`, the launcher of `--local-processes`; the
reference is the same driver in this process with conftest's 8 devices. Losses and gradient
norms come from MODEL_DIR/metrics.jsonl, rows from the CRCs each process's source was asked for.
"""

import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from longjax.train import launch
from tests.helpers.multihost import (assert_rows_split, host_rows, logs_of, row_crcs, run_job,
                                     start_job, write_spec)
from tests.helpers.training import logged
from tests.train import multihost_driver



def _one_process(tmp: Path, name: str, **kw) -> tuple[dict, multihost_driver.RowRecorder]:
  """The reference: the driver in this process (conftest's 8 CPU devices)."""
  spec = write_spec(tmp, name, **kw)
  return spec, multihost_driver.run(spec)


def _assert_same_run(got_dir, want_dir, steps) -> None:
  got, want = logged(got_dir), logged(want_dir)
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose([got[s][key] for s in steps], [want[s][key] for s in steps],
                               rtol=2e-5, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 1 x 8 reference and the 2 x 4 job: 4 steps, mesh data=2 x sequence=4, checkpoints
  every 2 steps."""
  tmp = tmp_path_factory.mktemp("multihost")
  ref, recorder = _one_process(tmp, "ref", checkpoint_every=2)
  two = run_job(tmp, "two", checkpoint_every=2)
  return tmp, ref, recorder, two


def test_two_processes_train_as_one(runs):
  """Same losses and gradient norms; each process read only its rows, together the batch."""
  _, ref, recorder, two = runs
  _assert_same_run(two["model_dir"], ref["model_dir"], range(1, 5))
  assert_rows_split(host_rows(two), recorder.rows, range(4))
  state = Path(two["model_dir"]) / "checkpoints" / "4" / "state"
  assert {p.name for p in state.glob("ocdbt.process_*")} == {"ocdbt.process_0",
                                                             "ocdbt.process_1"}


def _resume_copy(tmp: Path, src: str, name: str) -> Path:
  """A copy of run `src` whose newest checkpoint is step 2 (step 4's removed)."""
  dst = tmp / name
  shutil.copytree(src, dst)
  shutil.rmtree(dst / "checkpoints" / "4")
  return dst


@pytest.mark.slow
def test_checkpoint_moves_between_two_processes_and_one(runs):
  """Step 2 written by both processes continues in 1 x 8, and 1 x 8's step 2 in 2 x 4, with the
  uninterrupted run's losses at steps 3 and 4 (orbax reshards on restore)."""
  tmp, ref, _, two = runs
  one_from_two = _resume_copy(tmp, two["model_dir"], "one_from_two")
  _one_process(tmp, "one_from_two", checkpoint_every=2)
  _assert_same_run(one_from_two, ref["model_dir"], (3, 4))
  two_from_one = _resume_copy(tmp, ref["model_dir"], "two_from_one")
  run_job(tmp, "two_from_one", checkpoint_every=2)
  _assert_same_run(two_from_one, ref["model_dir"], (3, 4))


@pytest.mark.slow
@pytest.mark.parametrize("mesh", [{"fsdp": 2, "sequence": 4, "data": 1},
                                  {"data": 1, "sequence": 8}],
                         ids=["fsdp2_seq4", "seq8_ring_across_processes"])
def test_other_meshes_train_as_one(tmp_path, mesh):
  """fsdp=2 x sequence=4 (weights sharded across processes), and sequence=8, where the ring
  passes K/V blocks from one process to the other."""
  loss_chunk = {"loss_chunk": 8} if mesh["sequence"] == 8 else {}
  ref, _ = _one_process(tmp_path, "ref", steps=3, mesh=mesh, **loss_chunk)
  two = run_job(tmp_path, "two", steps=3, mesh=mesh, **loss_chunk)
  _assert_same_run(two["model_dir"], ref["model_dir"], range(1, 4))


def _wait_for_step(model_dir: Path, step: int, procs, timeout: float = 240) -> None:
  end = time.monotonic() + timeout
  while time.monotonic() < end and all(p.poll() is None for p in procs):
    if (model_dir / "metrics.jsonl").is_file() and max(logged(model_dir), default=0) >= step:
      return
    time.sleep(0.2)
  raise AssertionError(f"the job did not reach step {step}")


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
  """SIGTERM to process 1 only: both save the same step and exit 0; the restarted job continues
  with the uninterrupted 1 x 8 run's losses."""
  ref, _ = _one_process(tmp_path, "ref", steps=8)
  spec = write_spec(tmp_path, "job", steps=8, slow_batches=1.0)
  procs = start_job(tmp_path, "job")
  _wait_for_step(Path(spec["model_dir"]), 2, procs)
  procs[1].send_signal(signal.SIGTERM)
  try:
    code = launch.wait_local(procs, grace_s=10) if _within(procs, 180) else "hung"
  finally:
    for p in procs:
      p.kill()
  logs = logs_of(tmp_path, "job")
  assert code == 0 and [p.returncode for p in procs] == [0, 0], logs[1][-3000:]
  saved = [int(p.name) for p in (Path(spec["model_dir"]) / "checkpoints").iterdir()]
  assert len(saved) == 1 and 2 <= saved[0] < 8, saved
  for log in logs:
    assert f"preempted at step {saved[0]}" in log
  run_job(tmp_path, "job", steps=8)  # the restart, without delays
  _assert_same_run(spec["model_dir"], ref["model_dir"], range(saved[0] + 1, 9))


@pytest.mark.slow
def test_seqio_hosts_read_disjoint_rows(tmp_path):
  """The SeqIO source in a 2-host job: each host trains on its own shard's rows, and together
  they are the 2-host global batch (this host count's shards, read here in one process)."""
  spec = run_job(tmp_path, "seqio", steps=3, source="seqio")
  source = multihost_driver.make_source(spec)
  halves = [[b["decoder_target_tokens"] for _, b in zip(range(3), source.batches(
      start=0, rows=rows, global_batch=8))] for rows in (slice(0, 4), slice(4, 8))]
  global_rows = {b: row_crcs(halves[0][b]) + row_crcs(halves[1][b]) for b in range(3)}
  assert_rows_split(host_rows(spec), global_rows, range(3))


def _within(procs, seconds: float) -> bool:
  """Whether every process exits within `seconds` (a hung job is killed by the caller)."""
  end = time.monotonic() + seconds
  while time.monotonic() < end:
    if all(p.poll() is not None for p in procs):
      return True
    time.sleep(0.2)
  return False
