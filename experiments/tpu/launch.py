"""Launch `python -m longjax.train` on a Cloud TPU VM slice (v4, v5e, v5p, v6e), every worker.

Creates the TPU VM if it does not exist (or reuses it), copies this checkout to every worker
(`git archive` of HEAD, so uncommitted changes do not travel), installs it into a venv on every
worker, and runs the same training command on all workers at once with
`gcloud compute tpus tpu-vm ssh --worker=all`. Each worker calls `jax.distributed.initialize()`
(LONGJAX_DISTRIBUTED=1, from `longjax.train.launch.worker_env`, which every launcher shares).
Point MODEL_DIR at GCS (gs://...): every worker writes its checkpoint shards there; data comes
from a SeqIO Task whose files (or cache) are on GCS too.

  python experiments/tpu/launch.py --name lj-v5p --zone us-east5-a --accelerator v5p-16 \\
      --dry-run -- --gin_file=gin/experiments/<exp>.gin --gin.MODEL_DIR="'gs://bucket/run1'"

--dry-run prints every command instead of running it. Arguments after `--` go to
`python -m longjax.train` unchanged.
"""

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from longjax.train.launch import train_command, worker_env  # noqa: E402  (stdlib only)

# Default runtime images per generation (gcloud compute tpus versions list shows all of them).
RUNTIME = {"v4": "tpu-ubuntu2204-base", "v5litepod": "v2-alpha-tpuv5-lite",
           "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
LIBTPU_INDEX = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _generation(accelerator: str) -> str:
  for gen in RUNTIME:
    if accelerator.startswith(gen):
      return gen
  if accelerator.startswith("v5e"):
    raise SystemExit(f"--accelerator {accelerator}: v5e slices are named v5litepod-N")
  raise SystemExit(f"--accelerator {accelerator!r}: expected one of {sorted(RUNTIME)} "
                   "followed by -<cores or chips>, e.g. v4-32, v5litepod-16, v5p-16, v6e-8")


def worker_command(train_args: list[str]) -> str:
  """What every worker runs, in the checkout that the install step left in ~/longjax."""
  return "cd ~/longjax && " + train_command(".venv/bin/python", train_args, worker_env())


def commands(args, tarball: str) -> list[tuple[list[str], bool]]:
  """The gcloud commands in order; the bool says whether a failure may be ignored. `tarball`
  is a path in a directory private to this run (not a fixed /tmp name another user could
  pre-create or link)."""
  where = ["--zone", args.zone] + (["--project", args.project] if args.project else [])
  tpu = ["gcloud", "compute", "tpus", "tpu-vm"]
  version = args.version or RUNTIME[_generation(args.accelerator)]
  create = tpu + ["create", args.name, *where, "--accelerator-type", args.accelerator,
                  "--version", version] + (["--spot"] if args.spot else [])
  install = " && ".join([
      "rm -rf ~/longjax && mkdir -p ~/longjax && tar xzf ~/longjax-src.tar.gz -C ~/longjax",
      "cd ~/longjax && python3 -m venv .venv && .venv/bin/pip install -q -U pip",
      f".venv/bin/pip install -q torch --index-url {TORCH_CPU_INDEX}",
      f".venv/bin/pip install -q -r requirements.txt 'jax[tpu]' -f {LIBTPU_INDEX}",
      ".venv/bin/pip install -q --no-deps -e ."])
  train = worker_command(args.train_args)
  if args.detach:
    train = f"nohup bash -c {shlex.quote(train)} > ~/longjax-train.log 2>&1 &"
  ssh = tpu + ["ssh", args.name, *where, "--worker=all", "--command"]
  out = []
  if not args.reuse:
    out.append((create, True))  # fails harmlessly if the VM exists; describe checks below
  out += [
      (tpu + ["describe", args.name, *where, "--format=value(state)"], False),
      (["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", tarball, "HEAD"], False),
      (tpu + ["scp", tarball, f"{args.name}:~/longjax-src.tar.gz", *where, "--worker=all"],
       False),
  ]
  if not args.skip_install:
    out.append((ssh + [install], False))
  out.append((ssh + [train], False))
  return out


def parse_args(argv: list[str]) -> argparse.Namespace:
  """The launcher's arguments; exits with a usage error naming what is missing or wrong."""
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--name", required=True, help="TPU VM name")
  parser.add_argument("--zone", required=True)
  parser.add_argument("--project", default=None)
  parser.add_argument("--accelerator", required=True,
                      help="v4-8 / v4-32 / v5litepod-16 / v5p-16 / v6e-8 ...")
  parser.add_argument("--version", default=None, help="TPU runtime image (default per generation)")
  parser.add_argument("--spot", action="store_true", help="create a preemptible (spot) VM")
  parser.add_argument("--reuse", action="store_true", help="the VM exists: do not try to create it")
  parser.add_argument("--skip-install", action="store_true", help="code only (venv already there)")
  parser.add_argument("--detach", action="store_true",
                      help="run training in the background on every worker "
                           "(log in ~/longjax-train.log)")
  parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  parser.add_argument("train_args", nargs=argparse.REMAINDER,
                      help="after `--`: arguments of python -m longjax.train")
  args = parser.parse_args(argv)
  if args.train_args[:1] == ["--"]:
    args.train_args = args.train_args[1:]
  if not any(a.startswith("--gin_file") for a in args.train_args):
    parser.error("give the training arguments after `--`, at least one --gin_file=...")
  _generation(args.accelerator)
  return args


def main() -> int:
  args = parse_args(sys.argv[1:])
  with tempfile.TemporaryDirectory(prefix="longjax-launch-") as tmp:
    for cmd, may_fail in commands(args, f"{tmp}/longjax-src.tar.gz"):
      print("+ " + shlex.join(cmd), flush=True)
      if args.dry_run:
        continue
      code = subprocess.call(cmd)
      if code and not may_fail:
        print(f"command failed with exit code {code}", file=sys.stderr)
        return code
  return 0


if __name__ == "__main__":
  sys.exit(main())
