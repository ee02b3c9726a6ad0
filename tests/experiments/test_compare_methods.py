"""The method-comparison driver's presets and its table, on hand-made eval results."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "compare_methods"))
import comparison  # pylint: disable=wrong-import-position
import presets  # pylint: disable=wrong-import-position


def _results(ruler_1k: float, gold: float, nll: list[float]) -> dict:
  return {
      "summary": {"categories": {"ruler": {"by_length": {"1024": ruler_1k, "2048": 0.0},
                                           "average": ruler_1k / 2}},
                  "lite_avg": ruler_1k / 2},
      "gold_loglik": {"niah_single_1": {"1024": {"nll": gold, "exact": 0.0},
                                         "2048": {"nll": gold + 1.0, "exact": 0.0}}},
      "loss": {"windows": [512, 2048], "length": 2048, "sequences": [],
               "log": {"buckets": [[0, 1024], [1024, 2048]], "nll_full": nll,
                       "gain_w512": [0.0, 0.25], "gain_w2048": [0.0, 0.0]}},
  }


def test_table_rows_and_columns(tmp_path):
  dirs = {}
  for method, res in {"standard": _results(10.0, 2.0, [6.0, 5.5]),
                      "nextlong": _results(30.0, 1.0, [6.0, 5.0])}.items():
    d = tmp_path / method
    d.mkdir()
    (d / "results.json").write_text(json.dumps(res))
    dirs[method] = d
  table = comparison.write_comparison(dirs, tmp_path, title="t")
  rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in table.splitlines() if line.startswith("| standard") or
          line.startswith("| nextlong")}
  header = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
  assert header[:4] == ["method", "ruler 1k", "ruler 2k", "ruler avg"]
  # ruler 1k, ruler 2k, ruler avg, lite_avg, gold NLL (mean over lengths), NLL last, gain w=512
  assert rows["standard"] == ["10.0", "0.0", "5.0", "5.00", "2.500", "5.500", "0.250"]
  assert rows["nextlong"] == ["30.0", "0.0", "15.0", "15.00", "1.500", "5.000", "0.250"]
  assert (tmp_path / "comparison.png").stat().st_size > 0
  assert json.loads((tmp_path / "comparison.json").read_text())["nextlong"]["gold_nll"] == 1.5


def test_presets_are_valid_and_reject_unknown_methods():
  assert presets.PRESETS["demo"].cpu_devices == 8
  for preset in presets.PRESETS.values():
    assert (Path(__file__).resolve().parents[2] / preset.train_gin).is_file()
  with pytest.raises(ValueError, match="unknown"):
    presets.Comparison(corpus="default", length=1024, embedder="minilm", tokenizer="spm:512",
                       train_gin="x.gin", methods=("standard", "bogus"))
