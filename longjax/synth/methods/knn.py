"""KNN (Guu et al. 2020; Levine et al. 2022): each document with its nearest neighbours.

specs/baselines.md §2. Seeds are visited in a seeded random order; each unused seed opens a
context and pulls in its *unused* neighbours in rank order until the context holds >= L tokens
(counting one EOS per document); when the list runs out first, the next unused seed joins the same
context. Every document is used at most once, globally, so the grouping is one sequential pass at
build time. The groups, in order, are then cut into L-token contexts by the packer with
`overflow="carry"`: the tokens past L of a group's last document open the next context (before
that group's documents) instead of being dropped, and documents longer than L flow over several
contexts as in every method. So that the cuts fall where the groups end, a group counts the
tokens carried into its first context: it closes when that context is full, and each context
holds at most one document's tail from outside its group. The spec's `overflow="truncate"`
(one context per group, the tail dropped) threw away about half the tokens of a Wikipedia pool
at 4K and a fifth of the bundled corpus at 2K, while the other arms keep every token: it stays
an option (docs/methods.md). The last group, which may run out of documents before L, is
dropped and its documents are reported as skipped in the manifest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from longjax.synth.methods import contexts, packer
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.options import MethodOptions


@dataclasses.dataclass(frozen=True)
class KNNOptions(MethodOptions):
  """KNN options (`config["knn"]`); defaults are specs/baselines.md §2's."""
  k_nn: int = 256  # neighbours retrieved per seed document
  seed: int = 0  # seeds the order in which seed documents are visited
  overflow: str = "carry"  # or "truncate": one context per group, its tail dropped

  def __post_init__(self):
    if self.overflow not in packer.OVERFLOW_MODES:
      raise ValueError(f"knn.overflow must be one of {packer.OVERFLOW_MODES}, "
                       f"got {self.overflow!r}")


def knn_groups(neighbours: np.ndarray, counts: np.ndarray, length: int,
               rng: np.random.Generator,
               carry: bool = True) -> tuple[list[list[int]], list[int]]:
  """Groups document positions into KNN contexts.

  Args:
    neighbours: int [N, k] positions of each document's neighbours, most similar first; -1 pads
      a short row. A document's own position is ignored wherever it appears.
    counts: int [N] tokens per document including its EOS.
    length: target context length L.
    rng: source of the seed order.
    carry: the groups will be packed as one stream (`overflow="carry"`): each group then starts
      with the tokens the previous group carries past its last context boundary, and closes
      when its own last context is full. False: each group alone fills one context.

  Returns:
    (groups, leftover): each group fills its contexts (>= `length` tokens with what it was
    carried, if `carry`); `leftover` is the final group that ran out of documents first
    (possibly empty).
  """
  n = len(counts)
  if neighbours.shape[0] != n:
    raise ValueError(f"neighbours has {neighbours.shape[0]} rows for {n} documents")
  used = np.zeros(n, bool)
  groups: list[list[int]] = []
  group: list[int] = []
  total = 0
  for seed in rng.permutation(n):
    if used[seed]:
      continue
    used[seed] = True
    group.append(int(seed))
    total += int(counts[seed])
    for nb in neighbours[seed]:
      if total >= length or nb < 0:
        break
      if nb == seed or used[nb]:
        continue
      used[nb] = True
      group.append(int(nb))
      total += int(counts[nb])
    if total >= length:
      groups.append(group)
      group, total = [], (total % length if carry else 0)
  return groups, group


def knn_contexts(groups: list[list[int]], doc_ids: np.ndarray, counts: np.ndarray, length: int,
                 overflow: str) -> list[list[packer.Span]]:
  """Cuts the groups into L-token contexts: `carry` packs the group stream in order (a group's
  overflow opens the next context); `truncate` cuts each group alone to one context."""
  if overflow == "carry":
    stream = [(int(doc_ids[i]), int(counts[i])) for g in groups for i in g]
    return list(packer.pack(stream, length, overflow="carry"))
  # A group holds >= L tokens and truncation drops the rest: exactly one context each.
  return [next(packer.pack([(doc_ids[i], counts[i]) for i in g], length, overflow="truncate"))
          for g in groups]


class KNNMethod(contexts.PlannedMethod):
  """The KNN baseline (`longjax_<corpus>_knn_<length>`)."""
  name = "knn"
  options_type = KNNOptions

  def build(self, ctx: BuildContext) -> None:
    from longjax.synth.methods import neighbours  # embedding + ScaNN; heavy imports

    cfg = ctx.options(self)
    if not ctx.lengths:
      raise ValueError("knn: BuildContext.lengths is empty; KNN groups depend on the length")
    out = ctx.method_dir(self.name)
    doc_ids = np.asarray(ctx.store.doc_ids(), np.int64)
    counts = contexts.store_token_counts(ctx)
    nbrs, retrieval_info = neighbours.document_neighbours(ctx, cfg.k_nn, include_self=False)
    for length in ctx.lengths:
      need = length / max(1.0, float(counts.mean()))
      if cfg.k_nn < need:
        ctx.log(f"knn: warning: k_nn ({cfg.k_nn}) is below L / mean document tokens "
                f"({need:.0f}) for L={length}; contexts will often need several seeds")
    stats: dict[str, Any] = {"documents": len(doc_ids), "budget": {}}
    skipped = []
    for length in ctx.lengths:
      groups, leftover = knn_groups(nbrs, counts, length, np.random.default_rng(cfg.seed),
                                    carry=cfg.overflow == "carry")
      ctxs = knn_contexts(groups, doc_ids, counts, length, cfg.overflow)
      contexts.write_plan(out, length, ctxs)
      kept = sum(e - s for c in ctxs for _, s, e in c)
      used = sum(len(g) for g in groups)
      stats[f"L{length}"] = {
          "contexts": len(ctxs), "documents_used": used,
          "documents_in_dropped_final_group": len(leftover),
          "mean_documents_per_group": float(np.mean([len(g) for g in groups])) if groups else 0}
      total = int(counts.sum())
      stats["budget"][f"L{length}"] = contexts.budget(
          samples=len(ctxs), length=length, documents_used=used, source_tokens=total,
          source_tokens_dropped=total - kept)
      skipped += [{"doc_id": int(doc_ids[i]), "length": length,
                   "reason": "in the final KNN group, which ran out of documents before L"}
                  for i in leftover]
      ctx.log(f"knn L={length}: {stats[f'L{length}']}")
    self.write_plan_manifest(out, ctx, cfg, stats, skipped, retrieval_info)

