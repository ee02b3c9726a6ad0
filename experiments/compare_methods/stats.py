"""Bootstrap intervals for the method comparison: resample seeds, then eval samples within each.

An arm's score moves with its training seed (data order, initial parameters) and with which eval
samples happened to be drawn. A 95% interval over both says whether two arms differ by more than
that noise. Each bootstrap resample draws the arm's seeds with replacement and, within every drawn
seed, the samples of every cell (one task at one length) with replacement; the statistic is
averaged over the drawn seeds. The interval is the 2.5th to 97.5th percentile of the resamples.
"""

import dataclasses
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
Cell = Hashable  # e.g. (task, length) or ("loss", bucket index)


@dataclasses.dataclass(frozen=True)
class Interval:
  """A statistic's point estimate (mean over seeds) and its bootstrap interval [lo, hi]."""
  mean: float
  lo: float
  hi: float

  def overlaps(self, other: "Interval") -> bool:
    return self.lo <= other.hi and other.lo <= self.hi


class Bootstrap:
  """One arm's resamples; every column of the arm is computed on the same resamples.

  Args:
    seeds: per training seed, the per-sample values of each cell (every seed has the same cells).
    rng: the generator that draws the resamples (seeded by the caller, so tables reproduce).
    resamples: how many bootstrap resamples.
  """

  def __init__(self, seeds: Sequence[Mapping[Cell, np.ndarray]], rng: np.random.Generator,
               resamples: int = RESAMPLES):
    if not seeds:
      raise ValueError("Bootstrap needs at least one seed")
    self._seeds = [{c: np.asarray(v, dtype=float) for c, v in s.items()} for s in seeds]
    self._rng = rng
    # Slot j of resample b holds seed _slot_seed[b, j]: the seeds drawn with replacement.
    self._slot_seed = rng.integers(0, len(seeds), size=(resamples, len(seeds)))
    self._cell_means: dict[tuple[int, Cell], np.ndarray] = {}

  def _resampled_means(self, seed: int, cell: Cell) -> np.ndarray:
    """[resamples, slots] means of one seed's cell, its samples redrawn for every slot."""
    key = (seed, cell)
    if key not in self._cell_means:
      values = self._seeds[seed][cell]
      idx = self._rng.integers(0, len(values), size=self._slot_seed.shape + (len(values),))
      self._cell_means[key] = values[idx].mean(axis=-1)
    return self._cell_means[key]

  def interval(self, weights: Mapping[Cell, float]) -> Interval:
    """The statistic sum_c weights[c] * mean(cell c), averaged over seeds, with its interval."""
    point = np.mean([sum(w * s[c].mean() for c, w in weights.items()) for s in self._seeds])
    per_seed = np.stack([sum(w * self._resampled_means(i, c) for c, w in weights.items())
                         for i in range(len(self._seeds))])  # [seeds, resamples, slots]
    b, j = np.indices(self._slot_seed.shape)
    draws = per_seed[self._slot_seed, b, j].mean(axis=-1)
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(point), float(lo), float(hi))


def best_arm(intervals: Mapping[str, Interval], higher_is_better: bool) -> str:
  """The arm with the best mean (the first one on a tie)."""
  sign = 1 if higher_is_better else -1
  return max(intervals, key=lambda arm: sign * intervals[arm].mean)


def within_noise_of(best: str, intervals: Mapping[str, Interval]) -> list[str]:
  """The other arms whose interval overlaps the best arm's: not significantly different."""
  return [arm for arm, iv in intervals.items() if arm != best and iv.overlaps(intervals[best])]


def all_within_noise(intervals: Mapping[str, Interval]) -> bool:
  """Whether every interval overlaps every other (for intervals: all share one point).

  One arm alone is never "within noise": there is nothing to compare it with.
  """
  if len(intervals) < 2:
    return False
  return max(iv.lo for iv in intervals.values()) <= min(iv.hi for iv in intervals.values())
