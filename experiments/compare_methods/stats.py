"""Bootstrap intervals for the method comparison: resample seeds, then eval samples within each.

An arm's score moves with its training seed (data order, initial parameters) and with which eval
samples happened to be drawn. A 95% interval over both says whether two arms differ by more than
that noise. Each bootstrap resample draws the arm's seeds with replacement and, within every drawn
seed, the samples of every cell (one task at one length) with replacement; the statistic is
averaged over the drawn seeds. The interval is the 2.5th to 97.5th percentile of the resamples.

Whether two arms differ is a paired question (`Paired`): every arm answered the same eval samples
(the same prompts, the same held-out sequences), so most of the spread of one arm's interval is
the samples' own difficulty, shared by both arms. Resampling one set of sample indices for both
arms cancels it; two arms' own intervals can overlap while their paired difference excludes 0.

With two or three seeds per arm, redrawing seeds with replacement says little about training
noise (two seeds give only three distinct draws). `seed_level_difference` is the check that
treats each training run as one observation instead: a t interval on the difference of the arms'
run means, with the between-run variance pooled over every arm that has two or more runs
(`run_noise`) and the eval samples' variance, each variance component counted once. Its p-values
feed `holm`, the family-wise check over every pair of arms; `own_variance_difference` is the
same test without the pooled (equal) training noise, the check of that assumption.
"""

import dataclasses
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from scipy import stats as scipy_stats

RESAMPLES = 2000
LEVEL = 0.95
Cell = Hashable  # e.g. (task, length) or ("loss", bucket index)


@dataclasses.dataclass(frozen=True)
class Interval:
  """A statistic's point estimate (mean over seeds) and its interval [lo, hi]; `p`, the
  two-sided p-value of "no difference", where the interval comes from a t test."""
  mean: float
  lo: float
  hi: float
  p: float | None = None


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


class Paired:
  """Paired bootstrap differences between arms, for one metric.

  Every resample draws one set of sample indices per cell, shared by every arm and seed (they
  answered the same samples), and, for each arm on its own, its seeds with replacement (seeds of
  different arms share nothing but their number).

  Args:
    arms: per arm, per training seed, the per-sample values of each cell (the same samples in
      every arm and seed; run.py evaluates every arm with the same eval seed and held-out text).
    rng: the generator that draws the resamples (seeded by the caller, so tables reproduce).
    resamples: how many bootstrap resamples.
  """

  def __init__(self, arms: Mapping[str, Sequence[Mapping[Cell, np.ndarray]]],
               rng: np.random.Generator, resamples: int = RESAMPLES):
    self._arms = {a: [{c: np.asarray(v, dtype=float) for c, v in s.items()} for s in seeds]
                  for a, seeds in arms.items()}
    self._rng, self._resamples = rng, resamples
    self._idx: dict[Hashable, np.ndarray] = {}
    self._slot_seed = {a: rng.integers(0, len(seeds), size=(resamples, len(seeds)))
                       for a, seeds in self._arms.items()}
    self._cell_means: dict[tuple[str, Cell], np.ndarray] = {}

  def _indices(self, arm: str, cell: Cell) -> np.ndarray:
    """[resamples, n] sample indices of a cell: one draw shared by every arm when they all hold
    n samples of it, else (a mean-only record, a different sample count) a draw per arm, which
    makes the difference an unpaired one."""
    counts = {len(s[cell]) for seeds in self._arms.values() for s in seeds if cell in s}
    key = cell if len(counts) == 1 else (arm, cell)
    if key not in self._idx:
      n = len(self._arms[arm][0][cell])
      self._idx[key] = self._rng.integers(0, n, size=(self._resamples, n))
    return self._idx[key]

  def _draws(self, arm: str, weights: Mapping[Cell, float]) -> np.ndarray:
    """[resamples] of the arm's statistic: its seeds redrawn, the shared samples redrawn."""
    for c in weights:
      if (arm, c) not in self._cell_means:
        idx = self._indices(arm, c)
        self._cell_means[arm, c] = np.stack([s[c][idx].mean(axis=-1) for s in self._arms[arm]])
    per_seed = sum(w * self._cell_means[arm, c] for c, w in weights.items())  # [seeds, B]
    slot = self._slot_seed[arm]
    return per_seed[slot, np.arange(self._resamples)[:, None]].mean(axis=-1)

  def difference(self, a: str, b: str, weights: Mapping[Cell, float]) -> Interval:
    """Arm a's statistic (sum_c weights[c] * mean(cell c), averaged over seeds) minus arm b's,
    with its paired interval."""
    point = [np.mean([sum(w * s[c].mean() for c, w in weights.items()) for s in self._arms[x]])
             for x in (a, b)]
    diffs = self._draws(a, weights) - self._draws(b, weights)
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Interval(float(point[0] - point[1]), float(lo), float(hi))


