"""Helpers of the 2-process tests: run `tests/train/multihost_driver.py` as a local job of 2 x 4
CPU devices, read back each process's rows, and check that the hosts split the global batch."""

import json
import sys
import zlib
from pathlib import Path

import numpy as np

from longjax.train import launch

REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "train" / "multihost_driver.py"


def row_crcs(targets: np.ndarray) -> list[int]:
  """The CRC of each row of a [rows, S] array of target tokens (as int32)."""
  return [zlib.crc32(np.asarray(r, np.int32).tobytes()) for r in targets]


def write_spec(tmp: Path, name: str, **kw) -> dict:
  """`tmp/name.json`: a driver spec (synthetic data, mesh data=2 x sequence=4, 4 steps) + `kw`."""
  spec = {"model_dir": str(tmp / name), "steps": 4, "mesh": {"data": 2, "sequence": 4},
          "source": "synthetic", "rows_out": str(tmp / name / "rows"), **kw}
  (tmp / f"{name}.json").write_text(json.dumps(spec))
  return spec


def start_job(tmp: Path, name: str):
  """Starts the driver on `tmp/name.json` as 2 processes; logs in `tmp/name_logs/`."""
  logs = tmp / f"{name}_logs"
  logs.mkdir(exist_ok=True)
  return launch.start_local(2, 8, [sys.executable, str(DRIVER), str(tmp / f"{name}.json")],
                            log_dir=logs)


def logs_of(tmp: Path, name: str) -> list[str]:
  return [(tmp / f"{name}_logs" / f"process_{i}.log").read_text() for i in (0, 1)]


def run_job(tmp: Path, name: str, **kw) -> dict:
  """Runs a 2 x 4 job of the driver; returns its spec after checking both processes exited 0."""
  spec = write_spec(tmp, name, **kw)
  procs = start_job(tmp, name)
  code = launch.wait_local(procs, grace_s=10)
  assert code == 0 and [p.returncode for p in procs] == [0, 0], "".join(
      log[-3000:] for log in logs_of(tmp, name))
  return spec


def host_rows(spec: dict) -> list[dict[int, list[int]]]:
  """Per process: batch index -> CRCs of the rows its source yielded."""
  rows = Path(spec["rows_out"])
  return [{int(k): v for k, v in json.loads((rows / f"rows_{i}.json").read_text()).items()}
          for i in (0, 1)]


def assert_rows_split(hosts, global_rows, batches) -> None:
  """Every batch: each host read half the rows, none twice, and together exactly `global_rows`."""
  for b in batches:
    first, second = hosts[0][b], hosts[1][b]
    assert len(first) == len(second) == len(global_rows[b]) // 2, f"batch {b}"
    assert not set(first) & set(second), f"batch {b}: a row was read by both hosts"
    assert sorted(first + second) == sorted(global_rows[b]), f"batch {b}"
