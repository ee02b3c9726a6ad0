"""Launch scripts: --dry-run commands, and (slow) the TPU worker command and `--local-processes` run
as real 2-process jobs on the CPU, against one process."""

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from longjax.train import launch, mesh
from tests.helpers.training import logged

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["--", "--gin_file=gin/experiments/tiny_synthetic.gin", "--gin.MODEL_DIR='gs://b/run'"]


def _run(script, *args):
  return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True,
                        text=True, check=False)


def test_tpu_dry_run_prints_every_step():
  out = _run("experiments/tpu/launch.py", "--name", "lj", "--zone", "us-east5-a",
             "--accelerator", "v5p-16", "--dry-run", *TRAIN)
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith("+ ")]
  assert "tpu-vm create lj" in lines[0] and "--accelerator-type v5p-16" in lines[0]
  assert any("tpu-vm scp" in l and "--worker=all" in l for l in lines)
  install, train = lines[-2], lines[-1]
  assert "--worker=all" in install and "pip install" in install and "jax[tpu]" in install
  assert "--worker=all" in train and "LONGJAX_DISTRIBUTED=1" in train
  assert "python -m longjax.train" in train and "tiny_synthetic.gin" in train


def test_tpu_rejects_unknown_accelerator():
  out = _run("experiments/tpu/launch.py", "--name", "lj", "--zone", "z", "--accelerator",
             "v5e-8", "--dry-run", *TRAIN)
  assert out.returncode != 0 and "v5litepod" in out.stderr


def test_gpu_dry_run_local_and_remote():
  local = _run("experiments/gpu/launch.py", "--dry-run", *TRAIN)
  assert local.returncode == 0 and "XLA_PYTHON_CLIENT_MEM_FRACTION=0.95" in local.stdout
  remote = _run("experiments/gpu/launch.py", "--dry-run", "--host", "box", *TRAIN)
  assert remote.returncode == 0 and "ssh box" in remote.stdout and "scp" in remote.stdout


def test_no_fixed_tmp_tarball_and_quoted_arguments():
  """A fixed /tmp/longjax-src.tar.gz can be pre-created or a link on a shared host; --python and
  --jax-extra go into shell strings, so they must arrive quoted (one word, not a command)."""
  gpu = _run("experiments/gpu/launch.py", "--dry-run", "--host", "box", "--jax-extra",
             "cuda12]' ; touch /tmp/pwned ; '", *TRAIN)
  tpu = _run("experiments/tpu/launch.py", "--name", "lj", "--zone", "z", "--accelerator",
             "v5p-16", "--dry-run", *TRAIN)
  for out in (gpu, tpu):
    assert out.returncode == 0, out.stderr
    assert "/tmp/longjax-src.tar.gz" not in out.stdout and "longjax-launch-" in out.stdout
  install = next(l for l in gpu.stdout.splitlines() if "pip install" in l)
  words = shlex.split(shlex.split(install[2:])[-1])  # as the remote shell reads them
  assert "jax[cuda12]' ; touch /tmp/pwned ; ']" in words and "touch" not in words
  local = _run("experiments/gpu/launch.py", "--dry-run", "--python", "py thon; echo hi", *TRAIN)
  script = shlex.split(local.stdout.splitlines()[0][2:])[-1]
  assert "'py thon; echo hi' -m longjax.train" in script


def test_local_processes_must_divide_the_devices():
  out = subprocess.run([sys.executable, "-m", "longjax.train", "--local-processes", "3",
                        "--gin_file=gin/experiments/tiny_synthetic.gin"], cwd=REPO,
                       capture_output=True, text=True, check=False)
  assert out.returncode == 2
  assert "--local-devices (8) must be a multiple of --local-processes (3)" in out.stderr


def test_worker_env_replaces_the_device_count():
  env = launch.worker_env(coordinator="localhost:1", num_processes=2, process_id=1,
                          cpu_devices=4, xla_flags="--a=1 --xla_force_host_platform_device_count=8")
  assert env["XLA_FLAGS"] == "--a=1 --xla_force_host_platform_device_count=4"
  assert env["JAX_PROCESS_ID"] == "1" and env["JAX_PLATFORMS"] == "cpu"
  assert launch.worker_env() == {"LONGJAX_DISTRIBUTED": "1"}


TINY = ["--gin_file=gin/experiments/tiny_synthetic.gin", "--gin.TRAIN_STEPS=3"]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
  """The tiny synthetic experiment, 3 steps, as one process of 8 CPU devices (the reference)."""
  model = tmp_path_factory.mktemp("one") / "run"
  out = subprocess.run([sys.executable, "-m", "longjax.train", *TINY,
                        f"--gin.MODEL_DIR='{model}'"], cwd=REPO, capture_output=True, text=True,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return model


def _assert_same_losses(got, want) -> None:
  got, want = logged(got), logged(want)
  assert sorted(got) == sorted(want) == [1, 2, 3]
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose([got[s][key] for s in got], [want[s][key] for s in got],
                               rtol=1e-4, err_msg=key)


@pytest.mark.slow
def test_cli_local_processes_trains_as_one_process(one_process_run, tmp_path):
  """`python -m longjax.train --local-processes 2`: one job of 2 x 4 devices, same losses."""
  out = subprocess.run([sys.executable, "-m", "longjax.train", "--local-processes", "2", *TINY,
                        f"--gin.MODEL_DIR='{tmp_path}'"], cwd=REPO, capture_output=True,
                       text=True, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "process 1 of 2, 4 local / 8 global devices" in out.stderr
  _assert_same_losses(tmp_path, one_process_run)


@pytest.mark.slow
def test_tpu_worker_command_runs_a_two_host_job(one_process_run, tmp_path):
  """The TPU launcher's worker command and environment, with `tpu-vm ssh --worker=all` replaced
  by two local processes (given what the TPU VM's metadata gives JAX: the coordinator and each
  worker's id, with 4 CPU devices each) and the install step by a ~/longjax holding this
  checkout: one 8-device job with the losses of one process."""
  tpu = _load("experiments/tpu/launch.py")
  model = tmp_path / "run"
  args = tpu.parse_args(["--name", "lj", "--zone", "z", "--accelerator", "v5p-16", "--", *TINY,
                         f"--gin.MODEL_DIR='{model}'"])
  ssh, may_fail = tpu.commands(args, str(tmp_path / "src.tar.gz"))[-1]
  assert ssh[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--worker=all" in ssh
  assert not may_fail
  checkout = tmp_path / "home" / "longjax"
  (checkout / ".venv" / "bin").mkdir(parents=True)
  for entry in ("longjax", "gin", "configs"):
    (checkout / entry).symlink_to(REPO / entry)
  python = checkout / ".venv" / "bin" / "python"
  python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
  python.chmod(0o755)
  procs = launch.start_local(2, 8, ["bash", "-c", ssh[-1]], log_dir=tmp_path,
                             env={**os.environ, "HOME": str(tmp_path / "home")})
  code = launch.wait_local(procs, grace_s=10)
  assert code == 0, (tmp_path / "process_1.log").read_text()[-3000:]
  assert "LONGJAX_DISTRIBUTED=1" in ssh[-1]
  _assert_same_losses(model, one_process_run)


def _load(script: str):
  spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / script)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_coordinator_without_process_count_and_id_is_named(monkeypatch):
  """On the CPU too, an explicit coordinator is honoured, so a half-set environment is an error
  naming what is missing (and not a silent one-process run)."""
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "localhost:1")
  monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
  monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
  with pytest.raises(ValueError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID must be too"):
    mesh.maybe_initialize_distributed()
