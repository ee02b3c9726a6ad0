"""How much same-document context each arm's training rows give a token: a length confound check.

A row is one training example: a token can only use earlier tokens of the same row, and of
those, the ones of its own document are the long-range signal every method has (Quest, KNN and
ICLM add related documents on top). A method that happens to pick longer documents therefore
trains on more long-range dependencies for a reason that has nothing to do with its grouping.
This reads the provenance every exported row carries (the `[doc, start, end]` spans, Quest's
`[keyword, doc, start, end]`, in row order; NExtLong's chunk ids, laid out as its samples are
with the index's chunk store when `--index-dir` is given) and measures, over every row an arm
trains on:

  documents per row, and the share of rows one document fills alone;
  same-document context per token: how many earlier tokens of its own document the row holds
    (its position in the row's text of that document);
  the share of tokens with at least 1K, 4K and 8K such tokens;
  same-document reach per token: how far back in the row its document's first token lies (equal
    to the context when a document is one run; longer when other text sits between its runs,
    as NExtLong's distractors do), and the share of tokens reaching at least 1K, 4K and 8K;
  cross-document copies: the share of tokens that end an 8-token sequence whose first occurrence
    in the row ends in another document (text a model could copy from an earlier document, a
    signal that related documents bring and that is not long-range dependency).

Each is a mean over rows with a 95% bootstrap interval over rows (all seeds' rows pooled), and
each arm's difference from Standard with an unpaired bootstrap interval. For NExtLong the
same-document context of a meta-chunk's token counts the earlier chunks of its document across
the distractors between them. Without `--index-dir`, chunk rows are reported as not measured.

    python experiments/compare_methods/row_context.py runs/wiki16k/data \
        --index-dir runs/wiki16k/index --out experiments/compare_methods/results/wiki16k/row_context
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from array_record.python.array_record_module import ArrayRecordReader

from longjax.models.tokenizer import load_tokenizer_spec
from longjax.synth.inspect import IndexReader, span_pieces
from longjax.train.arrayrecord import RowFormat, read_export

THRESHOLDS = (1024, 4096, 8192)
COPY_NGRAM = 8
RESAMPLES = 2000
SEED = 0


def row_pieces(provenance: Sequence[Any], length: int,
               reader: IndexReader | None) -> list[tuple[int, int]] | None:
  """The `(document, tokens)` runs of one row in order, from its examples' provenance
  (document -1: layout tokens); None when an example's provenance has no spans and there is no
  index `reader` to lay out its chunks."""
  runs: list[tuple[int, int]] = []
  for entry in provenance:
    prov = json.loads(entry) if isinstance(entry, str) else entry
    if not isinstance(prov, dict):
      return None
    spans = span_pieces(prov)
    if spans is None:
      if reader is None or "meta_chunks" not in prov:
        return None
      spans = reader.token_pieces(prov, length)
    runs += spans
  return runs


def _run_sums(n: int, start: int) -> tuple[float, dict[int, int]]:
  """Sum of the values start, start + 1, ..., start + n - 1, and how many are >= each
  threshold."""
  return (n * start + n * (n - 1) / 2,
          {t: max(0, n - max(0, t - start)) for t in THRESHOLDS})


def cross_document_copies(tokens: np.ndarray, docs: np.ndarray, n: int) -> float:
  """Share of the row's tokens that end an n-token sequence whose first occurrence in the row
  ends in another document; tokens of no document (-1) never count."""
  if len(tokens) < n:
    return 0.0
  windows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(
      np.asarray(tokens, np.int64), n))
  keys = windows.view(np.dtype((np.void, windows.itemsize * n))).ravel()
  _, first, which = np.unique(keys, return_index=True, return_inverse=True)
  end_doc = np.asarray(docs)[n - 1:]
  first_doc = end_doc[first[which.ravel()]]
  copied = (first_doc != end_doc) & (end_doc >= 0) & (first_doc >= 0)
  return float(copied.sum()) / len(tokens)


def row_measures(pieces: Sequence[tuple[int, int]], length: int,
                 tokens: np.ndarray | None = None) -> dict[str, float]:
  """One row's documents, whether one fills it alone, mean same-document context and reach per
  token and the share of tokens with at least T of each (`ctx>=T`, `reach>=T`); with the row's
  `tokens`, also its share of cross-document copies (`copied`). `pieces` are `(document,
  tokens)` runs that must fill exactly `length` tokens; document -1 marks layout tokens
  (boundaries, separators), which belong to no document."""
  total = sum(n for _, n in pieces)
  if total != length:
    raise ValueError(f"row pieces cover {total} tokens, the rows hold {length}")
  seen: dict[int, int] = {}   # tokens of each document so far
  first: dict[int, int] = {}  # row position of each document's first token
  sums = {"context": 0.0, "reach": 0.0}
  at_least = {f"{k}>={t}": 0 for k in ("ctx", "reach") for t in THRESHOLDS}
  pos = 0
  for doc, n in pieces:
    if doc >= 0:
      first.setdefault(doc, pos)
      for key, prefix, start in (("context", "ctx", seen.get(doc, 0)),
                                 ("reach", "reach", pos - first[doc])):
        total_, counts = _run_sums(n, start)
        sums[key] += total_
        for t, c in counts.items():
          at_least[f"{prefix}>={t}"] += c
      seen[doc] = seen.get(doc, 0) + n
    pos += n
  out = {"documents": float(len(seen)), "one_document": float(len(seen) == 1),
         "context": sums["context"] / length,
         **{f"ctx>={t}": at_least[f"ctx>={t}"] / length for t in THRESHOLDS},
         "reach": sums["reach"] / length,
         **{f"reach>={t}": at_least[f"reach>={t}"] / length for t in THRESHOLDS}}
  if tokens is not None:
    docs = np.repeat([d for d, _ in pieces], [n for _, n in pieces])
    out["copied"] = cross_document_copies(tokens, docs, COPY_NGRAM)
  return out


def export_rows(data_dir: Path) -> Iterable[tuple[np.ndarray, list[str | None]]]:
  """Every row's tokens and provenance list of one export directory, shard by shard."""
  manifest = read_export(data_dir, verify=False)
  fmt = RowFormat.from_manifest(manifest)
  for shard in manifest["shards"]:
    reader = ArrayRecordReader(str(data_dir / shard["file"]))
    try:
      for i in range(reader.num_records()):
        record = reader.read([i])[0]
        yield fmt.decode(record)["targets"], fmt.provenance(record)
    finally:
      reader.close()


