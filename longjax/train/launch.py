"""What every launcher gives a training worker (its environment and command line), and local
multi-process runs.

A multi-host job runs the same `python -m longjax.train ...` on every worker; only the worker's
environment says which process it is. `worker_env` builds that environment for all launchers:
experiments/tpu/launch.py (JAX finds the TPU slice's coordinator itself), experiments/gpu/launch.py
and `python -m longjax.train --local-processes N` (explicit coordinator, process count and id).
`start_local` runs N processes on this machine, each with `devices / N` simulated CPU devices,
which together form one job of `devices` devices: the pod's process layout on one CPU.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def worker_env(*, coordinator: str | None = None, num_processes: int = 1, process_id: int = 0,
               cpu_devices: int | None = None, xla_flags: str = "") -> dict[str, str]:
  """The environment variables of one training worker.

  Without `coordinator`: LONGJAX_DISTRIBUTED=1, and `jax.distributed.initialize()` discovers the
  job (TPU VM metadata, SLURM, Open MPI). With it: the explicit coordinator address, process
  count and this worker's id, which `mesh.maybe_initialize_distributed` honours on every
  platform. `cpu_devices`: run on the CPU with that many simulated devices (replacing any device
  count in `xla_flags`, the worker's other XLA flags).
  """
  if coordinator is None:
    env = {"LONGJAX_DISTRIBUTED": "1"}
  else:
    if not 0 <= process_id < num_processes:
      raise ValueError(f"process_id ({process_id}) must be in [0, {num_processes})")
    env = {"JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": str(num_processes),
           "JAX_PROCESS_ID": str(process_id)}
  if cpu_devices is not None:
    flags = re.sub(rf"{DEVICE_COUNT_FLAG}=\S*", "", xla_flags).split()
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS=" ".join([*flags, f"{DEVICE_COUNT_FLAG}={cpu_devices}"]))
  return env


def train_command(python: str, train_args: Sequence[str], env: Mapping[str, str]) -> str:
  """One shell line `K=V ... python -m longjax.train ARGS`, every part quoted for the shell."""
  return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.quote(python),
                   "-m", "longjax.train", *map(shlex.quote, train_args)])


def split_devices(num_processes: int, devices: int) -> int:
  """Devices per process, or a ValueError naming the two counts when they do not divide."""
  if num_processes < 1 or devices < 1:
    raise ValueError(f"--local-processes ({num_processes}) and --local-devices ({devices}) must "
                     "be positive")
  if devices % num_processes:
    raise ValueError(f"--local-devices ({devices}) must be a multiple of --local-processes "
                     f"({num_processes}): every process gets the same number of CPU devices")
  return devices // num_processes


def free_port() -> int:
  """A TCP port on localhost that nothing listens on now (for the coordinator)."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start_local(num_processes: int, devices: int, argv: Sequence[str], *,
                env: Mapping[str, str] | None = None,
                log_dir: str | os.PathLike | None = None) -> list[subprocess.Popen]:
  """Starts `argv` as `num_processes` processes of one CPU job of `devices` devices.

  Each runs in its own session, so that a Ctrl-C in the terminal reaches the launcher only
  (`wait_local` turns it into one SIGTERM per process; the job stops at one agreed step).
  `env` replaces this process's environment; with `log_dir`, process i writes its output to
  `log_dir/process_<i>.log` instead of the terminal.
  """
  per_process = split_devices(num_processes, devices)
  base = dict(os.environ if env is None else env)
  coordinator = f"localhost:{free_port()}"
  procs = []
  for i in range(num_processes):
    out = None if log_dir is None else open(os.path.join(log_dir, f"process_{i}.log"), "wb")
    procs.append(subprocess.Popen(
        list(argv), start_new_session=True, stdout=out, stderr=subprocess.STDOUT if out else None,
        env={**base, **worker_env(coordinator=coordinator, num_processes=num_processes,
                                  process_id=i, cpu_devices=per_process,
                                  xla_flags=base.get("XLA_FLAGS", ""))}))
    if out is not None:
      out.close()  # the child holds its own descriptor
  return procs


def wait_local(procs: Sequence[subprocess.Popen], grace_s: float = 60.0) -> int:
  """Waits for every process; returns the first non-zero exit code, else 0.

  SIGINT/SIGTERM to the launcher are passed on as SIGTERM (a preemption: save, then exit). When
  one process fails, the others (which would wait for it in a collective) get `grace_s` seconds
  to notice, then are killed.
  """
  def forward(*_):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)
  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    failed_at = None
    while any(p.poll() is None for p in procs):
      if failed_at is None and any(p.poll() for p in procs):
        failed_at = time.monotonic()
      if failed_at is not None and time.monotonic() - failed_at > grace_s:
        for p in procs:
          if p.poll() is None:
            p.kill()
      time.sleep(0.2)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
  return next((p.returncode for p in procs if p.returncode), 0)


def run_local(num_processes: int, devices: int, train_args: Sequence[str]) -> int:
  """`python -m longjax.train TRAIN_ARGS` as a local job of `num_processes` CPU processes."""
  return wait_local(start_local(num_processes, devices,
                                [sys.executable, "-m", "longjax.train", *train_args]))
