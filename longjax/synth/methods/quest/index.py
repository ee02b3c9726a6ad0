"""Quest stages 3-4: the keyword -> documents inverted index and the split-ratio weights.

Each document has exactly one keyword, so the index is a partition of the kept documents.
Per keyword we keep `n_docs` and `n_tokens` (training-tokenizer tokens including one EOS per
document). Split ratio (specs/quest.md §5, our stand-in for the paper's Eq. 1-2): keywords
sorted ascending by `size_metric` (ties by keyword), the first `ceil(r*K)` are the *short*
indexes; the base weight is `n_tokens`; short weights are scaled up so their share of the
total weight is `max(natural share, target_share)` ("target_share"), or multiplied by a fixed
`oversample_factor` ("factor").

On disk (`<index_dir>/quest/`): `index.jsonl`, one keyword per line in sorted-keyword order:
`{"keyword", "doc_ids", "n_docs", "n_tokens", "short", "weight"}`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np

from longjax import io

SIZE_METRICS = ("n_docs", "n_tokens")
OVERSAMPLE_MODES = ("target_share", "factor")
INDEX_FILE = "index.jsonl"


@dataclasses.dataclass
class InvertedIndex:
  keywords: list[str]            # sorted
  doc_ids: list[np.ndarray]      # per keyword, sorted int64
  n_docs: np.ndarray             # int64 [K]
  n_tokens: np.ndarray           # int64 [K], EOS separators included

  @classmethod
  def from_groups(cls, groups: Iterable[KeywordGroup]) -> "InvertedIndex":
    """The index of `keyword_group` results in any order (sorted here by keyword)."""
    groups = sorted(groups, key=lambda g: g.keyword)
    return cls([g.keyword for g in groups], [g.doc_ids for g in groups],
               np.array([len(g.doc_ids) for g in groups], np.int64),
               np.array([g.n_tokens for g in groups], np.int64))


class KeywordGroup(NamedTuple):
  keyword: str
  doc_ids: np.ndarray  # sorted int64
  n_tokens: int


def keyword_group(keyword: str, members: Iterable[tuple[int, int]]) -> KeywordGroup:
  """One keyword's entry from its (doc_id, tokens with EOS) members, in any order: the
  per-keyword step of `build_index` here and of the Beam build's group-by-keyword."""
  members = list(members)
  ids = np.sort(np.asarray([int(d) for d, _ in members], np.int64))
  return KeywordGroup(keyword, ids, sum(int(n) for _, n in members))


def build_index(doc_ids: Sequence[int], keywords: Sequence[str | None],
                n_tokens: Sequence[int]) -> InvertedIndex:
  """Groups documents by keyword (None = no keyword, left out). n_tokens: per doc, with EOS."""
  if not len(doc_ids) == len(keywords) == len(n_tokens):
    raise ValueError(f"doc_ids ({len(doc_ids)}), keywords ({len(keywords)}) and n_tokens "
                     f"({len(n_tokens)}) must align")
  groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
  for d, k, n in zip(doc_ids, keywords, n_tokens):
    if k is not None:
      groups[k].append((int(d), int(n)))
  return InvertedIndex.from_groups(keyword_group(k, m) for k, m in groups.items())


def size_summary(n_docs: np.ndarray) -> dict[str, float]:
  """Documents per keyword: min, percentiles, max, and the median group a document sits in."""
  sizes = np.sort(np.asarray(n_docs, np.int64))
  if not len(sizes):
    return {"min": 0, "p10": 0.0, "p25": 0.0, "median": 0.0, "p75": 0.0, "p90": 0.0, "max": 0,
            "doc_weighted_median": 0.0}
  p10, p25, p50, p75, p90 = np.percentile(sizes, [10, 25, 50, 75, 90])
  return {"min": int(sizes[0]), "p10": float(p10), "p25": float(p25), "median": float(p50),
          "p75": float(p75), "p90": float(p90), "max": int(sizes[-1]),
          "doc_weighted_median": float(np.median(np.repeat(sizes, sizes)))}