def arm_rows(data: Path) -> dict[str, list[Path]]:
  """Export directories `<method>_seed<k>` under `data`, grouped by method."""
  arms: dict[str, list[Path]] = {}
  for d in sorted(data.glob("*_seed*")):
    if (d / "manifest.json").is_file():
      arms.setdefault(d.name.rsplit("_seed", 1)[0], []).append(d)
  if not arms:
    raise ValueError(f"{data}: no export directories <method>_seed<k> with a manifest.json")
  return arms


def measure_arm(dirs: Sequence[Path], index_dir: Path | None) -> dict[str, np.ndarray] | None:
  """Per-row measures of every row of an arm's exports; None if its rows carry no spans and
  there is no index to lay out their chunks."""
  rows: list[dict[str, float]] = []
  reader = None
  for d in dirs:
    manifest = read_export(d, verify=False)
    length = RowFormat.from_manifest(manifest).length
    if index_dir is not None and reader is None:
      reader = IndexReader(index_dir, load_tokenizer_spec(manifest["config"]["tokenizer"]), None)
    for tokens, provenance in export_rows(d):
      pieces = row_pieces(provenance, length, reader)
      if pieces is None:
        return None
      rows.append(row_measures(pieces, length, tokens))
  return {k: np.array([r[k] for r in rows]) for k in rows[0]}


