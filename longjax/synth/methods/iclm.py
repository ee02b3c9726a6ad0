"""ICLM (Shi et al., In-Context Pretraining, ICLR 2024): documents ordered along a kNN path.

specs/baselines.md §3. At build time: neighbour lists -> greedy path in clusters of at most 21
documents -> merge of small clusters -> global near-duplicate filter -> one ordered document
stream, cut into contexts by the `carry` packer per length. At example time the context order is
shuffled with the seed (for diversity between contexts) and each shard takes a contiguous range.

The reference's kNN rows hold the document itself in slot 0 and the path looks at slots 1-9. We
ask retrieval for neighbour lists with self removed and use their first 9 entries, which is the
same window without depending on self landing in slot 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from longjax import io
from longjax.synth.methods import contexts, packer
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.options import MethodOptions

_UNASSIGNED, _LEFTOVER = -1, -2


@dataclasses.dataclass(frozen=True)
class ICLMOptions(MethodOptions):
  """ICLM options (`config["iclm"]`); defaults are the reference's (specs/baselines.md §3)."""
  k_nn: int = 50  # neighbours retrieved per document
  window: int = 9  # the first `window` of them are the path's candidates
  cluster_size: int = 21  # a path cluster holds at most this many documents
  dedup_chars: int = 100  # near-duplicates are judged on the first characters ...
  dedup_threshold: float = 0.85  # ... by their 3-gram Jaccard with the previous kept document
  seed: int = 0  # seeds the path's start documents

  def __post_init__(self):
    if not 1 <= self.window <= self.k_nn:
      raise ValueError(f"iclm: window ({self.window}) must be in [1, k_nn={self.k_nn}]")


def _first(row: np.ndarray, pred: Callable[[int], bool]) -> int:
  for nb in row:
    if nb >= 0 and pred(int(nb)):
      return int(nb)
  return -1


def iclm_path(window: np.ndarray, rng: np.random.Generator, cluster_size: int) -> list[list[int]]:
  """Greedy path in clusters: from a seeded-random unvisited start, move to the first unvisited
  neighbour in `window` [N, w] (-1 pads) until none is left or the cluster holds `cluster_size`.

  Every document is visited exactly once. Returns the clusters in creation order.
  """
  visited = np.zeros(len(window), bool)
  clusters = []
  for start in rng.permutation(len(window)):
    if visited[start]:
      continue
    cur = int(start)
    visited[cur] = True
    cluster = [cur]
    while len(cluster) < cluster_size:
      cur = _first(window[cur], lambda d: not visited[d])
      if cur < 0:
        break
      visited[cur] = True
      cluster.append(cur)
    clusters.append(cluster)
  return clusters


def iclm_merge(clusters: Sequence[list[int]], window: np.ndarray,
               cluster_size: int) -> tuple[list[list[int]], list[int]]:
  """Dissolves clusters smaller than `cluster_size`, in creation order.

  Each document of a dissolved cluster is inserted immediately before its first neighbour (in
  `window`) that currently lies in another cluster, inside that cluster. A cluster's size is
  judged when its turn comes, so a small cluster that received documents moves them on again.
  Documents with no such neighbour go to a trailing leftover cluster.

  Returns (clusters with dissolved ones left empty, leftover).
  """
  clusters = [list(c) for c in clusters]
  owner = np.full(len(window), _UNASSIGNED, np.int64)
  for ci, cluster in enumerate(clusters):
    owner[cluster] = ci
  leftover: list[int] = []
  for ci in range(len(clusters)):
    members = clusters[ci]
    if len(members) >= cluster_size:
      continue
    clusters[ci] = []
    for d in members:
      nb = _first(window[d], lambda x: owner[x] not in (ci, _LEFTOVER))
      if nb < 0:
        owner[d] = _LEFTOVER
        leftover.append(d)
        continue
      target = clusters[owner[nb]]
      target.insert(target.index(nb), d)
      owner[d] = owner[nb]
  return clusters, leftover