@dataclasses.dataclass
class SplitWeights:
  short: np.ndarray              # bool [K]
  weights: np.ndarray            # float64 [K]
  natural_short_share: float     # short share of sum(n_tokens) before oversampling
  short_share: float             # short share of the weights after oversampling
  factor: float                  # the multiplier applied to the short weights


def split_weights(index: InvertedIndex, *, split_ratio: float = 0.2, size_metric: str = "n_docs",
                  oversample_mode: str = "target_share", target_share: float | None = None,
                  oversample_factor: float = 2.0) -> SplitWeights:
  """Marks the short indexes and computes the sampling weight of every keyword."""
  if not 0.0 <= split_ratio <= 1.0:
    raise ValueError(f"split_ratio ({split_ratio}) must be in [0, 1]")
  if size_metric not in SIZE_METRICS:
    raise ValueError(f"size_metric must be one of {SIZE_METRICS}, got {size_metric!r}")
  if oversample_mode not in OVERSAMPLE_MODES:
    raise ValueError(f"oversample_mode must be one of {OVERSAMPLE_MODES}, got {oversample_mode!r}")
  target = split_ratio if target_share is None else target_share
  if not 0.0 <= target < 1.0:
    raise ValueError(f"target_share ({target}) must be in [0, 1)")
  if oversample_factor <= 0:
    raise ValueError(f"oversample_factor ({oversample_factor}) must be > 0")
  k = len(index.keywords)
  size = index.n_docs if size_metric == "n_docs" else index.n_tokens
  order = sorted(range(k), key=lambda i: (int(size[i]), index.keywords[i]))
  short = np.zeros(k, bool)
  short[order[:math.ceil(split_ratio * k)]] = True
  w = index.n_tokens.astype(np.float64)
  w_short, w_long = w[short].sum(), w[~short].sum()
  natural = float(w_short / (w_short + w_long)) if k else 0.0
  factor = 1.0
  if oversample_mode == "factor":
    factor = float(oversample_factor)
  elif natural < target and w_short > 0 and w_long > 0:
    factor = float(target * w_long / ((1.0 - target) * w_short))
  weights = np.where(short, w * factor, w)
  total = weights.sum()
  share = float(weights[short].sum() / total) if total > 0 else 0.0
  return SplitWeights(short, weights, natural, share, factor)


def keyword_shard(keyword: str, num_shards: int) -> int:
  """Stable shard of a keyword (blake2b, independent of Python's hash seed)."""
  h = int.from_bytes(hashlib.blake2b(keyword.encode("utf-8"), digest_size=8).digest(), "little")
  return h % num_shards


def write_index(directory: str | os.PathLike, index: InvertedIndex,
                weights: SplitWeights) -> Path:
  lines = [json.dumps({"keyword": k, "doc_ids": index.doc_ids[i].tolist(),
                       "n_docs": int(index.n_docs[i]), "n_tokens": int(index.n_tokens[i]),
                       "short": bool(weights.short[i]), "weight": float(weights.weights[i])},
                      ensure_ascii=False)
           for i, k in enumerate(index.keywords)]
  return io.write_text(Path(directory) / INDEX_FILE, "".join(l + "\n" for l in lines))


@dataclasses.dataclass(frozen=True)
class IndexEntry:
  keyword: str
  doc_ids: np.ndarray
  n_tokens: int
  short: bool
  weight: float


def read_index(directory: str | os.PathLike, *, shard: int = 0,
               num_shards: int = 1) -> Iterator[IndexEntry]:
  """The entries of `index.jsonl` whose keyword belongs to `shard` of `num_shards`."""
  path = Path(directory) / INDEX_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{path}: no Quest index; run `python -m longjax.synth build` "
                            "with the quest method first")
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      try:
        r = json.loads(line)
        if num_shards > 1 and keyword_shard(r["keyword"], num_shards) != shard:
          continue
        yield IndexEntry(r["keyword"], np.asarray(r["doc_ids"], np.int64), int(r["n_tokens"]),
                         bool(r["short"]), float(r["weight"]))
      except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{path}:{line_no}: malformed index entry ({e})") from e
