"""Quest stages 2-4 as one resumable artifact: `<index_dir>/quest/keywords/`.

Files: `doc_keywords.jsonl` (per document in doc-id order: its RAKE candidates, the chosen
keyword or the reason it has none, whether it fell back from `min_keyword_df`),
`keyword_df_top<N>.json` (the most frequent candidates, for blacklist review), `index.jsonl`
(the inverted index with short flags and split-ratio weights, `index.py`) and `manifest.json`
(the options and inputs it was made from, the counts Quest's manifest reports, the documents
left out).

Two ways to compute it, one writer (`write_stage`): `build_stage`, in this process
(`keywords.assign_keywords`, `index.build_index`), and the Beam build
(synth/pipeline/keywords.py), which counts document frequencies per candidate, draws each
document's keyword after a join with them and groups the documents by keyword on its workers.
Both run the same per-document (`keywords.document_keyword`, `document_record`,
`document_counts`) and per-keyword (`index.keyword_group`) functions, so the artifact is the same
either way. The split-ratio weights rank every keyword by size and stay in the writer.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from longjax import io
from longjax.progress import Progress, silent
from longjax.synth.methods.quest import index as qindex
from longjax.synth.methods.quest import keywords as qkw
from longjax.synth.methods.quest import rake
from longjax.synth.methods.quest.queries import CONFIG_FILE, query_counts, rake_candidates, \
  read_queries

if TYPE_CHECKING:
  from longjax.synth.methods.quest.method import QuestOptions

STAGE = "keywords"
DOC_KEYWORDS = "doc_keywords.jsonl"
NO_KEYWORD = "<no-keyword>"  # the pool keyword-less documents join with keywordless="pool"
_REASON = "without_keyword:"  # prefix of the per-reason totals in `document_counts`


class DocumentKeyword(NamedTuple):
  """One document's outcome: its index keyword (NO_KEYWORD for a keyword-less document under
  keywordless="pool", None when it is left out), candidates, reason, min_df fallback."""
  doc_id: int
  keyword: str | None
  candidates: list[str]
  reason: str | None
  df_fallback: bool

  def line(self) -> str:
    """Its line of `doc_keywords.jsonl`."""
    return json.dumps({"doc_id": self.doc_id, "keyword": self.keyword,
                       "candidates": self.candidates, "reason": self.reason,
                       "df_fallback": self.df_fallback}, ensure_ascii=False) + "\n"


def stage_dir(quest_dir: str | Path) -> Path:
  return Path(quest_dir) / STAGE


def stage_key(cfg: QuestOptions, queries_dir: Path, token_counts: Path) -> dict[str, Any]:
  """`config` and `inputs` of the stage (what `io.is_complete` compares): the keyword, index
  and weight options, the query predictions (their config names the documents) and the token
  counts file (named by the store and tokenizer fingerprints)."""
  names = ("seed", "min_score", "blacklist_auto_top_n", "min_keyword_df", "df_report_top",
           "keywordless", "split_ratio", "size_metric", "oversample_mode", "target_share",
           "oversample_factor")
  config = {n: getattr(cfg, n) for n in names}
  config.update(blacklist_sha256=qkw.blacklist_sha256(cfg.blacklist_file),
                stopwords_sha256=rake.stopwords_sha256())
  predictions = json.loads((Path(queries_dir) / CONFIG_FILE).read_text())
  return {"config": config, "inputs": {"queries": io.fingerprint_json(predictions),
                                       "token_counts": Path(token_counts).name}}


def document_record(doc_id: int, candidates: Sequence[str],
                    choice: tuple[str | None, str | None, bool],
                    keywordless: str) -> DocumentKeyword:
  """A document's record from its `keywords.document_keyword` choice."""
  keyword, reason, fallback = choice
  if keyword is None and keywordless == "pool":
    keyword = NO_KEYWORD
  return DocumentKeyword(int(doc_id), keyword, list(candidates), reason, bool(fallback))


def document_counts(queries: Sequence[str], record: DocumentKeyword) -> Counter:
  """One document's share of the stage's totals (summed with `add_counts`)."""
  counts = Counter(query_counts([queries]))
  counts.update(documents=1, documents_indexed=int(record.keyword is not None),
                min_keyword_df_fallbacks=int(record.df_fallback))
  if record.reason is not None:
    counts[_REASON + record.reason] += 1
  return counts


def add_counts(parts: Iterable[Mapping[str, int]]) -> Counter:
  """The sum of `document_counts` (associative: also a Beam combiner)."""
  total: Counter = Counter()
  for part in parts:
    total.update(part)
  return total


