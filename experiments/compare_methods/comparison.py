"""The comparison table and plot: methods x task categories x lengths, with 95% intervals.

    python experiments/compare_methods/comparison.py OUT   # rebuilds OUT/comparison.{md,json,png}
                                                           # and comparison_differences.png

Reads only the raw records OUT/results/*.json (records.py), and first checks that every trained
arm shares tokenizer, RoPE theta, hyper-parameters and training tokens; reference records (a
model evaluated without training) become reference rows, outside that check and the verdicts.
The data diagnostics of OUT/inspect*/ (`synth inspect`, one per reference model) lead the table
when present, each method's LRD against Standard's. The table has the shape of the
papers' Table 1 (NExtLong arXiv 2501.12766): one row per method, a column per category and
length, and the categories' average; here `lite_avg` (specs/evaluation.md), never comparable
with a published Avg. Every cell is a mean over seeds with a 95% bootstrap interval over seeds
and eval samples (stats.py); a column says which arms are within noise of its best one. The loss
columns carry the signal for models too small to generate answers: the teacher-forced NLL of the
tasks' gold answers, the full-context NLL on the last position bucket of held-out text, and how
much the context beyond the smallest window lowers it there. Below the table: every arm's paired
difference from Standard, two seeds of one arm against each other (pure training noise), the same
differences with training runs as the unit (a t interval, the check to read with few seeds), and
a budget table of what each arm trained on.
"""

import argparse
import dataclasses
import json
import re
import sys
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

# pylint: disable=wrong-import-position
import records as records_lib  # this directory is on sys.path (script, run.py, tests)
import results as results_lib
import stats
from longjax.io import atomic_path, format_length, write_json, write_text
from presets import ARMS

ONE_SEED_NOTE = ("one seed: these intervals cover the eval samples only, not training noise "
                 "(data order, initialisation); run --seeds 2 or more before reading a "
                 "difference between arms (the seed-level table, when present, borrows the "
                 "run-to-run variance of the arms that have two or more).")
BOOTSTRAP_SEED = 0
PRIMARY = "lite_avg"  # the column whose pairwise differences get a family-wise check
NOTES = [
    "Cells: mean over seeds [95% interval]; the interval is a bootstrap ({resamples} resamples) "
    "that resamples the seeds, then the eval samples within each seed.",
    "**bold**: the column's best arm (highest score or gain, lowest NLL). ≈: the paired 95% "
    "interval of this arm minus the best arm contains 0, so it does not differ significantly "
    "from the best (paired: both arms answered the same eval samples, so one bootstrap draw of "
    "samples serves both; seeds are redrawn per arm).",
    "all arms within noise: no two arms' paired difference excludes 0.",
    "0 (floor): every sample of every seed scored 0; a floor, not a result.",
]
REFERENCE_NOTE = ("*reference* rows: models evaluated without training (records with "
                  "\"reference\": true); shown for scale, never judged: no bold or ≈, not in the "
                  "verdicts, the equality check or the budgets.")
GAIN_NOTE = ("gain from >{w} ctx: full-context NLL subtracted from the NLL of windows of {w} "
             "tokens (stride {w}/4, so each target keeps {lo} to {hi} tokens of context). Its "
             "numerical noise floor is ±{floor:.4f} nats: the largest gain of any run in the "
             "buckets before {w} tokens, where both passes see the same context and the gain is 0 "
             "by construction (the eval's bf16 arithmetic); a difference smaller than that is "
             "noise whatever its interval.")
AGGREGATE_NOTE = ("†: the results hold only means for this metric, so the interval covers the "
                  "seeds alone, not the samples.")


@dataclasses.dataclass(frozen=True)
class Column:
  """One table column: a weighted sum of per-cell means of one metric."""
  name: str
  metric: str
  weights: Mapping[Any, float]
  digits: int = 1
  higher_is_better: bool = True


def _mean_of(cells: Sequence[Any]) -> dict[Any, float]:
  return {c: 1.0 / len(cells) for c in cells}


def columns(s: results_lib.EvalSamples) -> list[Column]:
  """The columns of one eval layout, in table order (scores, lite_avg, then the loss columns)."""
  scores = s.values.get("score", {})
  by_len, avgs = [], []
  if s.categories:
    cat_avgs = {}
    for cat, tasks in sorted(s.categories.items()):
      lengths = [n for n in s.lengths if all((t, n) in scores for t in tasks)]
      if not lengths:  # no length where every task of the category was scored
        continue
      by_len += [Column(f"{cat} {format_length(n)}", "score", _mean_of([(t, n) for t in tasks]))
                 for n in lengths]
      cat_avgs[cat] = _mean_of([(t, n) for n in lengths for t in tasks])
      avgs.append(Column(f"{cat} avg", "score", cat_avgs[cat]))
    if cat_avgs:  # categories share tasks (three of Recall's four are RULER tasks): weights add
      lite: dict[Any, float] = {}
      for cells in cat_avgs.values():
        for c, w in cells.items():
          lite[c] = lite.get(c, 0.0) + w / len(cat_avgs)
      avgs.append(Column("lite_avg", "score", lite, digits=2))
  else:  # a task subset: one average per task, or the table gets too wide to read
    for task in sorted({t for t, _ in scores}):
      avgs.append(Column(f"{task} avg", "score", _mean_of([c for c in scores if c[0] == task])))
  cols = by_len + avgs
  if "gold_nll" in s.values:
    cols.append(Column("gold-answer NLL", "gold_nll", _mean_of(sorted(s.values["gold_nll"])),
                       digits=3, higher_is_better=False))
  if "nll_full" in s.values:
    last = ("loss", max(i for _, i in s.values["nll_full"]))
    cols.append(Column("NLL last bucket", "nll_full", {last: 1.0}, 3, higher_is_better=False))
    gain = f"gain_w{s.loss_window}"
    if last in s.values.get(gain, {}):
      cols.append(Column(f"gain from >{s.loss_window} ctx", gain, {last: 1.0}, 3))
  return cols


