"""The results directory: results.json, results.md (tables) and PNG plots.

Tables follow the papers: per task x length scores, per-length means of each category (RULER-11,
HELMET Recall), their mean over lengths, RULER's effective length, and `lite_avg`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from longjax.io import atomic_path, format_length, write_json, write_text

DROPPED_NOTE = (
    "Not run (no offline data): RULER qa_1/qa_2; HELMET RAG, Re-rank, LongQA, Summ, Cite. "
    "`lite_avg` = mean of the categories shown here; never compare it with a published Avg.")
CATEGORY_TITLES = {"ruler": "RULER-11 avg", "recall": "HELMET Recall avg", "icl": "ICL avg"}


def _fmt(x: float | None, digits: int = 1) -> str:
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return "–"
  return f"{x:.{digits}f}"


def markdown(results: Mapping[str, Any]) -> str:
  """The human-readable report of `results` (the dict written to results.json)."""
  lengths = results["lengths"]
  heads = [format_length(n) for n in lengths]
  lines = [f"# Long-context evaluation: `{results['model']}`", "",
           f"{results['samples']} samples per task and length, seed {results['seed']}, greedy "
           f"decoding, tokenizer `{results['tokenizer']}`.", ""]
  heldout = results.get("heldout")
  if heldout:
    lines += [f"Held-out text (NIAH text haystack, loss sequences): `{heldout['file']}`, "
              f"{heldout['documents']} documents, sha256 `{heldout['sha256']}`.", ""]
  scores, summary = results["scores"], results["summary"]
  if scores:
    lines += ["| task | " + " | ".join(heads) + " | avg |",
              "|---|" + "---:|" * (len(lengths) + 1)]
    for task, by_len in scores.items():
      row = [_fmt(by_len.get(n)) for n in lengths]
      lines.append(f"| {task} | " + " | ".join(row) + f" | {_fmt(summary['task_average'][task])} |")
    for name, cat in summary["categories"].items():
      row = [_fmt(cat["by_length"].get(n)) for n in lengths]
      title = CATEGORY_TITLES.get(name, name)
      lines.append(f"| **{title}** | " + " | ".join(row) + f" | **{_fmt(cat['average'])}** |")
    lines.append("")
    for name, cat in summary["categories"].items():
      eff = cat["effective_length"]
      lines.append(f"- {CATEGORY_TITLES.get(name, name)}: effective length "
                   f"{format_length(eff) if eff else 'none'} (score >= 85.6)")
    if summary.get("lite_avg") is not None:
      lines.append(f"- lite_avg (mean of {', '.join(summary['lite_avg_of'])}): "
                   f"{_fmt(summary['lite_avg'], 2)}")
    lines += ["", DROPPED_NOTE, ""]
  if results.get("gold_loglik"):
    lines += _gold_markdown(results["gold_loglik"], lengths)
  if results.get("niah_depth"):
    lines += _depth_markdown(results["niah_depth"])
  loss = results.get("loss")
  if loss:
    lines += _loss_markdown(loss)
  return "\n".join(lines) + "\n"


def _gold_markdown(gold: Mapping[str, Mapping], lengths) -> list[str]:
  """Secondary metric table: teacher-forced gold-answer NLL and argmax exact match per length."""
  get = lambda by_len, n: by_len.get(n, by_len.get(str(n)))
  lines = ["## Gold answer, teacher-forced (secondary; a labelled deviation)", "",
           "Mean NLL (nats/token) of the gold answer after the prompt / % of examples whose "
           "every answer token is the argmax.", "",
           "| task | " + " | ".join(format_length(n) for n in lengths) + " |",
           "|---|" + "---:|" * len(lengths)]
  for task, by_len in gold.items():
    cells = []
    for n in lengths:
      g = get(by_len, n)
      cells.append(f"{g['nll']:.3f} / {g['exact']:.0f}%" if g else "–")
    lines.append(f"| {task} | " + " | ".join(cells) + " |")
  return lines + [""]


def _depth_markdown(depth: Mapping[str, Mapping]) -> list[str]:
  """NIAH diagnostic: accuracy by needle depth (token position / prompt length) per length."""
  lines = ["## Needle depth diagnostic (accuracy by depth decile of the prompt)", ""]
  for task, by_len in depth.items():
    if not by_len:
      continue
    bins = len(next(iter(by_len.values())))
    lines += [f"**{task}**", "", "| length | " + " | ".join(
        f"{100 * i // bins}–{100 * (i + 1) // bins}%" for i in range(bins)) + " |",
              "|---|" + "---:|" * bins]
    for length, accs in sorted(by_len.items(), key=lambda kv: int(kv[0])):
      lines.append(f"| {format_length(int(length))} | " + " | ".join(_fmt(a, 0) for a in accs)
                   + " |")
    lines.append("")
  return lines


def _loss_markdown(loss: Mapping[str, Any]) -> list[str]:
  ws = loss["windows"]
  srcs = sorted({s["source"] for s in loss["sequences"]})
  conc = sum(s["concatenated"] for s in loss["sequences"])
  lines = [f"## Loss by position ({len(loss['sequences'])} held-out sequences of "
           f"{format_length(loss['length'])} tokens from {', '.join(srcs)}; "
           f"{conc} concatenated)", "",
           "NLL in nats per target position bucket; gain_w = NLL with only the last ~w tokens "
           "of context minus NLL with the full context (> 0: context beyond w helps).", "",
           "| positions | NLL full | " + " | ".join(f"NLL w={w} | gain w={w}" for w in ws) + " |",
           "|---|---:|" + "---:|---:|" * len(ws)]
  t = loss["log"]
  for i, (lo, hi) in enumerate(t["buckets"]):
    cells = [_fmt(t["nll_full"][i], 3)]
    for w in ws:
      cells += [_fmt(t[f"nll_w{w}"][i], 3), _fmt(t[f"gain_w{w}"][i], 3)]
    lines.append(f"| {lo}–{hi} | " + " | ".join(cells) + " |")
  return lines + [""]


def _save(fig, path: Path) -> None:
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_scores(results: Mapping[str, Any], path: Path) -> None:
  """Score vs length: one line per task, thick lines for the category means."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(8, 5))
  for task, by_len in results["scores"].items():
    xs = sorted(int(n) for n in by_len)
    ax.plot(xs, [by_len[n] for n in xs], marker="o", lw=1, label=task)
  for name, cat in results["summary"]["categories"].items():
    xs = sorted(cat["by_length"])
    ax.plot(xs, [cat["by_length"][n] for n in xs], lw=3, ls="--",
            label=CATEGORY_TITLES.get(name, name))
  ax.axhline(85.6, color="grey", lw=0.8, ls=":")
  ax.set_xscale("log", base=2)
  ax.set_xticks(results["lengths"], [format_length(n) for n in results["lengths"]])
  ax.set_xlabel("context length (tokens)")
  ax.set_ylabel("score")
  ax.set_ylim(-2, 102)
  ax.set_title(f"{Path(str(results['model'])).name}: score vs length")
  ax.legend(fontsize=7, ncol=2, loc="lower left")
  _save(fig, path)
  plt.close(fig)