def trigram_jaccard(a: str, b: str) -> float:
  """Jaccard similarity of the character 3-gram sets of two strings (0 when both have none)."""
  ga = {a[i:i + 3] for i in range(len(a) - 2)}
  gb = {b[i:i + 3] for i in range(len(b) - 2)}
  union = len(ga | gb)
  return len(ga & gb) / union if union else 0.0


def iclm_dedup(order: Sequence[int], text_of: Callable[[int], str], chars: int,
               threshold: float) -> tuple[list[int], list[tuple[int, int, float]]]:
  """Drops each document whose 3-gram Jaccard over its first `chars` characters with the previous
  *kept* document exceeds `threshold`. Returns (kept, [(dropped, previous kept, similarity)])."""
  kept: list[int] = []
  dropped = []
  prev = None
  for d in order:
    head = text_of(d)[:chars]
    if prev is not None:
      sim = trigram_jaccard(prev, head)
      if sim > threshold:
        dropped.append((d, kept[-1], sim))
        continue
    kept.append(d)
    prev = head
  return kept, dropped


class ICLMMethod(contexts.PlannedMethod):
  """The ICLM baseline (`longjax_<corpus>_iclm_<length>`)."""
  name = "iclm"
  options_type = ICLMOptions

  def build(self, ctx: BuildContext) -> None:
    from longjax.synth.methods import neighbours  # embedding + ScaNN; heavy imports

    cfg = ctx.options(self)
    if not ctx.lengths:
      raise ValueError("iclm: BuildContext.lengths is empty; context boundaries need a length")
    out = ctx.method_dir(self.name)
    doc_ids = np.asarray(ctx.store.doc_ids(), np.int64)
    nbrs, retrieval_info = neighbours.document_neighbours(ctx, cfg.k_nn, include_self=False)
    window = nbrs[:, :cfg.window]
    clusters = iclm_path(window, np.random.default_rng(cfg.seed), cfg.cluster_size)
    merged, leftover = iclm_merge(clusters, window, cfg.cluster_size)
    order = [d for c in merged for d in c] + leftover
    kept, dropped = iclm_dedup(order, lambda i: ctx.store.text(int(doc_ids[i])),
                               cfg.dedup_chars, cfg.dedup_threshold)
    kept_ids = doc_ids[kept]
    counts = contexts.store_token_counts(ctx)[kept]
    io.write_npy(out / "order.npy", kept_ids)
    stats: dict[str, Any] = {
        "documents": len(doc_ids), "path_clusters": len(clusters),
        "clusters_after_merge": sum(1 for c in merged if c), "leftover_documents": len(leftover),
        "near_duplicates_dropped": len(dropped), "budget": {}}
    skipped = [{"doc_id": int(doc_ids[d]), "reason": "iclm near-duplicate of the previous kept "
                f"document {int(doc_ids[p])} (3-gram Jaccard {s:.3f} > {cfg.dedup_threshold})"}
               for d, p, s in dropped]
    for length in ctx.lengths:
      plan = list(packer.pack(zip(kept_ids.tolist(), counts.tolist()), length, overflow="carry"))
      contexts.write_plan(out, length, plan)
      covered = {d for c in plan for d, _, _ in c}
      tail = [int(d) for d in kept_ids if int(d) not in covered]
      stats[f"L{length}"] = {"contexts": len(plan), "documents_in_dropped_tail": len(tail)}
      total = int(counts.sum())
      stats["budget"][f"L{length}"] = contexts.budget(
          samples=len(plan), length=length, documents_used=len(kept_ids) - len(tail),
          source_tokens=total, source_tokens_dropped=total - len(plan) * length)
      skipped += [{"doc_id": d, "length": length,
                   "reason": "in the trailing partial context (< L tokens) of the ICLM stream"}
                  for d in tail]
      ctx.log(f"iclm L={length}: {stats[f'L{length}']}")
    self.write_plan_manifest(out, ctx, cfg, stats, skipped, retrieval_info)

