"""Scoring on hand-made outputs, against values computed by hand."""

import math

import pytest

from longjax.eval import scoring


def test_postprocess_strips_and_maps_control_chars():
  assert scoring.postprocess("  a\tb\x00c\r\n") == "a\nb\nc"


def test_string_match_all_hand_made():
  preds = [" 1234567 and 7654321.", "only 1234567", "nothing here", "UUID ABC-def"]
  refs = [["1234567", "7654321"], ["1234567", "7654321"], ["42"], ["abc-DEF"]]
  # per sample: 1, 1/2, 0, 1 (case-insensitive) -> mean 0.625
  assert scoring.string_match_all(preds, refs) == pytest.approx(62.5)


def test_string_match_part_hand_made():
  preds = ["only 1234567", "nothing", "x\x01y"]
  refs = [["1234567", "7654321"], ["42"], ["x\ny"]]
  # control char becomes newline before matching: third matches
  assert scoring.string_match_part(preds, refs) == pytest.approx(200 / 3)


def test_errors_are_explicit():
  with pytest.raises(ValueError, match="2 predictions but 1"):
    scoring.string_match_all(["a", "b"], [["a"]])
  with pytest.raises(ValueError, match="unknown metric"):
    scoring.sample_score("bleu", "a", ["a"])
  with pytest.raises(ValueError, match="no reference"):
    scoring.match_all("a", [])


def test_summary_averages_and_effective_length():
  scores = {"a": {4096: 100.0, 8192: 90.0, 16384: 50.0},
            "b": {4096: 90.0, 8192: 82.0, 16384: 10.0},
            "c": {4096: 20.0}}
  s = scoring.summarize(scores, [4096, 8192, 16384], {"ab": ("a", "b"), "abc": ("a", "b", "c"),
                                                      "missing": ("a", "z")})
  ab = s["categories"]["ab"]
  assert ab["by_length"] == {4096: 95.0, 8192: 86.0, 16384: 30.0}
  assert ab["average"] == pytest.approx((95 + 86 + 30) / 3)
  assert ab["effective_length"] == 8192  # 86.0 >= 85.6
  assert s["categories"]["abc"]["by_length"] == {4096: 70.0}
  assert s["categories"]["abc"]["effective_length"] is None
  assert "missing" not in s["categories"]
  assert s["task_average"]["c"] == 20.0
  assert s["lite_avg"] == pytest.approx((ab["average"] + 70.0) / 2)


def test_depth_table_bins_by_token_position():
  recs = [{"length": 100, "num_tokens": 100, "needle_positions": [5], "score": 1.0},
          {"length": 100, "num_tokens": 100, "needle_positions": [7, 95], "score": 0.0}]
  t = scoring.depth_table(recs, num_bins=2)
  assert t[100] == [50.0, 0.0]
  assert math.isnan(scoring._mean([]))


def test_label_match_parses_the_first_label():
  assert scoring.match_label(" 3\nlabel: 4", ["3"]) == 1.0
  assert scoring.match_label("label: 2.", ["2"]) == 1.0
  assert scoring.match_label(" LABEL:4 because", ["4"]) == 1.0
  assert scoring.match_label(" 13", ["1"]) == 0.0
  assert scoring.match_label("", ["1"]) == 0.0
