"""Quest stage 2: queries -> RAKE keywords -> one representative keyword per document.

Per document: RAKE runs on each predicted query separately (the spec's default text unit);
phrases scoring >= `min_score` (3.0: only multi-word phrases survive) are normalised, the
blacklist (a seed list file plus, optionally, the `auto_top_n` keywords of highest document
frequency) is removed, and one of the sorted unique survivors is chosen uniformly at random
with an RNG keyed by (seed, doc_id), so the choice does not depend on corpus order.

`min_df` (default 1: the paper's uniform choice over all survivors) restricts the draw to the
survivors whose corpus document frequency is >= min_df, so documents gather under keywords
they share with others; a document with no such survivor falls back to all of its survivors
(counted in `df_fallback`). Document frequency counts candidates after the seed blacklist.

The corpus-wide part is small and explicit: the document frequencies (a count per candidate)
and the `auto_top_n` most frequent of them. Everything else is per document
(`kept_candidates`, `document_keyword`) or per keyword (`df_flags`), so that `assign_keywords`
here and the Beam build (synth/pipeline/keywords.py: counts per key, a top-N, a join) run the
same functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from longjax.synth.methods.quest import rake

BLACKLIST_FILE = "blacklist.txt"


def _blacklist_text(path: str | os.PathLike | None) -> str:
  if path is None:
    return resources.files(__package__).joinpath("data", BLACKLIST_FILE).read_text("utf-8")
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"quest blacklist file not found: {path} (expected one keyword "
                            "per line, '#' comments)")
  return path.read_text("utf-8")


def load_blacklist(path: str | os.PathLike | None = None) -> frozenset[str]:
  """Normalised keywords of a blacklist file (default: the bundled seed list)."""
  words = set()
  for line in _blacklist_text(path).splitlines():
    line = line.split("#", 1)[0]
    if line.strip():
      words.add(rake.normalize(line))
  return frozenset(words)


def blacklist_sha256(path: str | os.PathLike | None = None) -> str:
  return hashlib.sha256(_blacklist_text(path).encode("utf-8")).hexdigest()


def doc_candidates(queries: Sequence[str], *, min_score: float = 3.0) -> list[str]:
  """Sorted unique keywords (score >= min_score) over a document's queries, each scored alone."""
  out: set[str] = set()
  for q in queries:
    if q and q.strip():
      out.update(rake.keywords(q, min_score=min_score))
  return sorted(out)


def choose(candidates: Sequence[str], *, seed: int, doc_id: int) -> str:
  """One of `candidates` (sorted, non-empty) uniformly at random, keyed by (seed, doc_id).

  A counter-based draw: blake2b of (seed, doc_id) as a 64-bit integer, modulo the number of
  candidates (bias < 2**-50). Independent of corpus order and ~30x cheaper than a Generator.
  """
  digest = hashlib.blake2b(f"{int(seed)}:{int(doc_id)}".encode(), digest_size=8).digest()
  return candidates[int.from_bytes(digest, "little") % len(candidates)]


DF_THRESHOLDS = (1, 2, 5, 10, 20)  # the manifest's histogram of candidate document frequency


def kept_candidates(candidates: Sequence[str], blacklist: frozenset[str]) -> list[str]:
  """A document's candidates without the seed blacklist (what document frequency counts)."""
  return [c for c in candidates if c not in blacklist]