def _boot_means(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return v[rng.integers(0, len(v), (RESAMPLES, len(v)))].mean(axis=1)


def summarize(measures: Mapping[str, Mapping[str, np.ndarray] | None],
              base: str = "standard") -> dict[str, Any]:
  """Per arm and measure: mean and 95% interval over rows; per other arm: its difference from
  `base`, with an unpaired bootstrap interval (rows of two arms are independent draws)."""
  rng = np.random.default_rng(SEED)
  out: dict[str, Any] = {"arms": {}, "versus": {}}
  boots: dict[str, dict[str, np.ndarray]] = {}
  for arm, m in measures.items():
    if m is None:
      out["arms"][arm] = None
      continue
    boots[arm] = {k: _boot_means(v, rng) for k, v in m.items()}
    out["arms"][arm] = {"rows": int(len(next(iter(m.values())))), **{
        k: {"mean": float(v.mean()), "ci95": np.quantile(boots[arm][k], [0.025, 0.975]).tolist()}
        for k, v in m.items()}}
  if base in boots:
    for arm in (a for a in boots if a != base):
      out["versus"][arm] = {}
      for k in boots[arm]:
        diff = boots[arm][k] - boots[base][k]
        mean = out["arms"][arm][k]["mean"] - out["arms"][base][k]["mean"]
        lo, hi = np.quantile(diff, [0.025, 0.975])
        out["versus"][arm][k] = {"mean": mean, "ci95": [float(lo), float(hi)],
                                 "significant": not lo <= 0 <= hi}
  return out


COLUMNS = (("documents", "docs/row", 1), ("one_document", "rows of one doc", 3),
           ("context", "same-doc context/token", 0),
           *((f"ctx>={t}", f"tokens with ≥ {t // 1024}K", 3) for t in THRESHOLDS),
           ("reach", "same-doc reach/token", 0),
           *((f"reach>={t}", f"reaching ≥ {t // 1024}K", 3) for t in THRESHOLDS),
           ("copied", f"cross-doc copies ({COPY_NGRAM}-grams)", 4))


def markdown(summary: Mapping[str, Any], base: str = "standard") -> str:
  """The per-arm table and the differences from `base`."""
  head = "| arm | rows | " + " | ".join(c[1] for c in COLUMNS) + " |"
  lines = ["Same-document context in every exported training row (all seeds' rows pooled); "
           "mean [95% bootstrap interval over rows]. Cross-doc copies: share of tokens that end "
           f"{COPY_NGRAM} tokens first seen, in that order, in another document of the row.",
           "", head, "|---|---:|" + "---:|" * len(COLUMNS)]
  for arm, a in summary["arms"].items():
    if a is None:
      lines.append(f"| {arm} | – | " + " | ".join(["not measured (chunk rows: --index-dir)"] +
                                                ["–"] * (len(COLUMNS) - 1)) + " |")
      continue
    lines.append(f"| {arm} | {a['rows']:,} | " + " | ".join(
        f"{a[k]['mean']:.{d}f} [{a[k]['ci95'][0]:.{d}f}, {a[k]['ci95'][1]:.{d}f}]"
        for k, _, d in COLUMNS) + " |")
  if summary["versus"]:
    lines += ["", f"Difference from {base} (unpaired bootstrap over rows; *: excludes 0)", "",
              f"| arm − {base} | " + " | ".join(c[1] for c in COLUMNS) + " |",
              "|---|" + "---:|" * len(COLUMNS)]
    for arm, v in summary["versus"].items():
      lines.append(f"| {arm} | " + " | ".join(
          f"{v[k]['mean']:+.{d}f} [{v[k]['ci95'][0]:+.{d}f}, {v[k]['ci95'][1]:+.{d}f}]"
          + (" *" if v[k]["significant"] else "") for k, _, d in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def plot(measures: Mapping[str, Mapping[str, np.ndarray] | None], path: Path) -> None:
  """Per arm, the distribution of rows' mean same-document context (empirical CDF)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.2))
  for arm, m in measures.items():
    if m is None:
      continue
    x = np.sort(m["context"])
    ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=f"{arm} (mean {x.mean():.0f})")
  ax.set(xlabel="row's mean same-document context per token (tokens)",
         ylabel="share of rows at or below", title="Same-document context in the training rows")
  ax.legend()
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("data", type=Path, help="directory of <method>_seed<k> exports")
  parser.add_argument("--out", type=Path, required=True, help="writes row_context.{md,json,png}")
  parser.add_argument("--index-dir", type=Path, default=None,
                      help="the synthesis index the rows came from (lays out NExtLong's chunks)")
  args = parser.parse_args(argv)
  measures = {arm: measure_arm(dirs, args.index_dir)
              for arm, dirs in arm_rows(args.data).items()}
  summary = summarize(measures)
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "row_context.json").write_text(json.dumps(summary, indent=1))
  table = markdown(summary)
  (args.out / "row_context.md").write_text(table)
  plot(measures, args.out / "row_context.png")
  print(table)
  return 0


if __name__ == "__main__":
  sys.exit(main())
