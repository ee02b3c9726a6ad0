"""experiments/bench/train.py on the CPU: the records it writes, not its speed."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "bench"))
import train as bench_train  # pylint: disable=wrong-import-position


def test_each_remat_times_every_candidate_against_save_context(tmp_path, monkeypatch, capsys):
  """--each-remat runs a case once per candidate (save_context, full) and prints full's step
  time as a ratio of save_context's from the same run."""
  monkeypatch.setitem(bench_train.CASES, "tiny_two", bench_train.Case(
      "tiny", 256, (bench_train.SAVE, bench_train.FULL), steps=1, loss_chunk=128))
  monkeypatch.setattr(sys, "argv", ["train.py", "--cases", "tiny_two", "--each-remat",
                                    "--warmup", "0", "--out", str(tmp_path)])
  assert bench_train.main() == 0
  records = json.loads((tmp_path / "train_bench.json").read_text())
  assert [(r["case"], r["remat"]) for r in records] == [("tiny_two", "save_context"),
                                                        ("tiny_two", "full")]
  assert all(r["step_s"] > 0 and len(r["losses"]) == 1 for r in records)
  full = [line for line in capsys.readouterr().out.splitlines()
          if line.startswith("tiny_two") and " full " in line]
  ratio = records[1]["step_s"] / records[0]["step_s"]
  assert full and full[0].endswith(f"({ratio:.3f}x save_context's step time)")


def test_remat_list_picks_the_rungs_to_time(tmp_path, monkeypatch):
  """--remat full,save_context --each-remat times those two policies, in that order, whatever
  the case's own candidates; an unknown policy is refused by name."""
  monkeypatch.setitem(bench_train.CASES, "tiny_one", bench_train.Case(
      "tiny", 256, (bench_train.SAVE,), steps=1, loss_chunk=128))
  argv = ["train.py", "--cases", "tiny_one", "--each-remat", "--warmup", "0",
          "--out", str(tmp_path), "--remat"]
  monkeypatch.setattr(sys, "argv", argv + ["full,save_context"])
  assert bench_train.main() == 0
  records = json.loads((tmp_path / "train_bench.json").read_text())
  assert [r["remat"] for r in records] == ["full", "save_context"]
  monkeypatch.setattr(sys, "argv", argv + ["save_dotz"])
  with pytest.raises(SystemExit, match="2"):
    bench_train.main()


def test_logits_grad_list_runs_each_setting(tmp_path, monkeypatch):
  """--logits-grad compute,float32 times the case once per setting, in that order, and records
  which one each run used."""
  monkeypatch.setitem(bench_train.CASES, "tiny_grad", bench_train.Case(
      "tiny", 256, (bench_train.SAVE,), steps=1, loss_chunk=128))
  monkeypatch.setattr(sys, "argv", ["train.py", "--cases", "tiny_grad", "--warmup", "0",
                                    "--logits-grad", "compute,float32", "--out", str(tmp_path)])
  assert bench_train.main() == 0
  records = json.loads((tmp_path / "train_bench.json").read_text())
  assert [r["logits_grad_dtype"] for r in records] == ["compute", "float32"]