def ranked_df(df: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
  """(keyword, document frequency) pairs, most frequent first, ties by keyword."""
  return sorted(df, key=lambda kv: (-kv[1], kv[0]))


def df_flags(df: int) -> tuple[int, ...]:
  """One keyword's contribution to the histogram: 1 per threshold its frequency reaches."""
  return tuple(int(df >= n) for n in DF_THRESHOLDS)


def sum_flags(rows: Iterable[Sequence[int]]) -> tuple[int, ...]:
  """Element-wise sum of `df_flags` rows (associative: also a Beam combiner)."""
  total = (0,) * len(DF_THRESHOLDS)
  for row in rows:
    total = tuple(a + b for a, b in zip(total, row))
  return total


def df_histogram(flag_sums: Sequence[int]) -> dict[str, int]:
  """Distinct keywords with df >= 1, 2, 5... from the summed `df_flags`."""
  return {f"df>={n}": int(v) for n, v in zip(DF_THRESHOLDS, flag_sums)}


def document_keyword(doc_id: int, queries: Sequence[str] | None, candidates: Sequence[str],
                     kept: Sequence[str], df: Mapping[str, int], auto: frozenset[str], *,
                     seed: int, min_df: int) -> tuple[str | None, str | None, bool]:
  """One document's (keyword, reason it has none, drawn from all survivors for lack of a
  common one). `kept`: its candidates after the seed blacklist; `df`: their corpus document
  frequencies; `auto`: the auto-blacklisted keywords.

  The keyword is drawn uniformly from the survivors with document frequency >= `min_df`, or
  from all survivors when none has. The reason of a keyword-less document: `no_queries` (every
  predicted query empty; only when `queries` is given), `no_keyword_above_threshold`,
  `all_blacklisted`.
  """
  survivors = [c for c in kept if c not in auto]
  if survivors:
    common = [c for c in survivors if df[c] >= min_df]
    return choose(common or survivors, seed=seed, doc_id=int(doc_id)), None, not common
  if queries is not None and not any(q and q.strip() for q in queries):
    return None, "no_queries", False
  return None, "all_blacklisted" if candidates else "no_keyword_above_threshold", False


@dataclasses.dataclass
class KeywordAssignment:
  """Per-document outcome of stage 2 (lists aligned with the input doc ids)."""
  keywords: list[str | None]       # the representative keyword, None when dropped
  reasons: list[str | None]        # why a document has no keyword (None when it has one)
  auto_blacklist: list[str]        # keywords dropped by `auto_top_n`
  df_top: list[tuple[str, int]]    # highest document-frequency keywords (after the seed list)
  df_fallback: list[bool]          # True: no survivor had df >= min_df, drawn from all of them
  df_histogram: dict[str, int]     # distinct keywords (after the seed list) with df >= 1, 2, 5...

  @property
  def no_keyword(self) -> np.ndarray:
    return np.array([k is None for k in self.keywords], bool)

  def reason_counts(self) -> dict[str, int]:
    return dict(Counter(r for r in self.reasons if r is not None))


def assign_keywords(doc_ids: Sequence[int], candidates: Sequence[Sequence[str]], *, seed: int,
                    blacklist: frozenset[str], auto_top_n: int = 0, report_top: int = 200,
                    queries: Sequence[Sequence[str]] | None = None,
                    min_df: int = 1) -> KeywordAssignment:
  """Applies the blacklists and picks each document's representative keyword
  (`document_keyword`), in one process.

  `queries` (optional, aligned) only refines the reason of a keyword-less document.
  """
  if len(doc_ids) != len(candidates):
    raise ValueError(f"doc_ids ({len(doc_ids)}) and candidates ({len(candidates)}) must align")
  if auto_top_n < 0:
    raise ValueError(f"blacklist_auto_top_n ({auto_top_n}) must be >= 0")
  if min_df < 1:
    raise ValueError(f"min_keyword_df ({min_df}) must be >= 1")
  kept = [kept_candidates(cands, blacklist) for cands in candidates]
  df = Counter(c for cands in kept for c in cands)
  ranked = ranked_df(df.items())
  auto = [k for k, _ in ranked[:auto_top_n]]
  auto_set = frozenset(auto)
  chosen = [document_keyword(d, None if queries is None else queries[i], candidates[i], kept[i],
                             df, auto_set, seed=seed, min_df=min_df)
            for i, d in enumerate(doc_ids)]
  histogram = df_histogram(sum_flags(df_flags(v) for v in df.values()))
  return KeywordAssignment([k for k, _, _ in chosen], [r for _, r, _ in chosen], auto,
                           ranked[:report_top], [f for _, _, f in chosen], histogram)
