"""The comparison table and plot: methods x task categories x lengths, plus loss by position.

Reads each arm's `results.json` (written by `python -m longjax.eval`) and writes
OUT/comparison.md, OUT/comparison.json and OUT/comparison.png. The table has the shape of the
papers' Table 1 (NExtLong arXiv 2501.12766): one row per method, a column per category and
length, and the categories' average; here `lite_avg` (specs/evaluation.md), never comparable with
a published Avg. The loss columns carry the signal for models too small to generate answers: the
mean teacher-forced NLL of the tasks' gold answers, the full-context NLL on the last position
bucket of held-out text, and how much the context beyond 512 tokens lowers it there.
"""

import json
import math
from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from longjax.synth import artifacts  # pylint: disable=wrong-import-position
from longjax.synth.methods.base import format_length  # pylint: disable=wrong-import-position


def _fmt(x: float | None, digits: int = 1) -> str:
  return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _last_bucket(loss: Mapping[str, Any], key: str) -> float | None:
  values = [v for v in loss["log"].get(key, []) if v is not None and not math.isnan(v)]
  return values[-1] if values else None


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
  """One arm's row: category (or, for a task subset, task) score per length and average,
  lite_avg, gold-answer NLL and the loss summary."""
  row: dict[str, Any] = {"categories": {}, "lite_avg": results["summary"].get("lite_avg")}
  row["per_task"] = not results["summary"].get("categories")
  cats = results["summary"].get("categories") or {  # a task subset: one column group per task
      task: {"by_length": by_len, "average": results["summary"]["task_average"][task]}
      for task, by_len in results.get("scores", {}).items()}
  for name, cat in cats.items():
    row["categories"][name] = {"by_length": {int(n): v for n, v in cat["by_length"].items()},
                               "average": cat["average"]}
  gold = [v["nll"] for by_len in (results.get("gold_loglik") or {}).values()
          for v in by_len.values()]
  row["gold_nll"] = sum(gold) / len(gold) if gold else None
  loss = results.get("loss")
  if loss:
    w = min(int(x) for x in loss["windows"])
    row["loss"] = {"nll_last": _last_bucket(loss, "nll_full"), "window": w,
                   "gain_last": _last_bucket(loss, f"gain_w{w}"),
                   "buckets": loss["log"]["buckets"], "nll_full": loss["log"]["nll_full"]}
  return row


def markdown(rows: Mapping[str, Mapping[str, Any]], title: str) -> str:
  cats = sorted({c for r in rows.values() for c in r["categories"]})
  lengths = sorted({n for r in rows.values() for c in r["categories"].values()
                    for n in c["by_length"]})
  if any(r.get("per_task") for r in rows.values()):
    lengths = []  # task subsets: averages only, or the table gets too wide to read
  head = ["method"] + [f"{c} {format_length(n)}" for c in cats for n in lengths]
  head += [f"{c} avg" for c in cats] + ["lite_avg", "gold-answer NLL", "NLL last bucket",
                                         "gain from >512 ctx"]
  lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  for method, r in rows.items():
    cells = [_fmt(r["categories"].get(c, {}).get("by_length", {}).get(n))
             for c in cats for n in lengths]
    cells += [_fmt(r["categories"].get(c, {}).get("average")) for c in cats]
    loss = r.get("loss", {})
    cells += [_fmt(r.get("lite_avg"), 2), _fmt(r.get("gold_nll"), 3),
              _fmt(loss.get("nll_last"), 3), _fmt(loss.get("gain_last"), 3)]
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(rows: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
  """Scores per category, gold-answer NLL per method (when scored), and loss by position."""
  has_gold = any(r.get("gold_nll") is not None for r in rows.values())
  fig, axes = plt.subplots(1, 3 if has_gold else 2, figsize=(17 if has_gold else 12, 4.5))
  ax_s, ax_l = axes[0], axes[-1]
  cats = sorted({c for r in rows.values() for c in r["categories"]})
  width = 0.8 / max(1, len(rows))
  for i, (method, r) in enumerate(rows.items()):
    values = [r["categories"].get(c, {}).get("average") or 0.0 for c in cats]
    ax_s.bar([j + i * width for j in range(len(cats))], values, width, label=method)
    loss = r.get("loss")
    if loss:
      mids = [(lo + hi) / 2 for lo, hi in loss["buckets"]]
      ax_l.plot(mids, loss["nll_full"], marker="o", label=method)
  ax_s.set_xticks([j + 0.4 - width / 2 for j in range(len(cats))], cats)
  top = max([r["categories"][c].get("average") or 0.0 for r in rows.values()
             for c in r["categories"]] + [1.0])
  ax_s.set_ylim(0, min(100.0, top * 1.15))
  ax_s.set_ylabel("score (avg over lengths)")
  ax_s.set_title("task scores")
  ax_s.legend()
  if has_gold:
    names = list(rows)
    axes[1].bar(names, [rows[m].get("gold_nll") or 0.0 for m in names],
                color=[f"C{i}" for i in range(len(names))])
    axes[1].set_ylabel("NLL (nats/token), lower is better")
    axes[1].set_title("gold-answer NLL (teacher-forced)")
    lo = min(rows[m]["gold_nll"] for m in names if rows[m].get("gold_nll") is not None)
    axes[1].set_ylim(bottom=max(0.0, lo - 0.5))
  ax_l.set_xscale("log")
  ax_l.set_xlabel("token position")
  ax_l.set_ylabel("NLL (nats)")
  ax_l.set_title("held-out loss by position")
  ax_l.legend()
  fig.suptitle(title)
  fig.tight_layout()
  with artifacts.atomic_path(path) as tmp:
    fig.savefig(tmp, dpi=110, format="png")
  plt.close(fig)


def write_comparison(eval_dirs: Mapping[str, Path], out: Path, title: str) -> str:
  """Writes comparison.{md,json,png} under `out`; returns the Markdown table."""
  rows = {m: summarize(json.loads((Path(d) / "results.json").read_text()))
          for m, d in eval_dirs.items()}
  table = markdown(rows, title)
  artifacts.write_json(out / "comparison.json", rows)
  artifacts.write_text(out / "comparison.md", table)
  plot(rows, out / "comparison.png", title)
  return table