def plot_loss(loss: Mapping[str, Any], path: Path, title: str) -> None:
  """NLL by position (log buckets) with full and truncated context, and the gain."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  t = loss["log"]
  mids = [math.sqrt(max(lo, 1) * hi) for lo, hi in t["buckets"]]
  fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
  a.plot(mids, t["nll_full"], marker="o", label="full context")
  for w in loss["windows"]:
    a.plot(mids, t[f"nll_w{w}"], marker=".", label=f"last {w} tokens")
    b.plot(mids, t[f"gain_w{w}"], marker=".", label=f"w = {w}")
  for ax in (a, b):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("target position (tokens)")
    ax.legend(fontsize=8)
  a.set_ylabel("NLL (nats)")
  b.set_ylabel("NLL_w - NLL_full")
  b.axhline(0, color="grey", lw=0.8)
  a.set_title(f"{title}: loss by position")
  b.set_title("gain from context beyond w")
  _save(fig, path)
  plt.close(fig)


def load_results(path: str | os.PathLike) -> dict[str, Any]:
  """Reads results.json back with integer length keys (JSON stores them as strings)."""
  results = json.loads(Path(path).read_text())
  by_int = lambda table: {t: {int(n): v for n, v in s.items()} for t, s in table.items()}
  results["scores"] = by_int(results["scores"])
  per_sample = results.get("per_sample")  # absent in results written before it existed
  if per_sample:
    per_sample["scores"] = by_int(per_sample["scores"])
    if per_sample.get("gold_loglik"):
      per_sample["gold_loglik"] = by_int(per_sample["gold_loglik"])
  for cat in results["summary"]["categories"].values():
    cat["by_length"] = {int(n): v for n, v in cat["by_length"].items()}
  return results


def write_report(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> dict[str, Path]:
  """Writes results.json, results.md and the plots; returns their paths by kind."""
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {"json": write_json(out / "results.json", results),
           "markdown": write_text(out / "results.md", markdown(results))}
  if results["scores"]:
    paths["scores_png"] = out / "scores_vs_length.png"
    plot_scores(results, paths["scores_png"])
  if results.get("loss"):
    paths["loss_png"] = out / "loss_by_position.png"
    plot_loss(results["loss"], paths["loss_png"], Path(str(results["model"])).name)
  return paths
