"""Where a training step's GPU time goes: device-kernel time from a `jax.profiler` trace, by kind.

Kinds, matched on the kernel's name: attention (cuDNN's fused attention,
flash kernels), matmul (cuBLAS / cuBLASLt / CUTLASS / Triton GEMMs), collective (NCCL), copy
(memcpy / memset) and other (XLA's fusions: elementwise ops, norms, the loss, the optimizer).
Kernel time is summed per kind over every stream; busy time is the union of all kernel intervals,
so `wall - busy` is the time the GPU ran no kernel at all (launch gaps, host work, waits). The
record also keeps the heaviest kernels by name, so the kinds can be re-drawn offline.

Used by `experiments/bench/train.py --profile`; on the CPU a trace holds no device kernels and
the breakdown says so.
"""

import dataclasses
import re
from pathlib import Path
from typing import Iterable

KINDS = (
    ("attention", re.compile(r"fmha|sdpa|flash|attention", re.I)),
    ("matmul", re.compile(r"gemm|nvjet|cublas|cutlass|xmma|gemv", re.I)),
    ("collective", re.compile(r"nccl|all-?reduce|all-?gather|reduce-?scatter|collective", re.I)),
    ("copy", re.compile(r"memcpy|memset", re.I)),
)
TOP = 25  # heaviest kernels kept by name


@dataclasses.dataclass(frozen=True)
class Kernel:
  """One kernel execution on a device stream."""
  name: str
  start_ns: float
  duration_ns: float


def kind(kernel: Kernel) -> str:
  """The kind of a kernel, from its name (the first pattern of KINDS that matches)."""
  for name, pattern in KINDS:
    if pattern.search(kernel.name):
      return name
  return "other"


def device_kernels(xplane: Path) -> tuple[list[Kernel], list[str]]:
  """Every kernel on the GPU planes' stream lines of an `.xplane.pb` trace, and the names of
  every GPU plane's lines (what a trace of another layout would need matched instead)."""
  from jax.profiler import ProfileData  # pylint: disable=import-outside-toplevel
  kernels, lines = [], []
  for plane in ProfileData.from_file(str(xplane)).planes:
    if not plane.name.startswith("/device:GPU"):
      continue
    for line in plane.lines:
      lines.append(f"{plane.name} {line.name}")
      if line.name.startswith("Stream"):
        kernels += [Kernel(e.name, e.start_ns, e.duration_ns) for e in line.events]
  return kernels, lines


def _union_ns(kernels: Iterable[Kernel]) -> float:
  """Length of the union of the kernels' [start, start + duration) intervals."""
  total, end = 0.0, float("-inf")
  for k in sorted(kernels, key=lambda k: k.start_ns):
    stop = k.start_ns + k.duration_ns
    if k.start_ns >= end:
      total += k.duration_ns
    elif stop > end:
      total += stop - end
    end = max(end, stop)
  return total


def breakdown(kernels: list[Kernel], wall_s: float) -> dict:
  """Seconds and share of the step's wall time per kind, busy and idle time, top kernels."""
  if not kernels:
    return {"wall_s": wall_s, "kernels": 0, "note": "no device kernels in the trace (CPU?)"}
  seconds = {name: 0.0 for name, _ in KINDS} | {"other": 0.0}
  by_name: dict[str, list] = {}
  for k in kernels:
    seconds[kind(k)] += k.duration_ns / 1e9
    entry = by_name.setdefault(k.name, [0, 0.0, kind(k)])
    entry[0] += 1
    entry[1] += k.duration_ns / 1e9
  busy = _union_ns(kernels) / 1e9
  top = sorted(by_name.items(), key=lambda item: -item[1][1])[:TOP]
  return {"wall_s": wall_s, "kernels": len(kernels), "busy_s": busy,
          "idle_s": max(wall_s - busy, 0.0), "seconds": seconds,
          "share_of_wall": {k: v / wall_s for k, v in seconds.items()},
          "top": [{"name": n[:160], "calls": c, "seconds": s, "kind": kd}
                  for n, (c, s, kd) in top]}


def latest_xplane(directory: Path) -> Path:
  """The newest `.xplane.pb` under a trace directory."""
  files = sorted(directory.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
  if not files:
    raise FileNotFoundError(f"no .xplane.pb under {directory}")
  return files[-1]


def summary(profile: dict) -> str:
  """One line: seconds and share of wall per kind, and idle time."""
  if not profile.get("kernels"):
    return profile.get("note", "no kernels")
  parts = [f"{k} {s:.3f} s ({100 * profile['share_of_wall'][k]:.1f}%)"
           for k, s in profile["seconds"].items() if s > 0]
  return ", ".join(parts) + f"; idle {profile['idle_s']:.3f} s of {profile['wall_s']:.3f} s"
