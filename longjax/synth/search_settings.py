"""The cheapest query-time ScaNN search that meets a recall target, chosen by measured recall.

A tree-AH index answers a query by scoring the centres of its leaves, scanning the AH codes of the
points in the `leaves` nearest leaves, and rescoring the best `reorder` candidates exactly. Recall
rises with both and so does the cost; which pair is cheapest at a given recall depends on the
data, so `choose` measures recall on a sample (against exact search) instead of guessing. A
candidate meets the target when the one-sided 95% lower confidence bound of its mean recall
does (mean - 1.645 standard errors over the sample's queries): the cheapest candidate that
barely passes on the sample is otherwise as likely as not to miss on other queries.

Candidates form a grid: leaves from 1 to `num_leaves` and reorder from k up to `max_reorder`,
both in steps of about √2. `choose` walks the grid's frontier (for each leaves value, the
smallest reorder that meets the target, which can only shrink as leaves grow), stops once more
leaves cannot beat the cheapest point found, and returns that point. This narrows an
over-generous default as well as widening one that misses the target.

Cost is a model, not a timing, so that the choice (and with it every neighbour list) is the
same on every run for the same data and seed: `cost = points scanned + REORDER_COST × reorder`
per query and shard, in units of one AH point score. REORDER_COST is the measured price of one
exact rescoring (a random memory read of a full vector plus its dot product) relative to one AH
score: a least-squares fit of seconds per query over the 108-point raw sweep at 1M x 384-d
gives 10.7 ns per point and 0.69 µs per rescoring (docs/synthesis.md, "Choosing the search").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

REORDER_COST = 65.0
Z_95 = 1.645  # one-sided 95% normal quantile


@dataclasses.dataclass(frozen=True)
class Trial:
  """One measured candidate: `leaves` searched (0 = no tree), `reorder` depth, mean recall
  over the sample, its 95% lower confidence bound and the modelled cost."""
  leaves: int
  reorder: int
  recall: float
  recall_lower: float
  cost: float

  @classmethod
  def from_recalls(cls, leaves: int, reorder: int, recalls: np.ndarray,
                   cost_per_query: float) -> "Trial":
    """A Trial from per-query recalls (fractions in [0, 1])."""
    mean = float(np.mean(recalls))
    se = float(np.std(recalls, ddof=1) / np.sqrt(len(recalls))) if len(recalls) > 1 else 0.0
    return cls(leaves, reorder, mean, mean - Z_95 * se, float(cost_per_query))


def ladder(low: int, high: int) -> list[int]:
  """Integers from `low` to `high` (both included) in ratios of about √2, ascending."""
  if not 1 <= low <= high:
    raise ValueError(f"ladder needs 1 <= low <= high, got low={low}, high={high}")
  steps = math.ceil(2 * math.log2(high / low)) if high > low else 0
  return sorted({low, high} | {round(low * 2 ** (j / 2)) for j in range(steps)
                               if low * 2 ** (j / 2) < high})


def cost(leaves: int, reorder: int, *, points_per_leaf: float, points: int) -> float:
  """Modelled cost of one query on one shard (AH point scores); `leaves` 0 scans all `points`."""
  scanned = leaves * points_per_leaf if leaves else points
  return scanned + REORDER_COST * reorder


def choose(measure: Callable[[int, int], np.ndarray], *, num_leaves: int, points: int, k: int,
           max_reorder: int, min_recall: float) -> tuple[Trial, list[Trial]]:
  """(cheapest trial whose recall bound is >= `min_recall`, every trial measured, in order).

  `measure(leaves, reorder)` returns the per-query recalls of that search on the sample;
  `num_leaves` 0 means no tree (only the reorder depth varies). When no candidate meets the
  target the widest one is returned: its recall says by how much the target was missed.
  """
  if k < 1 or max_reorder < k:
    raise ValueError(f"need 1 <= k <= max_reorder, got k={k}, max_reorder={max_reorder}")
  per_leaf = points / num_leaves if num_leaves else 0.0
  price = lambda leaves, reorder: cost(leaves, reorder, points_per_leaf=per_leaf, points=points)
  trials: list[Trial] = []

  def meets(leaves: int, reorder: int) -> bool:
    trials.append(Trial.from_recalls(leaves, reorder, measure(leaves, reorder),
                                     price(leaves, reorder)))
    return trials[-1].recall_lower >= min_recall

  reorders = ladder(k, max_reorder)
  best: Trial | None = None
  r = len(reorders) - 1
  for leaves in ladder(1, num_leaves) if num_leaves else [0]:
    if best is not None and price(leaves, reorders[0]) >= best.cost:
      break  # more leaves cost more than the best point even at the shallowest reorder
    if not meets(leaves, reorders[r]):
      continue
    while r > 0 and meets(leaves, reorders[r - 1]):
      r -= 1
    met = min((t for t in trials if t.leaves == leaves and t.recall_lower >= min_recall),
              key=lambda t: t.reorder)
    if best is None or (met.cost, met.leaves) < (best.cost, best.leaves):
      best = met
  if best is None:
    best = max(trials, key=lambda t: (t.leaves, t.reorder))
  return best, trials