def independent_difference(a: Sequence[float], b: Sequence[float], rng: np.random.Generator,
                           resamples: int = RESAMPLES) -> Interval:
  """mean(a) − mean(b) of two independent samples (e.g. two methods' own data samples) with
  its percentile-bootstrap interval, each sample redrawn on its own."""
  a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
  draws = (a[rng.integers(0, a.size, (resamples, a.size))].mean(axis=1)
           - b[rng.integers(0, b.size, (resamples, b.size))].mean(axis=1))
  tail = 100 * (1 - LEVEL) / 2
  lo, hi = np.percentile(draws, [tail, 100 - tail])
  return Interval(float(a.mean() - b.mean()), float(lo), float(hi))


def best_arm(means: Mapping[str, float], higher_is_better: bool) -> str:
  """The arm with the best mean (the first one on a tie)."""
  sign = 1 if higher_is_better else -1
  return max(means, key=lambda arm: sign * means[arm])


def contains_zero(diff: Interval) -> bool:
  """Whether a difference's interval contains 0: the two arms do not differ significantly."""
  return diff.lo <= 0.0 <= diff.hi


def within_noise_of(best: str, paired: Paired, weights: Mapping[Cell, float],
                    arms: Sequence[str]) -> list[str]:
  """The other arms whose paired difference from the best arm contains 0."""
  return [a for a in arms if a != best and contains_zero(paired.difference(a, best, weights))]


def all_within_noise(paired: Paired, weights: Mapping[Cell, float], arms: Sequence[str]) -> bool:
  """Whether no two arms differ significantly (every pair's difference contains 0).

  One arm alone is never "within noise": there is nothing to compare it with.
  """
  return len(arms) >= 2 and all(contains_zero(paired.difference(a, b, weights))
                                for i, a in enumerate(arms) for b in arms[i + 1:])




def pooled_run_variance(runs: Mapping[str, Sequence[float]]) -> tuple[float, int]:
  """The variance between training runs of one arm, pooled over the arms, and its degrees of
  freedom sum(n_arm - 1); (nan, 0) when no arm has two runs.

  Args:
    runs: per arm, one statistic per training run (seed), each over the same eval samples.
  """
  df = sum(len(v) - 1 for v in runs.values())
  if df == 0:
    return float("nan"), 0
  squares = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in runs.values())
  return squares / df, df


@dataclasses.dataclass(frozen=True)
class RunNoise:
  """One statistic's training noise, pooled over the arms with two or more runs.

  A run's statistic moves with the run itself (data order, initialisation) and with how the run
  happens to answer each sample (run x sample interaction): the two-way model
  score[run, sample] = arm + sample + run + interaction.

  Attributes:
    between_runs: variance of one run's statistic between runs of an arm (s^2).
    interaction: the interaction's share of that variance: per cell, the two-way residual
      variance over (runs x samples) divided by the samples, weighted like the statistic. It is
      estimated on many more degrees of freedom than s^2, so it floors s^2, and it is the part
      of the per-sample paired variance that is training noise already counted in s^2.
    df: degrees of freedom of between_runs.
  """
  between_runs: float
  interaction: float
  df: int


def _residual_squares(runs: Sequence[np.ndarray]) -> tuple[float, int]:
  """Sum of squared two-way residuals of one arm's runs x samples of a cell, and their degrees
  of freedom (runs - 1)(samples - 1); (0, 0) when the runs hold different sample counts."""
  if len({len(r) for r in runs}) != 1:
    return 0.0, 0
  x = np.stack(runs)
  resid = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
  return float(np.sum(resid ** 2)), (x.shape[0] - 1) * (x.shape[1] - 1)


def run_noise(arms: Mapping[str, Sequence[Mapping[Cell, np.ndarray]]],
              weights: Mapping[Cell, float]) -> RunNoise | None:
  """The training noise of the statistic sum_c weights[c] * mean(cell c); None when no arm has
  two runs.

  Args:
    arms: per arm, per training run, the per-sample values of each cell.
    weights: the statistic's cell weights.
  """
  runs = {a: [sum(w * float(np.mean(s[c])) for c, w in weights.items()) for s in seeds]
          for a, seeds in arms.items()}
  between, df = pooled_run_variance(runs)
  if df == 0:
    return None
  interaction = 0.0
  for c, w in weights.items():
    parts = [_residual_squares([np.asarray(s[c], dtype=float) for s in seeds])
             for seeds in arms.values() if len(seeds) > 1]
    squares, cell_df = sum(p[0] for p in parts), sum(p[1] for p in parts)
    counts = {len(s[c]) for seeds in arms.values() for s in seeds}
    if cell_df and len(counts) == 1:
      interaction += w * w * squares / cell_df / counts.pop()
  return RunNoise(between, interaction, df)


