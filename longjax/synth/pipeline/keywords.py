"""Quest's keyword choice and inverted index in Beam: the `keyword_stage` artifact, on workers.

1. Each query part is read: (doc, queries, RAKE candidates) per document.
2. Per document: its candidates after the seed blacklist, as (candidate, doc) pairs.
3. Per candidate: its document frequency (a count per key); the most frequent N of them (the
   auto blacklist, the report) are a top-N, a side input of step 5.
4. The pairs joined with the frequencies by candidate, then with the documents by doc id.
5. Per document: `keywords.document_keyword` and `keyword_stage.document_record`.
6. The records grouped by query part (the `doc_keywords.jsonl` lines), grouped by keyword
   (`index.keyword_group`), their totals summed, and the documents left out.

Every step is per document, per candidate or per keyword, with the functions the in-process
`keyword_stage.build_stage` runs; the one corpus-wide choice (the `blacklist_auto_top_n` most
frequent candidates) is a Beam top-N. `assemble` then writes the stage with
`keyword_stage.write_stage` in doc-id and keyword order, as the in-process build does; the
split-ratio weights (a ranking of every keyword by size) are computed there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import apache_beam as beam
import numpy as np

from longjax import io
from longjax.synth.methods.quest import index as qindex
from longjax.synth.methods.quest import keyword_stage
from longjax.synth.methods.quest import keywords as qkw
from longjax.synth.methods.quest.queries import part_records
from longjax.synth.pipeline import runner

_DIR = "keywords"  # under the scratch directory


class _Tokens(beam.DoFn):
  """(keyword, (doc_id, tokens with boundaries)) of an indexed document; the token counts
  are read once per worker from the build's file (the index directory is shared)."""

  def __init__(self, path: Path):
    self.path = str(path)

  def setup(self) -> None:
    self.counts = np.load(self.path, mmap_mode="r")

  def process(self, record: keyword_stage.DocumentKeyword
              ) -> Iterator[tuple[str, tuple[int, int]]]:
    yield record.keyword, (record.doc_id, int(self.counts[record.doc_id]))


def _choose(element: tuple[int, dict[str, list]], blacklist: frozenset[str], cfg: Any,
            auto: frozenset[str]) -> tuple[keyword_stage.DocumentKeyword, dict[str, int]]:
  """One document's record and its share of the totals, from its joined candidate df."""
  doc_id, joined = element
  (queries, candidates), = joined["record"]
  choice = qkw.document_keyword(doc_id, queries, candidates,
                                qkw.kept_candidates(candidates, blacklist), dict(joined["df"]),
                                auto, seed=cfg.seed, min_df=cfg.min_keyword_df)
  record = keyword_stage.document_record(doc_id, candidates, choice, cfg.keywordless)
  return record, keyword_stage.document_counts(queries, record)


def _write_part(element: tuple[int, Iterable[keyword_stage.DocumentKeyword]],
                directory: str) -> None:
  """One query part's `doc_keywords.jsonl` lines, in doc-id order."""
  part, records = element
  lines = "".join(r.line() for r in sorted(records, key=lambda r: r.doc_id))
  io.write_text(Path(directory) / f"{part:06d}.jsonl", lines)