def gain_noise_floor(evals: Sequence[results_lib.EvalSamples]) -> float | None:
  """The largest |gain| of any eval's held-out loss in a bucket that ends at or before the
  truncated window, where truncated and full context coincide (0 but for arithmetic); None
  when no eval has such a bucket."""
  gains = []
  for s in evals:
    cells = s.values.get(f"gain_w{s.loss_window}", {})
    for i, (_, hi) in enumerate(s.loss_buckets):
      if hi <= (s.loss_window or 0) and ("loss", i) in cells:
        gains.append(abs(float(np.mean(cells[("loss", i)]))))
  return max(gains) if gains else None


def _seed_cells(seeds: Sequence[results_lib.EvalSamples], metric: str,
                names: Sequence[str]) -> list[dict[Any, np.ndarray]]:
  """Per seed, the cells of one metric; every seed of an arm must have been evaluated alike."""
  cells = [dict(s.values.get(metric, {})) for s in seeds]
  if any(set(c) != set(cells[0]) for c in cells):
    raise ValueError(f"{metric}: the evals of {list(names)} hold different tasks, lengths or "
                     "buckets; evaluate every seed with the same options")
  return cells


def _run_mean(seed: results_lib.EvalSamples, col: Column) -> float:
  """One training run's value of a column: its weighted cell means over the eval samples."""
  return float(sum(w * np.mean(seed.values[col.metric][c]) for c, w in col.weights.items()))


def _cell_json(iv: stats.Interval, **flags: bool) -> dict[str, Any]:
  return {"mean": iv.mean, "lo": iv.lo, "hi": iv.hi, **flags}


def _difference_json(diff: stats.Interval, per_sample: bool) -> dict[str, Any]:
  """A difference, flagged significant when its interval excludes 0, and per_sample False when
  some of its evals hold only means for the metric (no eval-sample noise in the interval)."""
  return {**_cell_json(diff, significant=not stats.contains_zero(diff), per_sample=per_sample),
          **({} if diff.p is None else {"p": diff.p})}


def _per_sample(evals: Sequence[results_lib.EvalSamples], metric: str) -> bool:
  """Whether every eval holds the metric per sample (not only its means)."""
  return not any(metric in s.aggregate_only for s in evals)


def summarize_arm(label: str, records: Sequence[Mapping[str, Any]],
                  seeds: Sequence[results_lib.EvalSamples],
                  resamples: int = stats.RESAMPLES) -> tuple[dict[str, Any], list[Column]]:
  """One row's cells (mean, interval, floor) over its records (an arm's seeds, or one
  reference) and their eval samples, and its columns."""
  names = [r["name"] if r["reference"] else r["arm"] for r in records]
  rng = np.random.default_rng((BOOTSTRAP_SEED, zlib.crc32(label.encode())))
  boots: dict[str, stats.Bootstrap] = {}
  row: dict[str, Any] = {"reference": records[0]["reference"],
                         "seeds": [r["seed"] for r in records if not r["reference"]],
                         "records": names, "eval_dirs": [r["eval_dir"] for r in records],
                         "cells": {}, "run_means": {}}
  cols = columns(seeds[0])
  for col in cols:
    if col.metric not in boots:
      boots[col.metric] = stats.Bootstrap(_seed_cells(seeds, col.metric, names), rng, resamples)
    floor = col.metric == "score" and all(
        not s.values["score"][c].any() for s in seeds for c in col.weights)
    per_sample = _per_sample(seeds, col.metric)
    row["cells"][col.name] = _cell_json(boots[col.metric].interval(col.weights), floor=floor,
                                        per_sample=per_sample)
    row["run_means"][col.name] = [_run_mean(s, col) for s in seeds]
  if "nll_full" in boots:
    row["loss_by_position"] = {
        "buckets": [list(b) for b in seeds[0].loss_buckets],
        "nll_full": [_cell_json(boots["nll_full"].interval({c: 1.0}))
                     for c in sorted(seeds[0].values["nll_full"])]}
  return row, cols