def _mean_variance(x: np.ndarray) -> float:
  """The squared standard error of a mean of samples x (0 for a single value)."""
  return float(np.var(x, ddof=1) / len(x)) if len(x) > 1 else 0.0


def _run_average(runs: Sequence[Mapping[Cell, np.ndarray]], cell: Cell) -> np.ndarray:
  """Per sample, the mean over one arm's runs of a cell (its runs answered the same samples)."""
  counts = {len(s[cell]) for s in runs}
  if len(counts) > 1:
    raise ValueError(f"cell {cell}: the runs of one arm hold {sorted(counts)} samples; "
                     "evaluate every seed of an arm with the same samples")
  return np.mean([np.asarray(s[cell], dtype=float) for s in runs], axis=0)


def paired_sample_variance(a: Sequence[Mapping[Cell, np.ndarray]],
                           b: Sequence[Mapping[Cell, np.ndarray]],
                           weights: Mapping[Cell, float]) -> float:
  """The squared standard error of arm a's statistic minus arm b's (each averaged over its
  runs) over the eval samples: per cell, of the mean per-sample difference when both arms
  answered the same samples, else of each mean on its own. It holds the arms' own response to
  each sample and their runs' interaction noise (`RunNoise.interaction`)."""
  total = 0.0
  for c, w in weights.items():
    xa, xb = _run_average(a, c), _run_average(b, c)
    paired = xa.shape == xb.shape
    total += w * w * (_mean_variance(xa - xb) if paired else
                      _mean_variance(xa) + _mean_variance(xb))
  return total


def seed_level_difference(a: Sequence[float], b: Sequence[float], noise: RunNoise,
                          sample_variance: float = 0.0) -> Interval:
  """Mean of arm a's runs minus arm b's, with a t interval that counts training runs as well as
  eval samples.

  Variance of the difference: the training noise max(s^2, interaction) (1/n_a + 1/n_b), plus
  the sample variance less the interaction it already holds (never below 0), so no component
  is counted twice. The t quantile uses the Welch-Satterthwaite degrees of freedom, the training
  part on `noise.df` (its floor is better estimated: conservative) and the sample part as known.
  Assumes every arm's training noise has the same variance.

  Args:
    a, b: the arms' statistic, one value per run.
    noise: `run_noise` of the statistic.
    sample_variance: `paired_sample_variance` of the two arms.
  """
  k = 1 / len(a) + 1 / len(b)
  runs = max(noise.between_runs, noise.interaction) * k
  samples = max(0.0, sample_variance - noise.interaction * k)
  effective_df = np.inf if runs == 0 else (runs + samples) ** 2 / (runs ** 2 / noise.df)
  return _t_interval(float(np.mean(a) - np.mean(b)), runs + samples, effective_df)


def _t_interval(diff: float, variance: float, df: float) -> Interval:
  """diff with its LEVEL t interval and two-sided p-value, given its variance and degrees of
  freedom (variance 0: a point, p 1 when diff is 0 else 0)."""
  se = float(np.sqrt(variance))
  if se == 0:
    return Interval(diff, diff, diff, float(diff == 0))
  half = float(scipy_stats.t.ppf(0.5 + LEVEL / 2, df)) * se
  return Interval(diff, diff - half, diff + half, float(2 * scipy_stats.t.sf(abs(diff) / se, df)))


def own_variance_difference(a: Sequence[float], b: Sequence[float], noise: RunNoise,
                            sample_variance: float = 0.0) -> Interval | None:
  """As `seed_level_difference`, but each arm's training noise is its own runs' variance
  (Welch), not the pool: the check of the equal-variance assumption, with n - 1 degrees of
  freedom per arm (so weak with two runs); None unless both arms have two or more runs."""
  if min(len(a), len(b)) < 2:
    return None
  va, vb = (max(float(np.var(x, ddof=1)), noise.interaction) / len(x) for x in (a, b))
  k = 1 / len(a) + 1 / len(b)
  samples = max(0.0, sample_variance - noise.interaction * k)
  runs_part = va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)
  df = np.inf if runs_part == 0 else (va + vb + samples) ** 2 / runs_part
  return _t_interval(float(np.mean(a) - np.mean(b)), va + vb + samples, df)


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
  """Holm's step-down adjustment: p-values that keep the chance of any false "significant" in
  the whole family at the nominal level, however the tests depend on each other.

  The i-th smallest of m p-values is multiplied by m - i (i from 0), and each adjusted value
  is at least the one before it, capped at 1; "significant" is adjusted p < 1 - LEVEL.
  """
  order = sorted(p_values, key=p_values.get)
  adjusted, running = {}, 0.0
  for i, key in enumerate(order):
    running = max(running, min(1.0, (len(order) - i) * p_values[key]))
    adjusted[key] = running
  return adjusted
