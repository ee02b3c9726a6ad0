"""Scoring of generated answers and the aggregate tables the papers report.

- Postprocessing (RULER): strip, then every control character `[\\x00-\\x1f]` becomes `\\n`.
- `string_match_all`: per sample, the fraction of references found as case-insensitive
  substrings; `string_match_part`: 1 if any is found; `label_match` (ICL): the parsed label
  equals the gold one. All are means x 100.
- Per-length means over a category's tasks, the mean over lengths, and the effective length
  (the largest length whose score reaches 85.6, Llama-2-7B's RULER score at 4K).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

EFFECTIVE_LENGTH_THRESHOLD = 85.6
_CONTROL = re.compile(r"[\x00-\x1f]")


def postprocess(prediction: str) -> str:
  return _CONTROL.sub("\n", prediction.strip())


def match_all(prediction: str, references: Sequence[str]) -> float:
  """Fraction (0..1) of `references` found in the postprocessed prediction, ignoring case."""
  if not references:
    raise ValueError("match_all: no reference strings")
  pred = postprocess(prediction).lower()
  return sum(r.lower() in pred for r in references) / len(references)


def match_part(prediction: str, references: Sequence[str]) -> float:
  """1.0 if any of `references` occurs in the postprocessed prediction, ignoring case."""
  if not references:
    raise ValueError("match_part: no reference strings")
  pred = postprocess(prediction).lower()
  return float(any(r.lower() in pred for r in references))


_LABEL = re.compile(r"(?:label:\s*)?([^\s.,;]+)", re.IGNORECASE)


def match_label(prediction: str, references: Sequence[str]) -> float:
  """HELMET ICL: 1.0 if the first word of the answer, after an optional `label:`, is a reference."""
  m = _LABEL.match(postprocess(prediction))
  return float(bool(m) and m.group(1) in references)


METRICS = {"string_match_all": match_all, "string_match_part": match_part,
           "label_match": match_label}


def sample_score(metric: str, prediction: str, references: Sequence[str]) -> float:
  """One sample's score in 0..1 under `metric` (string_match_all or string_match_part)."""
  try:
    fn = METRICS[metric]
  except KeyError:
    raise ValueError(f"unknown metric {metric!r}; known: {sorted(METRICS)}") from None
  return fn(prediction, references)


def string_match_all(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """RULER's string_match_all over a task: mean per-sample fraction x 100."""
  return _mean_x100(match_all, predictions, references)


def string_match_part(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """RULER's string_match_part over a task: mean per-sample any-match x 100."""
  return _mean_x100(match_part, predictions, references)


def _mean_x100(fn, predictions, references) -> float:
  if len(predictions) != len(references):
    raise ValueError(f"{len(predictions)} predictions but {len(references)} reference lists")
  if not predictions:
    raise ValueError("no predictions to score")
  return 100.0 * sum(fn(p, r) for p, r in zip(predictions, references)) / len(predictions)


def _mean(xs: Iterable[float]) -> float:
  xs = list(xs)
  return sum(xs) / len(xs) if xs else math.nan


def category_by_length(scores: Mapping[str, Mapping[int, float]], tasks: Sequence[str],
                       lengths: Sequence[int]) -> dict[int, float]:
  """Per length, the mean over `tasks` (only lengths where every task was scored)."""
  out = {}
  for length in lengths:
    if all(length in scores.get(t, {}) for t in tasks):
      out[length] = _mean(scores[t][length] for t in tasks)
  return out


def effective_length(by_length: Mapping[int, float],
                     threshold: float = EFFECTIVE_LENGTH_THRESHOLD) -> int | None:
  """The largest length whose score is >= threshold (None when none is)."""
  passing = [length for length, s in by_length.items() if s >= threshold]
  return max(passing) if passing else None


def summarize(scores: Mapping[str, Mapping[int, float]], lengths: Sequence[int],
              categories: Mapping[str, Sequence[str]]) -> dict:
  """The report's aggregates: per category, per-length means, their mean, effective length.

  A category is reported only when all its tasks were run. `lite_avg` is the mean of the
  categories' averages (the spec's mean(Recall, ICL, RULER-11) over those available).
  """
  out: dict = {"categories": {}}
  for name, tasks in categories.items():
    if not all(t in scores for t in tasks):
      continue
    by_len = category_by_length(scores, tasks, lengths)
    out["categories"][name] = {
        "tasks": list(tasks), "by_length": by_len, "average": _mean(by_len.values()),
        "effective_length": effective_length(by_len)}
  out["task_average"] = {t: _mean(s[l] for l in lengths if l in s) for t, s in scores.items()}
  avgs = [c["average"] for c in out["categories"].values()]
  out["lite_avg"] = _mean(avgs) if avgs else None
  out["lite_avg_of"] = list(out["categories"])
  return out


def depth_table(records: Iterable[Mapping], num_bins: int = 10) -> dict[int, list[float | None]]:
  """NIAH diagnostic: accuracy (x100) by needle depth bin, per length.

  Each record holds `length`, `num_tokens`, `needle_positions` and `score` (0..1); a record with
  several needles counts once per needle (depth = token position / prompt length).
  """
  acc: dict[int, list[list[float]]] = {}
  for r in records:
    bins = acc.setdefault(r["length"], [[] for _ in range(num_bins)])
    for pos in r["needle_positions"]:
      b = min(num_bins - 1, int(num_bins * pos / max(1, r["num_tokens"])))
      bins[b].append(r["score"])
  return {length: [100 * _mean(b) if b else None for b in bins] for length, bins in acc.items()}
