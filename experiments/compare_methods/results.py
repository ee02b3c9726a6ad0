"""Reads what the comparison table needs from result files: eval samples and synthesis budgets.

`eval_results` reads one `python -m longjax.eval` directory into the dict that a per-arm record
(records.py) stores; `read_samples` turns that dict into per-sample values; `read_budget` reads a
method's synthesis manifest OUT/index/<method>/manifest.json.
"""

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

BUDGET_KEYS = ("samples", "sample_tokens", "documents_used", "source_tokens",
               "source_tokens_dropped")


@dataclasses.dataclass(frozen=True)
class EvalSamples:
  """One eval's values, per sample where its results hold them.

  Attributes:
    values: {metric: {cell: per-sample values}}. Metrics: 'score' (0..100, cells (task,
      length)), 'gold_nll' (nats/token, cells (task, length)), 'nll_full' and 'gain_w<w>'
      (held-out loss by position, cells ('loss', bucket index), one value per sequence).
    aggregate_only: metrics whose cells hold one mean instead of per-sample values.
    categories: {category: its tasks}; empty when a task subset was evaluated.
    lengths: the evaluated lengths.
    loss_buckets: the position buckets [lo, hi) of the loss cells.
    loss_window: the smallest truncated-context window w of the `gain_w<w>` metric.
  """
  values: Mapping[str, Mapping[Any, np.ndarray]]
  aggregate_only: frozenset[str]
  categories: Mapping[str, tuple[str, ...]]
  lengths: tuple[int, ...]
  loss_buckets: tuple[tuple[int, int], ...] = ()
  loss_window: int | None = None


def eval_results(eval_dir: Path) -> dict[str, Any]:
  """results.json of one `python -m longjax.eval` run, per sample where the eval wrote them.

  Results written before `per_sample` existed keep their task scores per sample only in
  predictions.jsonl (one record per sample, score in 0..1): those are put into
  `per_sample.scores` here, so that the returned dict alone holds everything `read_samples` reads.
  """
  results = json.loads((eval_dir / "results.json").read_text())
  predictions = eval_dir / "predictions.jsonl"
  if not (results.get("per_sample") or {}).get("scores") and predictions.is_file():
    scores: dict[str, dict[str, list[float]]] = {}
    for line in predictions.read_text().splitlines():
      r = json.loads(line)
      scores.setdefault(r["task"], {}).setdefault(str(r["length"]), []).append(100.0 * r["score"])
    results["per_sample"] = {**(results.get("per_sample") or {}), "scores": scores}
  return results


def read_samples(results: Mapping[str, Any]) -> EvalSamples:
  """The values of one eval's results (`eval_results`), per sample where they hold them.

  Per-sample values: `per_sample.scores` {task: {length: [score x 100 per example]}},
  `per_sample.gold_loglik` {task: {length: {"nll": [...]}}} and, per held-out sequence,
  `loss.sequences[i].log` (the loss tables of that sequence alone). Results without them give
  means only: such a metric is `aggregate_only`. This is the one function that knows the eval
  layout.
  """
  per_sample = results.get("per_sample") or {}
  values: dict[str, dict[Any, np.ndarray]] = {}
  aggregate: set[str] = set()

  def put(metric: str, cell: Any, v: float | list[float]) -> None:
    if not isinstance(v, list):
      aggregate.add(metric)
      v = [v]
    values.setdefault(metric, {})[cell] = np.asarray(v, dtype=float)

  scores = per_sample.get("scores") or results.get("scores") or {}
  for task, by_len in scores.items():
    for n, v in by_len.items():
      put("score", (task, int(n)), v)
  gold = per_sample.get("gold_loglik") or results.get("gold_loglik") or {}
  for task, by_len in gold.items():
    for n, g in by_len.items():
      put("gold_nll", (task, int(n)), g["nll"])
  loss, buckets, window = results.get("loss"), (), None
  if loss:
    window = min(int(w) for w in loss["windows"])
    buckets = tuple(tuple(b) for b in loss["log"]["buckets"])
    sequences = [s["log"] for s in loss["sequences"] if "log" in s]
    for metric in ("nll_full", f"gain_w{window}"):
      for i in range(len(buckets)):
        per_seq = [t[metric][i] for t in sequences if t[metric][i] is not None]
        mean = loss["log"][metric][i]
        if per_seq and len(sequences) == len(loss["sequences"]):
          put(metric, ("loss", i), per_seq)
        elif mean is not None:
          put(metric, ("loss", i), mean)
  categories = {name: tuple(cat["tasks"])
                for name, cat in (results["summary"].get("categories") or {}).items()}
  return EvalSamples(values, frozenset(aggregate), categories,
                     tuple(int(n) for n in results.get("lengths", [])), buckets, window)


def read_budget(index_dir: Path, method: str, length: int) -> dict[str, int] | None:
  """The method's synthesis budget at `length`, from OUT/index/<method>/manifest.json.

  The manifest's counts["budget"]["L<length>"] holds, per pass over the method's data:
  samples, sample_tokens (samples x length), documents_used, source_tokens (of the documents
  read) and source_tokens_dropped (of those, in no sample). None when the manifest lacks it.
  """
  path = index_dir / method / "manifest.json"
  if not path.is_file():
    return None
  budget = json.loads(path.read_text()).get("counts", {}).get("budget", {}).get(f"L{length}")
  if not budget:
    return None
  return {k: int(budget[k]) for k in BUDGET_KEYS if k in budget}
