"""Launch `python -m longjax.train` on one multi-GPU host (local, or over ssh with --host).

One process drives every GPU of the host (JAX's single-controller model); the mesh in the gin
file spreads the devices over data/fsdp/sequence/tensor. With --host the checkout is copied
(`git archive` of HEAD) and installed into a venv there first. The environment it sets:
XLA_PYTHON_CLIENT_MEM_FRACTION (JAX takes 75% of GPU memory by default; long sequences need
more) and the latency-hiding scheduler, which overlaps ring-attention permutes with compute.

  python experiments/gpu/launch.py --dry-run -- \\
      --gin_file=gin/experiments/<exp>.gin --gin.MODEL_DIR="'/data/runs/run1'"
  python experiments/gpu/launch.py --host gpu-box-1 --jax-extra cuda12 -- --gin_file=...

Boxes without TensorFlow train from numpy batches (gin: run.source = @synthetic_batches() or a
source of your own); `gin-config` is the only package the entry point adds to jax/flax/optax/orbax.
"""

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from longjax.train.launch import train_command  # noqa: E402  (stdlib only)

ENV = {
    "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.95",
    "XLA_FLAGS": "--xla_gpu_enable_latency_hiding_scheduler=true",
    "NCCL_NVLS_ENABLE": "0",
}


def commands(args, tarball: str) -> list[list[str]]:
  """The commands in order; `tarball` is a path in a directory private to this run (a fixed
  /tmp name could be pre-created or linked elsewhere by another user of the host)."""
  if not args.host:
    return [["bash", "-c", f"cd {shlex.quote(str(REPO))} && "
             + train_command(args.python, args.train_args, ENV)]]
  install = " && ".join([
      "rm -rf ~/longjax && mkdir -p ~/longjax && tar xzf ~/longjax-src.tar.gz -C ~/longjax",
      "cd ~/longjax && python3 -m venv .venv && .venv/bin/pip install -q -U pip",
      f".venv/bin/pip install -q {shlex.quote(f'jax[{args.jax_extra}]')} flax optax "
      "orbax-checkpoint gin-config etils safetensors ml_dtypes transformers tokenizers",
      ".venv/bin/pip install -q --no-deps -e ."])
  out = [["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", tarball, "HEAD"],
         ["scp", tarball, f"{args.host}:~/longjax-src.tar.gz"]]
  if not args.skip_install:
    out.append(["ssh", args.host, install])
  out.append(["ssh", args.host,
              "cd ~/longjax && " + train_command(".venv/bin/python", args.train_args, ENV)])
  return out


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--host", default=None, help="ssh target; default: this machine")
  parser.add_argument("--python", default=sys.executable, help="local interpreter")
  parser.add_argument("--jax-extra", default="cuda12", help="pip extra of jax on --host")
  parser.add_argument("--skip-install", action="store_true")
  parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  parser.add_argument("train_args", nargs=argparse.REMAINDER,
                      help="after `--`: arguments of python -m longjax.train")
  args = parser.parse_args()
  if args.train_args[:1] == ["--"]:
    args.train_args = args.train_args[1:]
  if not any(a.startswith("--gin_file") for a in args.train_args):
    parser.error("give the training arguments after `--`, at least one --gin_file=...")
  with tempfile.TemporaryDirectory(prefix="longjax-launch-") as tmp:
    for cmd in commands(args, f"{tmp}/longjax-src.tar.gz"):
      print("+ " + shlex.join(cmd), flush=True)
      if not args.dry_run and (code := subprocess.call(cmd)):
        print(f"command failed with exit code {code}", file=sys.stderr)
        return code
  return 0


if __name__ == "__main__":
  sys.exit(main())
