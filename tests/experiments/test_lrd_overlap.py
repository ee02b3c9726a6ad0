"""lrd_overlap: span hashes and the seen-span share against a brute-force set of token tuples."""

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
import lrd_overlap  # pylint: disable=wrong-import-position

SPAN = lrd_overlap.SPAN


def _windows(tokens):
  return [tuple(tokens[i:i + SPAN]) for i in range(len(tokens) - SPAN + 1)]


def test_span_hashes_equal_exactly_when_the_windows_do():
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 6, 400)  # a small vocabulary: many windows share prefixes
  tokens[200:240] = tokens[50:90]   # and some repeat whole
  hashes = lrd_overlap.span_hashes(tokens)
  windows = _windows(tokens.tolist())
  assert len(hashes) == len(windows)
  for i in range(0, len(windows), 7):
    for j in range(len(windows)):
      assert (hashes[i] == hashes[j]) == (windows[i] == windows[j]), (i, j)


def test_overlap_is_the_share_of_seen_windows_after_start():
  """A sample whose middle 50 tokens are copied from the training rows: exactly the windows
  that lie inside the copy are seen; `start` drops the windows before it."""
  rng = np.random.default_rng(1)
  train = rng.integers(0, 49152, 1000)
  sample = rng.integers(0, 49152, 200)
  sample[80:130] = train[300:350]
  seen = np.unique(lrd_overlap.span_hashes(train))
  train_windows = set(_windows(train.tolist()))
  for start in (0, 60, 100, 150):
    # the tokens from `start` on, each judged by the span that ends at it
    ends = [t for t in range(max(start, SPAN - 1), 200)]
    want = sum(tuple(sample[t - SPAN + 1:t + 1].tolist()) in train_windows for t in ends)
    assert lrd_overlap.overlap(sample, seen, start) == want / len(ends)
  assert lrd_overlap.overlap(sample, seen, 0) == (50 - SPAN + 1) / (200 - SPAN + 1)
  assert lrd_overlap.overlap(sample, seen, 150) == 0.0


def test_markdown_lists_every_method_with_its_interval():
  out = {"span": SPAN, "train": "runs/x", "methods": {
      "standard": {"samples": 2, "scored": {"mean": 0.25, "ci95": [0.1, 0.4]},
                   "whole": {"mean": 0.3, "ci95": [0.2, 0.4]},
                   "corr_scored_overlap_lrd_c4096": None}},
         "corr_scored_overlap_lrd_c4096": -0.125}
  text = lrd_overlap.markdown(out)
  assert "| standard | 2 | 0.250 [0.100, 0.400] | 0.300 [0.200, 0.400] | – |" in text
  assert "-0.125" in text

