"""Reads one comparison's result files: eval samples, run configs and synthesis budgets.

The layout `run.py` writes: OUT/eval/<method>_seed<k> (`python -m longjax.eval`),
OUT/runs/<method>_seed<k> (the trainer's MODEL_DIR, with its operative `config.gin`) and
OUT/index/<method>/manifest.json (the method's synthesis manifest).
"""

import ast
import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

ARM_DIR = re.compile(r"^(?P<method>.+)_seed(?P<seed>\d+)$")
BUDGET_KEYS = ("samples", "sample_tokens", "documents_used", "source_tokens",
               "source_tokens_dropped")


def arm_name(method: str, seed: int) -> str:
  """The directory name of one training seed of one arm, under OUT/runs and OUT/eval."""
  return f"{method}_seed{seed}"


def find_arms(out: Path) -> dict[str, list[Path]]:
  """{method: its eval dirs in seed order} for every OUT/eval/<method>_seed<k>/results.json."""
  found: dict[str, list[tuple[int, Path]]] = {}
  for d in sorted((out / "eval").glob("*_seed*")):
    m = ARM_DIR.match(d.name)
    if m and (d / "results.json").is_file():
      found.setdefault(m["method"], []).append((int(m["seed"]), d))
  return {method: [d for _, d in sorted(dirs)] for method, dirs in found.items()}


@dataclasses.dataclass(frozen=True)
class EvalSamples:
  """One eval directory's values, per sample where the results hold them.

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


def read_samples(eval_dir: Path) -> EvalSamples:
  """Reads results.json (or predictions.jsonl) of one `python -m longjax.eval` run.

  Per-sample values: `per_sample.scores` {task: {length: [score x 100 per example]}},
  `per_sample.gold_loglik` {task: {length: {"nll": [...]}}} and, per held-out sequence,
  `loss.sequences[i].log` (the loss tables of that sequence alone). Results written before
  those existed give task scores from predictions.jsonl (one record per sample, score in 0..1)
  and otherwise means only: such a metric is `aggregate_only`. This is the one function that
  knows the eval layout.
  """
  results = json.loads((eval_dir / "results.json").read_text())
  per_sample = results.get("per_sample") or {}
  values: dict[str, dict[Any, np.ndarray]] = {}
  aggregate: set[str] = set()

  def put(metric: str, cell: Any, v: float | list[float]) -> None:
    if not isinstance(v, list):
      aggregate.add(metric)
      v = [v]
    values.setdefault(metric, {})[cell] = np.asarray(v, dtype=float)

  scores = per_sample.get("scores") or {}
  predictions = eval_dir / "predictions.jsonl"
  if not scores and predictions.is_file():
    for line in predictions.read_text().splitlines():
      r = json.loads(line)
      scores.setdefault(r["task"], {}).setdefault(r["length"], []).append(100.0 * r["score"])
  for task, by_len in (scores or results.get("scores") or {}).items():
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


def _gin_statements(text: str) -> dict[str, str]:
  """{name: value text} of a gin config string (continuation lines joined, comments dropped)."""
  joined = re.sub(r"\\\n\s*", "", text)
  joined = re.sub(r"\n[ \t]+", " ", joined)  # indented continuation of a wrapped literal
  out = {}
  for line in joined.splitlines():
    if line.strip() and not line.lstrip().startswith("#") and " = " in line:
      name, value = line.split(" = ", 1)
      out[name.strip()] = value.strip()
  return out


def read_run_config(run_dir: Path) -> dict[str, Any] | None:
  """The budget-relevant settings of one training run, from its operative MODEL_DIR/config.gin.

  Returns {train_steps, batch_size, length, data_seed, init_seed, init_from_hf}, or None when
  the run has no config.gin.
  """
  path = run_dir / "config.gin"
  if not path.is_file():
    return None
  statements = _gin_statements(path.read_text())

  def value(name: str, default: Any = None) -> Any:
    text = statements.get(name)
    while text is not None and text.startswith("%"):  # a macro reference
      text = statements.get(text[1:])
    return default if text is None else ast.literal_eval(text)

  return {"train_steps": value("TrainConfig.train_steps"),
          "batch_size": value("TrainConfig.batch_size"),
          "length": value("TrainConfig.task_feature_lengths")["targets"],
          "data_seed": value("seqio_batches.seed", 0), "init_seed": value("TrainConfig.seed", 0),
          "init_from_hf": value("TrainConfig.init_from_hf")}


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
