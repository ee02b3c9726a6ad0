"""How much of each method's scored samples the 16K LRD reference model saw in training.

The LRD diagnostic scores every method's samples under one reference model; a reference trained
on part of the pool has seen some of those articles, which lowers their loss at every context
length. This measures, per sample, the share of tokens whose 32-token span (the token and the 31
before it) occurs anywhere in the reference's training rows (the export it trained on, every row
once), over the scored quarter (the targets the LRD averages) and over the whole sample; then
each method's mean with a 95% bootstrap interval and the Pearson correlation of the scored
share with the sample's LRD, within each method and over all samples. Equal overlap across methods means the caveat
touches every method alike; unequal overlap would confound the LRD comparison.

  python experiments/compare_methods/lrd_overlap.py \
      --selection runs/wiki16k/inspect_sel --train runs/wiki16k/data/standard_seed2 \
      --inspect experiments/compare_methods/results/wiki16k/inspect_standard_seed2/inspect.json \
      --out experiments/compare_methods/results/wiki16k/inspect_standard_seed2/overlap.json
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from longjax.io import write_json
from longjax.synth.inspect import mean_interval, read_selection
from row_context import export_rows

SPAN = 32
_POWERS = np.uint64(1_000_003) ** np.arange(SPAN - 1, -1, -1, dtype=np.uint64)

log = logging.getLogger("lrd_overlap")


def span_hashes(tokens: np.ndarray) -> np.ndarray:
  """A uint64 hash of every SPAN-token window of a 1-D token array (window i starts at i)."""
  windows = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.uint64), SPAN)
  with np.errstate(over="ignore"):  # the hash is a polynomial modulo 2**64
    return (windows * _POWERS).sum(axis=1, dtype=np.uint64)


def training_spans(data_dir: Path) -> np.ndarray:
  """The sorted distinct span hashes of every row of an export."""
  parts = []
  for i, (tokens, _) in enumerate(export_rows(data_dir)):
    parts.append(np.unique(span_hashes(tokens)))
    if (i + 1) % 200 == 0:
      log.info("%s: %d rows hashed", data_dir, i + 1)
  return np.unique(np.concatenate(parts))


def overlap(sample: np.ndarray, seen: np.ndarray, start: int) -> float:
  """Share of the tokens at or after `start` (and at least SPAN - 1 into the sample) whose span
  ending at them the training rows hold (`seen`: sorted distinct hashes, `training_spans`)."""
  hashes = span_hashes(sample)[max(start - SPAN + 1, 0):]
  at = np.minimum(np.searchsorted(seen, hashes), len(seen) - 1)
  return float((seen[at] == hashes).mean())


def measure(selection: Path, train: Path, inspect: Path | None) -> dict:
  result, tokens = read_selection(selection)
  scored_from = result["scored_length"] - result["scored_length"] // 4  # inspect's scored quarter
  seen = training_spans(train)
  lrd = json.loads(inspect.read_text())["methods"] if inspect else {}
  out = {"span": SPAN, "train": str(train), "training_spans": int(seen.size),
         "scored_from": scored_from, "methods": {}}
  pooled_overlap, pooled_lrd = [], []
  for name, samples in tokens.items():
    scored = [overlap(s, seen, scored_from) for s in samples]
    whole = [overlap(s, seen, 0) for s in samples]
    row = {"samples": len(samples), "scored": mean_interval(scored),
           "whole": mean_interval(whole), "per_sample_scored": scored}
    if name in lrd:
      values = [p["lrd_c4096"] for p in lrd[name]["per_sample"]]
      row["corr_scored_overlap_lrd_c4096"] = _corr(scored, values)
      pooled_overlap += scored
      pooled_lrd += values
    out["methods"][name] = row
  if pooled_lrd:
    out["corr_scored_overlap_lrd_c4096"] = _corr(pooled_overlap, pooled_lrd)
  return out


def _corr(x: list[float], y: list[float]) -> float | None:
  """Pearson r, or None when either side is constant."""
  if np.std(x) == 0 or np.std(y) == 0:
    return None
  return float(np.corrcoef(x, y)[0, 1])


def markdown(out: dict) -> str:
  cell = lambda s: f"{s['mean']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]"
  lines = [f"Share of tokens whose {out['span']}-token span (ending at the token) occurs in "
           f"{out['train']} (mean [95% bootstrap CI] over samples)", "",
           "| method | samples | scored quarter | whole sample | r with LRD c=4096 |",
           "|---|---:|---:|---:|---:|"]
  r = lambda v: "–" if v is None else f"{v:+.3f}"
  for name, m in out["methods"].items():
    lines.append(f"| {name} | {m['samples']} | {cell(m['scored'])} | {cell(m['whole'])} | "
                 f"{r(m.get('corr_scored_overlap_lrd_c4096'))} |")
  if "corr_scored_overlap_lrd_c4096" in out:
    lines += ["", f"Pearson r (scored-quarter overlap, LRD c=4096) over all samples: "
              f"{r(out['corr_scored_overlap_lrd_c4096'])}"]
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--selection", type=Path, required=True, help="`synth inspect --select-only` dir")
  p.add_argument("--train", type=Path, required=True, help="the reference's training export")
  p.add_argument("--inspect", type=Path, help="inspect.json of the scores under that reference")
  p.add_argument("--out", type=Path, required=True, help="JSON to write (and .md beside it)")
  args = p.parse_args()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
  out = measure(args.selection, args.train, args.inspect)
  write_json(args.out, out)
  args.out.with_suffix(".md").write_text(markdown(out) + "\n")
  print(markdown(out))


if __name__ == "__main__":
  main()