def add_branch(p: beam.Pipeline, cfg: Any, queries_dir: Path, parts: int, token_counts: Path,
               scratch: Path) -> None:
  """Adds the keyword stage's transforms to `p`; their results land under `scratch`."""
  out = scratch / _DIR
  blacklist = qkw.load_blacklist(cfg.blacklist_file)
  top_n = max(1, cfg.df_report_top, cfg.blacklist_auto_top_n)
  records = (p | "query parts" >> beam.Create(range(parts)) | "spread parts" >> beam.Reshuffle()
             | "read parts" >> beam.FlatMap(lambda i: part_records(queries_dir, i,
                                                                   min_score=cfg.min_score)))
  pairs = records | "candidates" >> beam.FlatMap(
      lambda r: [(c, r[0]) for c in qkw.kept_candidates(r[2], blacklist)])
  df = (pairs | "ones" >> beam.Map(lambda cd: (cd[0], 1))
        | "df" >> beam.CombinePerKey(sum))
  top = df | "top df" >> beam.combiners.Top.Of(top_n, key=lambda kv: (-kv[1], kv[0]),
                                                reverse=True)
  auto = top | "auto blacklist" >> beam.Map(
      lambda t: frozenset(k for k, _ in qkw.ranked_df(t)[:cfg.blacklist_auto_top_n]))
  doc_df = ({"df": df, "docs": pairs} | "join df" >> beam.CoGroupByKey()
            | "df per doc" >> beam.FlatMap(
                lambda kv: [(d, (kv[0], n)) for n in kv[1]["df"] for d in kv[1]["docs"]]))
  chosen = ({"record": records | "by doc" >> beam.Map(lambda r: (r[0], (r[1], r[2]))),
             "df": doc_df}
            | "join docs" >> beam.CoGroupByKey()
            | "choose" >> beam.Map(_choose, blacklist, cfg, beam.pvalue.AsSingleton(auto)))
  doc_records = chosen | "records" >> beam.Map(lambda rc: rc[0])
  _ = (doc_records | "by part" >> beam.Map(lambda r: (r.doc_id // cfg.query_part_size, r))
       | "group parts" >> beam.GroupByKey()
       | "write parts" >> beam.Map(_write_part, str(out / "docs")))
  groups = (doc_records | "indexed" >> beam.Filter(lambda r: r.keyword is not None)
            | "tokens" >> beam.ParDo(_Tokens(token_counts))
            | "group keywords" >> beam.GroupByKey()
            | "keyword groups" >> beam.MapTuple(qindex.keyword_group)
            | "group rows" >> beam.Map(lambda g: [g.keyword, g.doc_ids.tolist(), g.n_tokens]))
  runner.write_records(groups, out / "groups", "groups")
  runner.write_records(top, out / "top", "top")
  runner.write_records(df | "df flags" >> beam.Map(lambda kv: qkw.df_flags(kv[1]))
                       | "histogram" >> beam.CombineGlobally(qkw.sum_flags),
                       out / "histogram", "histogram")
  runner.write_records(chosen | "counts" >> beam.Map(lambda rc: rc[1])
                       | "totals" >> beam.CombineGlobally(keyword_stage.add_counts),
                       out / "totals", "totals")
  runner.write_records(doc_records | "left out" >> beam.Filter(lambda r: r.keyword is None)
                       | "skipped" >> beam.Map(keyword_stage.skipped_entry),
                       out / "skipped", "skipped")


def _lines(paths: Iterable[Path]) -> Iterator[str]:
  for path in paths:
    with open(path, encoding="utf-8") as f:
      yield from f


def assemble(directory: Path, key: dict[str, Any], cfg: Any, scratch: Path) -> None:
  """Writes the stage from what the branch left under `scratch`."""
  out = scratch / _DIR
  lines = _lines(sorted((out / "docs").glob("*.jsonl")))
  inv = qindex.InvertedIndex.from_groups(
      qindex.KeywordGroup(k, np.asarray(ids, np.int64), n)
      for k, ids, n in runner.read_records(out / "groups"))
  ranked = qkw.ranked_df((k, n) for k, n in runner.read_one(out / "top"))
  flags = runner.read_one(out / "histogram")
  totals = runner.read_one(out / "totals")
  skipped = sorted(runner.read_records(out / "skipped"), key=lambda e: e["doc_id"])
  keyword_stage.write_stage(
      directory, key, cfg, lines, inv, totals, ranked[:cfg.df_report_top],
      [k for k, _ in ranked[:cfg.blacklist_auto_top_n]], qkw.df_histogram(flags), skipped)