def arm_budget(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Training tokens (steps x batch x length) and documents in the exported training data, per
  seed; the method's unique tokens per pass and documents used (synthesis manifest), and the
  passes over its data that the training tokens make."""
  training = [r["training"] for r in records]
  hyper = training[0]["hyperparameters"]
  trained = sorted({t["training_tokens"] for t in training})
  budget: dict[str, Any] = {
      "training_tokens": trained, "length": hyper["length"],
      "init_from_hf": hyper["init_from_hf"], "replay_share": hyper["replay_share"],
      "trained_documents": sorted({(t["data"] or {}).get("unique_documents") for t in training
                                   if (t["data"] or {}).get("unique_documents") is not None})}
  synth = records[0].get("synthesis")
  if synth:
    budget.update(synth)
    if synth.get("sample_tokens"):
      budget["passes"] = [t * (1 - hyper["replay_share"]) / synth["sample_tokens"]
                          for t in trained]
  return budget


def _order(methods: Sequence[str]) -> list[str]:
  known = [m for m in ARMS if m in methods]
  return known + sorted(set(methods) - set(known))


def _rows(records: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
  """{row label: its records}: trained arms (seeds in order, methods in table order), then the
  references by name; a reference named like a method is refused."""
  rows: dict[str, list[Mapping[str, Any]]] = {}
  for r in sorted(records, key=lambda r: (r["reference"], r.get("seed", 0))):
    rows.setdefault(records_lib.label(r), []).append(r)
  for name, rs in rows.items():
    if rs[0]["reference"] and len(rs) > 1 or len({r["reference"] for r in rs}) > 1:
      raise ValueError(f"row {name!r}: {len(rs)} records share it; a reference needs its own name")
  arms = _order([n for n, rs in rows.items() if not rs[0]["reference"]])
  return {n: rows[n] for n in arms + sorted(n for n in rows if n not in arms)}


def _paired(samples: Mapping[str, Sequence[results_lib.EvalSamples]], metric: str,
            arms: Sequence[str], resamples: int) -> stats.Paired:
  rng = np.random.default_rng((BOOTSTRAP_SEED, zlib.crc32(metric.encode())))
  return stats.Paired({a: [dict(s.values.get(metric, {})) for s in samples[a]] for a in arms}, rng,
                      resamples)


def _verdict(col: Column, arms: Mapping[str, Mapping[str, Any]],
             paired: stats.Paired) -> dict[str, Any]:
  """A column's best trained arm, the arms within noise of it, and the all-within-noise flag."""
  scored = [m for m, r in arms.items() if col.name in r["cells"]]
  means = {m: arms[m]["cells"][col.name]["mean"] for m in scored}
  best = stats.best_arm(means, col.higher_is_better) if scored else None
  return {"name": col.name, "digits": col.digits, "higher_is_better": col.higher_is_better,
          "best": best,
          "within_noise_of_best": stats.within_noise_of(best, paired, col.weights, scored)
                                  if scored else [],
          "all_within_noise": stats.all_within_noise(paired, col.weights, scored)}


def _versus(base: str, cols: Sequence[Column], arms: Sequence[str],
            paired: Mapping[str, stats.Paired],
            samples: Mapping[str, Sequence[results_lib.EvalSamples]]) -> dict[str, dict[str, Any]]:
  """Per arm other than BASE, per column: the paired difference arm − BASE, and whether its
  interval excludes 0."""
  out: dict[str, dict[str, Any]] = {}
  for arm in arms:
    if arm == base:
      continue
    out[arm] = {}
    for col in cols:
      out[arm][col.name] = _difference_json(
          paired[col.metric].difference(arm, base, col.weights),
          _per_sample([*samples[arm], *samples[base]], col.metric))
  return out


def _between_seeds(rows: Mapping[str, Mapping[str, Any]],
                   samples: Mapping[str, Sequence[results_lib.EvalSamples]],
                   cols: Sequence[Column], resamples: int) -> dict[str, dict[str, Any]]:
  """Per arm with two or more seeds: seed k minus its first seed, per column, paired over the
  eval samples. Same method, same data pool, same eval; only the training seed (which rows,
  in which order) differs: the size of a difference that training noise alone makes."""
  out: dict[str, dict[str, Any]] = {}
  for arm, row in rows.items():
    if row["reference"] or len(row["seeds"]) < 2:
      continue
    names = [f"seed {s}" for s in row["seeds"]]
    split = {n: [s] for n, s in zip(names, samples[arm])}
    paired = {m: _paired(split, m, names, resamples) for m in {c.metric for c in cols}}
    for n in names[1:]:
      out[f"{arm}: {n} − {names[0]}"] = {
          c.name: _difference_json(paired[c.metric].difference(n, names[0], c.weights),
                                   _per_sample(samples[arm], c.metric))
          for c in cols}
  return out


def _seed_level(arms: Mapping[str, Mapping[str, Any]],
                samples: Mapping[str, Sequence[results_lib.EvalSamples]],
                cols: Sequence[Column]) -> dict[str, Any]:
  """Per column, with a t interval over training runs (their noise pooled over every arm with
  two or more runs) and eval samples: every arm's run mean minus Standard's
  (`versus_standard`), and for every pair of the other arms the later one in table order minus
  the earlier (`between_methods`: the papers' orderings, e.g. NExtLong − Quest); {} when no
  arm has two runs or there is no Standard arm."""
  if "standard" not in arms:
    return {}
  others = [a for a in arms if a != "standard"]
  pairs = {"versus_standard": [(a, "standard") for a in others],
           "between_methods": [(b, a) for i, a in enumerate(others) for b in others[i + 1:]]}
  tables: dict[str, dict[str, dict[str, Any]]] = {key: {} for key in pairs}
  df = 0
  for col in cols:
    cells = {m: [s.values[col.metric] for s in samples[m]] for m in arms}
    noise = stats.run_noise(cells, col.weights)
    if noise is None:
      return {}
    df = noise.df
    runs = {m: r["run_means"][col.name] for m, r in arms.items()}
    for key, arm_pairs in pairs.items():
      for a, b in arm_pairs:
        variance = stats.paired_sample_variance(cells[a], cells[b], col.weights)
        diff = stats.seed_level_difference(runs[a], runs[b], noise, variance)
        label = f"{a} ({len(runs[a])}) − {b} ({len(runs[b])})"
        cell = _difference_json(diff, _per_sample([*samples[a], *samples[b]], col.metric))
        own = (stats.own_variance_difference(runs[a], runs[b], noise, variance)
               if col.name == PRIMARY else None)
        if own is not None:
          cell["p_own_variance"] = own.p
        tables[key].setdefault(label, {})[col.name] = cell
  return {"df": df, **tables, "family": _family(tables)}


def _family(tables: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
  """Holm's adjustment over every seed-level difference of the primary column: with m pairs
  of arms, about 0.05 m of them would read "significant" by chance at 95% each; the adjusted
  p-values bound the chance of any such false reading in the whole table at 5%."""
  cells = {label: row[PRIMARY] for table in tables.values() for label, row in table.items()
           if PRIMARY in row}
  adjusted = stats.holm({label: c["p"] for label, c in cells.items()})
  return {"column": PRIMARY, "comparisons": len(cells), "rows": [
      {"difference": label, "mean": c["mean"], "p": c["p"], "p_holm": adjusted[label],
       "significant": adjusted[label] < 1 - stats.LEVEL,
       "p_own_variance": c.get("p_own_variance")}
      for label, c in sorted(cells.items(), key=lambda kv: kv[1]["p"])]}


def compare(records: Sequence[Mapping[str, Any]], title: str,
            resamples: int = stats.RESAMPLES) -> dict[str, Any]:
  """The whole comparison as a JSON-ready dict: per row cells and budget, per column verdict
  (over the trained arms; reference rows are shown, never judged), and every arm's paired
  difference from Standard."""
  rows, order, samples = {}, [], {}
  for name, recs in _rows(records).items():
    samples[name] = [results_lib.read_samples(r["eval"]) for r in recs]
    rows[name], cols = summarize_arm(name, recs, samples[name], resamples)
    rows[name]["budget"] = None if rows[name]["reference"] else arm_budget(recs)
    order += [c for c in cols if c.name not in {o.name for o in order}]
  arms = {m: r for m, r in rows.items() if not r["reference"]}
  names = list(arms)
  paired = {metric: _paired(samples, metric, names, resamples)
            for metric in {c.metric for c in order}}
  replay_share = next(iter(arms.values()))["budget"]["replay_share"] if arms else 0.0
  evals = [s for seeds in samples.values() for s in seeds]
  window = next((s.loss_window for s in evals if s.loss_window), None)
  shared = [c for c in order if all(c.name in r["cells"] for r in arms.values())]
  return {"title": title, "resamples": resamples, "level": stats.LEVEL,
          "bootstrap_seed": BOOTSTRAP_SEED, "replay_share": replay_share,
          "columns": [_verdict(c, arms, paired[c.metric]) for c in order], "arms": rows,
          "versus_standard": _versus("standard", shared, names, paired, samples)
                             if "standard" in arms else {},
          "between_seeds": _between_seeds(arms, samples, shared, resamples),
          "seed_level": _seed_level(arms, samples, shared),
          "gain": {"window": window, "noise_floor": gain_noise_floor(evals)}}


def _fmt(x: float | None, digits: int = 1) -> str:
  return "–" if x is None else f"{x:.{digits}f}"


def _cell_text(cell: Mapping[str, Any] | None, col: Mapping[str, Any], method: str) -> str:
  if cell is None:
    return "–"
  if cell["floor"]:
    return "0 (floor)"
  d = col["digits"]
  mean = _fmt(cell["mean"], d)
  text = (f"**{mean}**" if method == col["best"] else mean) + \
      f" [{_fmt(cell['lo'], d)}, {_fmt(cell['hi'], d)}]"
  if not cell["per_sample"]:
    text += "†"
  return text + (" ≈" if method in col["within_noise_of_best"] else "")


def _count(x: int | None) -> str:
  return "–" if x is None else f"{x:,}"


def _span(xs: Sequence[float] | None, fmt) -> str:
  """One value, or min–max when the seeds' configs differ."""
  if not xs:
    return "–"
  return fmt(xs[0]) if len(set(xs)) == 1 else f"{fmt(min(xs))}–{fmt(max(xs))}"


def _budget_markdown(cmp: Mapping[str, Any]) -> list[str]:
  head = ["method", "training tokens", "documents trained on", "unique tokens (per pass)",
          "passes", "documents used", "source tokens dropped"]
  lines = ["## Budgets", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  for method, row in cmp["arms"].items():
    b = row["budget"]
    if b is None:  # a reference row
      continue
    dropped = "–"
    if b.get("source_tokens"):
      share = 100 * b["source_tokens_dropped"] / b["source_tokens"]
      dropped = f"{_count(b['source_tokens_dropped'])} ({share:.1f}%)"
    cells = [_span(b.get("training_tokens"), _count), _span(b.get("trained_documents"), _count),
             _count(b.get("sample_tokens")),
             _span(b.get("passes"), lambda p: f"{p:.2f}"), _count(b.get("documents_used")),
             dropped]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return lines + [
      "", "training tokens = steps × batch × length (the trainer's manifest); documents trained "
      "on = distinct documents in the exported rows (export manifest; for NExtLong its "
      "meta-documents only, not the articles its distractor chunks come from); unique tokens = "
      "the method Task's tokens per pass (synthesis manifest); passes = training tokens × "
      f"(1 − replay share {cmp['replay_share']}) / unique tokens; documents used and source "
      "tokens dropped (read but in no sample) per pass, from the synthesis manifest.", ""]


def _inspect_markdown(out: Path) -> list[str]:
  """The data diagnostics that `synth inspect` wrote (OUT/inspect*/inspect.json: one per
  reference model or scored span), if any, each with every method's LRD minus Standard's."""
  paths = sorted(out.glob("inspect*/inspect.json"))
  if not paths:
    return []
  from longjax.synth import inspect  # pylint: disable=import-outside-toplevel
  lines = ["## Data diagnostics before training (`synth inspect`)", ""]
  for path in paths:
    result = json.loads(path.read_text())
    lo, hi = result["scored_span"]
    lines += [f"### {path.parent.name}: reference {result['model']}, scored tokens {lo}–{hi}",
              "", inspect.markdown_table(result), "", *_lrd_differences(result),
              f"- LRD c = NLL of the last quarter of each sample with only the c tokens before "
              f"it as context, minus its NLL with the full sample (nats/token): > 0 means the "
              "method's data rewards long context. An interval that contains 0 is no evidence "
              f"either way. Contexts: {result['contexts']}; plot: {path.parent.name}/inspect.png."
              + "".join(f" {n}." for n in result.get("notes", [])), "", *_overlap(path.parent)]
  return lines + ["## Trained arms", ""]


def _overlap(directory: Path) -> list[str]:
  """How much of the scored samples the reference trained on (`lrd_overlap.py` wrote
  overlap.md beside the scores), if measured."""
  path = directory / "overlap.md"
  if not path.exists():
    return []
  return ["Training overlap (`experiments/compare_methods/lrd_overlap.py`): a method whose "
          "samples the reference trained on is not compared on equal terms.", "",
          path.read_text().strip(), ""]


def _lrd_differences(result: Mapping[str, Any]) -> list[str]:
  """Each method's LRD minus Standard's, per context, with a bootstrap interval over the two
  methods' samples (drawn independently); [] without Standard or per-sample scores."""
  methods = result["methods"]
  base = methods.get("standard", {}).get("per_sample")
  if not base or "lrd_c" + str(result["contexts"][0]) not in base[0]:
    return []
  cols = [f"lrd_c{c}" for c in result["contexts"]]
  rng = np.random.default_rng(0)
  lines = ["| LRD − Standard's | " + " | ".join(f"c={c}" for c in result["contexts"]) + " |",
           "|---|" + "---:|" * len(cols)]
  for name, entry in methods.items():
    if name == "standard":
      continue
    cells = []
    for col in cols:
      d = stats.independent_difference([r[col] for r in entry["per_sample"]],
                                       [r[col] for r in base], rng)
      mark = "" if stats.contains_zero(d) else " *"
      cells.append(f"{d.mean:+.4f} [{d.lo:+.4f}, {d.hi:+.4f}]{mark}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return lines + ["", "(* the 95% interval excludes 0; samples differ between methods, so the "
                  "difference is unpaired)", ""]


def _difference_table(cmp: Mapping[str, Any], title: str, label: str,
                      table: Mapping[str, Mapping[str, Any]] | None, note: str) -> list[str]:
  """A markdown section: `title`, one row per entry of `table` ({row: {column: difference}})
  under the columns it has, then `note` (and the † note where it applies); [] without rows."""
  if not table:
    return []
  cols = [c for c in cmp["columns"] if c["name"] in next(iter(table.values()))]
  return [f"## {title}", "", f"| {label} | " + " | ".join(c["name"] for c in cols) + " |",
          "|---|" + "---:|" * len(cols)] + _difference_rows(table, cols) + [
      "", note + _dagger_note(table), ""]


def _versus_markdown(cmp: Mapping[str, Any]) -> list[str]:
  """The paired differences from Standard, one row per other arm."""
  return _difference_table(
      cmp, "Paired differences from Standard", "method", cmp.get("versus_standard"),
      "Each cell: the arm's mean minus Standard's, with its paired 95% bootstrap interval; "
      "*: the interval excludes 0. Scores and gains: > 0 favours the arm; NLL: < 0 favours it.")


def _difference_rows(table: Mapping[str, Mapping[str, Any]],
                     cols: Sequence[Mapping[str, Any]]) -> list[str]:
  """One markdown row per entry of `table` ({row label: {column: paired difference}})."""
  lines = []
  for label, cells in table.items():
    texts = []
    for c in cols:
      d, cell = c["digits"], cells[c["name"]]
      texts.append(f"{cell['mean']:+.{d}f} [{_fmt(cell['lo'], d)}, {_fmt(cell['hi'], d)}]"
                   + ("" if cell.get("per_sample", True) else "†")
                   + (" *" if cell["significant"] else ""))
    lines.append(f"| {label} | " + " | ".join(texts) + " |")
  return lines


def _dagger_note(table: Mapping[str, Mapping[str, Any]]) -> str:
  """The sentence that explains † in a difference table, or "" when it has none."""
  if all(cell.get("per_sample", True) for cells in table.values() for cell in cells.values()):
    return ""
  return (" †: an eval of the difference holds only means for this metric, so the interval "
          "leaves its eval-sample noise out.")


def _seed_noise_markdown(cmp: Mapping[str, Any]) -> list[str]:
  """Seed k minus seed 0 of one arm: the training-noise yardstick for the differences above."""
  return _difference_table(
      cmp, "Training-seed noise: two seeds of one arm", "arm: seeds", cmp.get("between_seeds"),
      "Same method, data pool and eval samples; only the training seed (which rows are "
      "drawn, in which order) differs, so every cell here is noise. *: the paired interval over "
      "the eval samples excludes 0 all the same: such intervals leave training noise out. Each "
      "row is one draw of that noise, a rough scale and not a bound (a cell near 0 does not "
      "make the noise small there); a difference between two arms carries the training noise "
      "of both.")


def _seed_level_markdown(cmp: Mapping[str, Any]) -> list[str]:
  """The differences from Standard with training runs, not eval samples, as the unit."""
  level = cmp.get("seed_level")
  if not level:
    return []
  return _difference_table(
      cmp, "Seed-level differences from Standard: each training run one observation",
      "method (runs)", level["versus_standard"],
      "Each cell: the mean of the arm's runs minus the mean of Standard's, with a 95% t "
      "interval. Its variance is the training noise s² (1/n_arm + 1/n_standard) plus the "
      "paired eval-sample variance of the difference less the training noise that variance "
      "already holds; s² is the variance between runs of one arm (each run scored on the same "
      f"eval samples), pooled over every arm with two or more runs ({level['df']} degrees of "
      "freedom), floored by the run × sample interaction estimated from the per-sample scores; "
      "the t quantile uses the Welch–Satterthwaite degrees of freedom. *: the interval "
      "excludes 0. Unlike the bootstrap above, which redraws an arm's few seeds with "
      "replacement, this counts training runs as observations, so it is the check to read with "
      "few seeds; it assumes every method's training noise has the same variance (stats.py, "
      "`run_noise`). Each run's value of every column: `arms.<method>.run_means` in "
      "comparison.json.")


def _between_methods_markdown(cmp: Mapping[str, Any]) -> list[str]:
  """The seed-level differences between the arms other than Standard, pair by pair."""
  return _difference_table(
      cmp, "Seed-level differences between the other methods", "methods (runs)",
      (cmp.get("seed_level") or {}).get("between_methods"),
      "As the table above, for each pair of the other arms: the later one in table order minus "
      "the earlier. *: the interval excludes 0.")


def _family_markdown(cmp: Mapping[str, Any]) -> list[str]:
  """The primary column's pairwise differences with their p-values, raw and Holm-adjusted."""
  family = (cmp.get("seed_level") or {}).get("family")
  if not family or not family["rows"]:
    return []
  lines = [f"## All pairs at once: {family['column']}, Holm-adjusted", "",
           "| difference (runs) | mean | p | p, Holm | significant for the family "
           "| p, each arm's own variance |", "|---|---:|---:|---:|---|---:|"]
  for r in family["rows"]:
    own = "–" if r.get("p_own_variance") is None else f"{r['p_own_variance']:.4f}"
    lines.append(f"| {r['difference']} | {r['mean']:+.2f} | {r['p']:.4f} | {r['p_holm']:.4f} | "
                 f"{'yes' if r['significant'] else 'no'} | {own} |")
  return lines + ["", f"The {family['comparisons']} seed-level differences of "
                  f"{family['column']} above (every arm against Standard and every other pair), "
                  "sorted by p: the two-sided p-value of the t interval's test, and the same "
                  "after Holm's step-down adjustment for the whole family, which keeps the "
                  "chance of any false \"significant\" among them at 5% (stats.py, `holm`). "
                  "At 95% each, about one in twenty differences with no effect reads as "
                  "significant, so a * above whose Holm p is ≥ 0.05 is suggestive, not shown. "
                  "Both p-values assume every arm's training noise has the same variance (the "
                  "pool); the last column drops that assumption and uses each arm's own runs "
                  "(Welch, n − 1 degrees of freedom per arm: with two runs a weak test, so it "
                  "says how much the result leans on the pool, not whether it is true). The "
                  "per-column * marks in the tables above are not adjusted for the family.", ""]


def markdown(cmp: Mapping[str, Any], out: Path | None = None) -> str:
  """The diagnostics (if `out` has them), the comparison table (+ a verdict row), its notes and
  the budget table, from `compare`."""
  cols = cmp["columns"]
  head = ["method", "seeds"] + [c["name"] for c in cols]
  lines = [f"# {cmp['title']}", ""] + (_inspect_markdown(out) if out else []) + [
      "| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(cols)]
  rows = cmp["arms"]
  for name, row in rows.items():
    cells = [_cell_text(row["cells"].get(c["name"]), c, name) for c in cols]
    label, seeds = (f"*{name}*", "ref") if row["reference"] else (name, str(len(row["seeds"])))
    lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
  verdict = ["all arms within noise" if c["all_within_noise"] else "" for c in cols]
  lines.append("| *verdict* | | " + " | ".join(verdict) + " |")
  notes = [n.format(resamples=cmp["resamples"]) for n in NOTES]
  if any(not cell["per_sample"] for r in rows.values() for cell in r["cells"].values()):
    notes.append(AGGREGATE_NOTE)
  if any(len(r["seeds"]) < 2 for r in rows.values() if not r["reference"]):
    notes.append(ONE_SEED_NOTE)
  gain = cmp.get("gain") or {}
  if gain.get("noise_floor") is not None:
    w = gain["window"]
    notes.append(GAIN_NOTE.format(w=w, lo=w - w // 4, hi=w - 1, floor=gain["noise_floor"]))
  if any(r["reference"] for r in rows.values()):
    notes.append(REFERENCE_NOTE)
  lines += [""] + [f"- {n}" for n in notes] + [""]
  return "\n".join(lines + _versus_markdown(cmp) + _seed_noise_markdown(cmp)
                   + _seed_level_markdown(cmp) + _between_methods_markdown(cmp)
                   + _family_markdown(cmp) + _budget_markdown(cmp))


def _errorbar(cells: Sequence[Mapping[str, float]]) -> list[list[float]]:
  return [[c["mean"] - c["lo"] for c in cells], [c["hi"] - c["mean"] for c in cells]]


def plot(cmp: Mapping[str, Any], path: Path) -> None:
  """Score averages and gold-answer NLL per row, and loss by position, with 95% intervals."""
  rows = {f"{n} (ref)" if r["reference"] else n: r for n, r in cmp["arms"].items()}
  names = [c["name"] for c in cmp["columns"]]
  avgs = [n for n in names if n.endswith(" avg")]
  has_gold = "gold-answer NLL" in names
  fig, axes = plt.subplots(1, 3 if has_gold else 2, figsize=(17 if has_gold else 12, 4.5))
  ax_s, ax_l = axes[0], axes[-1]
  width = 0.8 / max(1, len(rows))
  for i, (method, r) in enumerate(rows.items()):
    cells = [r["cells"].get(n) or {"mean": 0.0, "lo": 0.0, "hi": 0.0} for n in avgs]
    ax_s.bar([j + i * width for j in range(len(avgs))], [c["mean"] for c in cells], width,
             yerr=_errorbar(cells), capsize=3, label=method)
    curve = r.get("loss_by_position")
    if curve:
      mids = [(lo + hi) / 2 for lo, hi in curve["buckets"]]
      ax_l.errorbar(mids, [c["mean"] for c in curve["nll_full"]], yerr=_errorbar(curve["nll_full"]),
                    marker="o", capsize=3, label=method)
  ax_s.set_xticks([j + 0.4 - width / 2 for j in range(len(avgs))], [n[:-4] for n in avgs])
  top = max([r["cells"][n]["hi"] for r in rows.values() for n in avgs if n in r["cells"]] + [1.0])
  ax_s.set_ylim(0, min(100.0, top * 1.15))
  ax_s.set_ylabel("score (avg over lengths), 95% interval")
  ax_s.set_title("task scores")
  if has_gold:
    gold = [rows[m]["cells"].get("gold-answer NLL") for m in rows]
    shown = [(m, c) for m, c in zip(rows, gold) if c]
    axes[1].bar([m for m, _ in shown], [c["mean"] for _, c in shown],
                yerr=_errorbar([c for _, c in shown]), capsize=4,
                color=[f"C{i}" for i, g in enumerate(gold) if g])
    axes[1].set_ylabel("NLL (nats/token), lower is better")
    axes[1].set_title("gold-answer NLL (teacher-forced)")
    axes[1].set_ylim(bottom=max(0.0, min(c["lo"] for _, c in shown) - 0.5))
  ax_l.set_xscale("log")
  ax_l.set_xlabel("token position")
  ax_l.set_ylabel("NLL (nats)")
  ax_l.set_title("held-out loss by position")
  for ax in (ax_s, ax_l):
    if ax.get_legend_handles_labels()[0]:  # an empty panel (no scores, no loss) has none
      ax.legend()
  fig.suptitle(cmp["title"])
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)


def plot_differences(cmp: Mapping[str, Any], path: Path) -> bool:
  """Each arm minus Standard on the score averages, with the paired bootstrap's interval and,
  where there is one, the seed-level interval; then the seed-level differences between the
  other methods and the training-noise rows; False (no file) when there is nothing to compare
  with Standard."""
  versus = cmp.get("versus_standard")
  if not versus:
    return False
  level = (cmp.get("seed_level") or {}).get("versus_standard", {})
  by_arm = {label.split(" (")[0]: cells for label, cells in level.items()}
  rows = [(f"{a} − standard", d, by_arm.get(a)) for a, d in versus.items()]
  between = (cmp.get("seed_level") or {}).get("between_methods", {})
  rows += [(re.sub(r" \(\d+\)", "", label), None, cells) for label, cells in between.items()]
  rows += [(f"noise: {label}", d, None) for label, d in cmp.get("between_seeds", {}).items()]
  names = [c["name"] for c in cmp["columns"]
           if c["name"].endswith("avg") or c["name"] == "lite_avg"]
  fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 0.6 * len(rows) + 1.8),
                           sharey=True, squeeze=False)
  for ax, name in zip(axes[0], names):
    for y, (label, diff, seed_level) in enumerate(rows):
      noise = label.startswith("noise")
      if diff:
        cell = diff[name]
        ax.errorbar(cell["mean"], y + 0.12, xerr=[[cell["mean"] - cell["lo"]],
                                                  [cell["hi"] - cell["mean"]]],
                    fmt="o", color="grey" if noise else "C0", capsize=3,
                    label="paired bootstrap" if y == 0 else None)
      if seed_level:
        cell = seed_level[name]
        ax.errorbar(cell["mean"], y - 0.12, xerr=[[cell["mean"] - cell["lo"]],
                                                  [cell["hi"] - cell["mean"]]],
                    fmt="s", color="C3", capsize=3,
                    label="seed level (runs as observations)" if y == 0 else None)
    ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_title(name)
    ax.set_xlabel("difference, 95% interval")
  axes[0][0].set_yticks(range(len(rows)), [r[0] for r in rows])
  axes[0][0].invert_yaxis()
  fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
  fig.suptitle(f"{cmp['title']}: differences from Standard, then between the other methods "
               "(grey: seed k − seed 0 of one arm, pure training noise)")
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  with atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)
  return True


def write_comparison(out: Path, title: str, resamples: int = stats.RESAMPLES,
                     records_dir: Path | None = None, synthesis: Path | None = None) -> str:
  """Writes OUT/comparison.{md,json,png} from the records in RECORDS_DIR (default
  OUT/results); returns the Markdown. Raises ValueError when there is none, or when the trained
  arms differ in what `records.check_comparable` compares. SYNTHESIS, a synthesis.json, gives
  every trained arm's synthesis budget instead of the copy its record carries."""
  out = Path(out)
  records_dir = Path(records_dir) if records_dir else out / "results"
  records = records_lib.read_records(records_dir)
  if not records:
    raise ValueError(f"no records <method>_seed<k>.json or reference_<name>.json under "
                     f"{records_dir} (run.py's eval stage writes them)")
  if synthesis is not None:
    records = with_synthesis(records, json.loads(Path(synthesis).read_text()))
  records_lib.check_comparable(records)
  cmp = compare(records, title, resamples)
  table = markdown(cmp, out)
  write_json(out / "comparison.json", cmp)
  write_text(out / "comparison.md", table)
  plot(cmp, out / "comparison.png")
  plot_differences(cmp, out / "comparison_differences.png")
  return table


def with_synthesis(records: Sequence[Mapping[str, Any]],
                   synthesis: Mapping[str, Any]) -> list[dict[str, Any]]:
  """The records with every trained arm's synthesis budget taken from `synthesis` (a
  synthesis.json): a record carries the copy that travelled with its run, which is stale when
  the index was rebuilt after it (an error if the file has no budget for an arm, or another
  tokenizer than the records')."""
  budgets = synthesis.get("budgets", {})
  sha = (synthesis.get("tokenizer") or {}).get("sha256")
  out = []
  for r in records:
    if not r["reference"]:
      if r["method"] not in budgets:
        raise ValueError(f"the synthesis file has no budget for {r['method']!r} "
                         f"(it has {sorted(budgets)})")
      if r["training"]["tokenizer"]["sha256"] != sha:
        raise ValueError(f"{r['method']} seed {r['seed']}: trained with tokenizer "
                         f"{r['training']['tokenizer']['sha256']}, the synthesis file is of {sha}")
      r = {**r, "synthesis": budgets[r["method"]]}
    out.append(dict(r))
  return out


def _reference(text: str) -> tuple[str, Path]:
  name, sep, eval_dir = text.partition("=")
  if not (sep and name and eval_dir):
    raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=EVAL_DIR")
  return name, Path(eval_dir)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description="Rebuilds OUT/comparison.{md,json,png} from the "
                                   "records OUT/results/*.json of "
                                   "experiments/compare_methods/run.py.")
  parser.add_argument("out", type=Path, help="the comparison's output directory (run.py --out)")
  parser.add_argument("--title", default=None, help="table title (default: the directory name)")
  parser.add_argument("--resamples", type=int, default=stats.RESAMPLES)
  parser.add_argument("--reference", type=_reference, action="append", default=[],
                      metavar="NAME=EVAL_DIR",
                      help="first record the `python -m longjax.eval` output EVAL_DIR of a model "
                           "evaluated without training as the reference row NAME (repeatable), "
                           "e.g. 'SmolLM2 as shipped=runs/eval_smollm2'")
  parser.add_argument("--records", type=Path, default=None, metavar="DIR",
                      help="read the records from DIR instead of OUT/results, e.g. a run's "
                           "committed records experiments/compare_methods/results/<run>")
  parser.add_argument("--synthesis", type=Path, default=None, metavar="FILE",
                      help="take every arm's synthesis budget from FILE (a synthesis.json, e.g. "
                           "the run's committed one) instead of its record's copy")
  args = parser.parse_args(argv)
  try:
    for name, eval_dir in args.reference:
      print(f"wrote {records_lib.write_reference(args.out, name, eval_dir)}", file=sys.stderr)
    print(write_comparison(args.out, args.title or args.out.resolve().name,
                           resamples=args.resamples, records_dir=args.records,
                           synthesis=args.synthesis))
  except (ValueError, OSError) as e:
    print(f"comparison: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
