"""experiments/bench/attention.py on CPU: a shape from --shape, packed documents per batch row,
and the parity check against the dense reference (the GPU rows need a GPU)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "bench"))

import attention  # pylint: disable=wrong-import-position


def test_documents_cut_each_row_and_restart_positions():
  seg, pos = attention.documents(3, 64, 5, seed=0)
  seg, pos = np.asarray(seg), np.asarray(pos)
  assert seg.shape == pos.shape == (3, 64)
  for row_seg, row_pos in zip(seg, pos):
    assert sorted(set(row_seg)) == [1, 2, 3, 4, 5] and (np.diff(row_seg) >= 0).all()
    starts = np.flatnonzero(np.diff(row_seg, prepend=0))  # first token of each document
    assert (row_pos[starts] == 0).all()
    assert (np.diff(row_pos)[np.diff(row_seg) == 0] == 1).all()
  assert not (seg[0] == seg[1]).all()  # rows are cut differently


def test_a_shape_from_the_command_line_runs_and_matches_the_reference(tmp_path):
  attention.main(["--out", str(tmp_path), "--sizes", "256", "--budget", "0",
                  "--impls", "blockwise,blockwise/8docs", "--shape", "2,4,2,16"])
  res = json.loads((tmp_path / "attention_bench.json").read_text())
  assert res["shape"] == {"B": 2, "N": 4, "K": 2, "H": 16}
  for name in ("blockwise", "blockwise/8docs"):
    errs = res["parity"][name]
    assert "error" not in errs and max(errs.values()) < 2e-2, errs  # bf16 inputs
  rows = {r["impl"]: r for r in res["rows"]}
  flops = 3.5 * 4 * 2 * 256 * 256 * 4 * 16 / 2
  assert rows["blockwise"]["tflops"] == pytest.approx(flops / rows["blockwise"]["seconds"] / 1e12)


@pytest.mark.parametrize("shape", ["1,32,8", "1,32,6,64", "1,32,8,x"])
def test_a_bad_shape_is_refused_with_what_was_expected(shape, capsys):
  with pytest.raises(SystemExit):
    attention.main(["--shape", shape, "--sizes", "256"])
  assert "--shape" in capsys.readouterr().err
