"""Launch scripts in --dry-run mode: every command printed, the same command on all TPU workers."""

import shlex
import subprocess
import sys
from pathlib import Path

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