def skipped_entry(record: DocumentKeyword) -> dict[str, Any]:
  """The manifest's entry for a document left out of the index (keywordless="drop")."""
  return {"doc_id": record.doc_id, "reason": record.reason}


def build_stage(directory: Path, doc_ids: np.ndarray, queries_dir: Path, cfg: QuestOptions,
                token_counts: np.ndarray, key: Mapping[str, Any], *,
                progress: Progress = silent) -> dict[str, Any]:
  """The stage's manifest: reused when an identical finished stage is found (one the Beam
  build made, or an earlier run), else computed in this process and written."""
  if io.is_complete(directory, **key):
    return io.read_manifest(directory)
  queries = read_queries(queries_dir, doc_ids)
  candidates = rake_candidates(queries_dir, doc_ids, min_score=cfg.min_score, progress=progress)
  chosen = qkw.assign_keywords(doc_ids, candidates, seed=cfg.seed,
                               blacklist=qkw.load_blacklist(cfg.blacklist_file),
                               auto_top_n=cfg.blacklist_auto_top_n, report_top=cfg.df_report_top,
                               queries=queries, min_df=cfg.min_keyword_df)
  records = [document_record(d, c, choice, cfg.keywordless) for d, c, choice in zip(
      doc_ids, candidates, zip(chosen.keywords, chosen.reasons, chosen.df_fallback))]
  indexed = [r for r in records if r.keyword is not None]
  inv = qindex.build_index([r.doc_id for r in indexed], [r.keyword for r in indexed],
                           [int(token_counts[r.doc_id]) for r in indexed])
  write_stage(directory, key, cfg, (r.line() for r in records), inv,
              add_counts(document_counts(q, r) for q, r in zip(queries, records)),
              chosen.df_top, chosen.auto_blacklist, chosen.df_histogram,
              [skipped_entry(r) for r in records if r.keyword is None])
  return io.read_manifest(directory)  # as a finished stage reads, whoever wrote it


def write_stage(directory: Path, key: Mapping[str, Any], cfg: QuestOptions,
                doc_lines: Iterable[str], inv: qindex.InvertedIndex, totals: Mapping[str, int],
                df_top: Sequence[tuple[str, int]], auto: Sequence[str],
                histogram: Mapping[str, int], skipped: list[dict[str, Any]]) -> None:
  """Writes the stage (module docstring), its manifest last. `doc_lines`: every document's
  `DocumentKeyword.line()` in doc-id order; `df_top`: the `df_report_top` most frequent
  candidates, ranked; `skipped`: `skipped_entry` of each left-out document, in order."""
  directory = io.begin_stage(directory)
  with io.atomic_path(directory / DOC_KEYWORDS) as tmp, open(tmp, "w", encoding="utf-8") as f:
    f.writelines(doc_lines)
  io.write_json(directory / f"keyword_df_top{cfg.df_report_top}.json",
                [{"keyword": k, "df": int(n)} for k, n in df_top])
  weights = qindex.split_weights(inv, split_ratio=cfg.split_ratio, size_metric=cfg.size_metric,
                                 oversample_mode=cfg.oversample_mode,
                                 target_share=cfg.target_share,
                                 oversample_factor=cfg.oversample_factor)
  qindex.write_index(directory, inv, weights)
  reasons = {k[len(_REASON):]: int(v) for k, v in sorted(totals.items())
             if k.startswith(_REASON) and v}
  documents = int(totals.get("documents", 0))
  without = sum(reasons.values())
  counts = {
      **{k: int(totals.get(k, 0)) for k in ("queries", "empty_queries", "docs_without_queries")},
      "documents": documents, "documents_indexed": int(totals.get("documents_indexed", 0)),
      "documents_without_keyword": without,
      "documents_without_keyword_share": float(without / documents) if documents else 0.0,
      "without_keyword_reasons": reasons,
      "keywords": len(inv.keywords), "short_keywords": int(weights.short.sum()),
      "index_tokens": int(inv.n_tokens.sum()),
      "natural_short_share": weights.natural_short_share,
      "short_weight_share": weights.short_share, "short_weight_factor": weights.factor,
      "docs_per_keyword": qindex.size_summary(inv.n_docs),
      "min_keyword_df_fallbacks": int(totals.get("min_keyword_df_fallbacks", 0)),
      "candidate_keyword_df": dict(histogram), "auto_blacklisted": list(auto),
  }
  io.write_manifest(directory, kind="quest_keywords", counts=counts, skipped=skipped, **key)
