"""Quest stage 5 planner: which documents (token spans) make each sample (specs/quest.md §5-6).

Works on token counts only, so `synth build` can simulate a run (document-use counts for the
manifest) and `examples` can plan a shard before reading any text; `materialize` in method.py
turns a plan into tokens.

A sample: draw a keyword by weight among the active keywords (not yet used in this sample),
pop its pre-shuffled pool (without replacement) and append each document's tokens + EOS until
L tokens; the document that crosses L is truncated (its tail is dropped, or with
`carry_remainder` goes back into the pool as a pseudo-document). When the keyword runs out
before L, `fill_policy` decides: `next_keyword` draws another keyword, `drop` discards the
partial sample, `refill` reshuffles the same keyword (short indexes only, at most once per
sample, documents already in the sample are not drawn again) and then continues as
`next_keyword`. A short pool that runs empty is reshuffled up to `max_epochs_short` passes in
total; long pools are one pass. The run stops when the long pools are exhausted (or every pool
when there are no long keywords), or at `num_samples` / `token_budget`. Documents longer than
L (with boundary tokens) become samples of their own: `split` cuts them into L-token pieces (a
shorter last piece goes back into the pool with `carry_remainder`, else it is dropped),
`truncate` keeps the first L tokens. No document repeats in a sample.

Spans are `(keyword, doc_id, tok_start, tok_end)`, half-open over the document's tokens with
its boundary tokens (the packer's convention in `synth/methods/packer.py`).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable, Sequence

import numpy as np

FILL_POLICIES = ("next_keyword", "drop", "refill")
LONG_DOC_POLICIES = ("split", "truncate")
Span = tuple[str, int, int, int]


@dataclasses.dataclass(frozen=True)
class SampleOptions:
  length: int
  fill_policy: str = "next_keyword"
  long_doc_policy: str = "split"
  max_epochs_short: int = 4
  carry_remainder: bool = False
  num_samples: int | None = None
  token_budget: int | None = None

  def __post_init__(self):
    if self.length < 2:
      raise ValueError(f"length ({self.length}) must be >= 2")
    if self.fill_policy not in FILL_POLICIES:
      raise ValueError(f"fill_policy must be one of {FILL_POLICIES}, got {self.fill_policy!r}")
    if self.long_doc_policy not in LONG_DOC_POLICIES:
      raise ValueError(f"long_doc_policy must be one of {LONG_DOC_POLICIES}, "
                       f"got {self.long_doc_policy!r}")
    if self.max_epochs_short < 1:
      raise ValueError(f"max_epochs_short ({self.max_epochs_short}) must be >= 1")
    for name in ("num_samples", "token_budget"):
      v = getattr(self, name)
      if v is not None and v < 0:
        raise ValueError(f"{name} ({v}) must be >= 0 or None")


class _Fenwick:
  """Weighted sampling with point updates in O(log K) (a binary indexed tree over weights)."""

  def __init__(self, weights: np.ndarray):
    self.n = len(weights)
    self.w = np.zeros(self.n, np.float64)
    self.tree = np.zeros(self.n + 1, np.float64)
    self.top = 1 << max(self.n.bit_length() - 1, 0)
    self.w[:] = np.maximum(np.asarray(weights, np.float64), 0.0)
    self.active = int(np.sum(self.w > 0))  # exact, unlike the float total
    self.tree[1:] = self.w
    for i in range(1, self.n + 1):  # O(K) construction
      j = i + (i & -i)
      if j <= self.n:
        self.tree[j] += self.tree[i]

  def set(self, i: int, value: float) -> None:
    self.active += int(value > 0) - int(self.w[i] > 0)
    delta = value - self.w[i]
    self.w[i] = value
    j = i + 1
    while j <= self.n:
      self.tree[j] += delta
      j += j & -j

  def total(self) -> float:
    s, j = 0.0, self.n
    while j > 0:
      s += self.tree[j]
      j -= j & -j
    return s

  def sample(self, rng: np.random.Generator) -> int:
    u = rng.random() * self.total()
    pos, step = 0, self.top
    while step:
      nxt = pos + step
      if nxt <= self.n and self.tree[nxt] <= u:
        pos = nxt
        u -= self.tree[nxt]
      step >>= 1
    pos = min(pos, self.n - 1)
    if self.w[pos] <= 0:  # float drift in the partial sums; rare, so a linear fallback is fine
      live = np.flatnonzero(self.w > 0)
      c = np.cumsum(self.w[live])
      pos = int(live[min(int(np.searchsorted(c, rng.random() * c[-1], side="right")),
                         len(live) - 1)])
    return pos


@dataclasses.dataclass
class PlanStats:
  samples: int = 0
  tokens: int = 0
  partial_dropped: int = 0          # samples discarded by fill_policy="drop" or at the end
  long_docs: int = 0                # documents longer than L
  long_doc_tokens_dropped: int = 0  # tails of split/truncated long documents
  overflow_tokens_dropped: int = 0  # tails cut at L (carry_remainder=False)
  refills: int = 0                  # short pools reshuffled
  short_tokens: int = 0
  keywords_per_sample: Counter = dataclasses.field(default_factory=Counter)
  doc_uses: Counter = dataclasses.field(default_factory=Counter)  # doc_id -> samples using it

  def summary(self, n_docs: int) -> dict:
    uses = Counter(self.doc_uses.values())
    uses[0] = n_docs - len(self.doc_uses)
    return {"samples": self.samples, "tokens": self.tokens,
            "short_token_share": self.short_tokens / self.tokens if self.tokens else 0.0,
            "partial_samples_dropped": self.partial_dropped, "long_docs": self.long_docs,
            "long_doc_tokens_dropped": self.long_doc_tokens_dropped,
            "overflow_tokens_dropped": self.overflow_tokens_dropped,
            "short_pool_refills": self.refills,
            "keywords_per_sample": {str(k): v for k, v in sorted(self.keywords_per_sample.items())},
            "docs_by_use_count": {str(k): v for k, v in sorted(uses.items())}}


def plan_samples(keywords: Sequence[str], pools: Sequence[np.ndarray], weights: np.ndarray,
                 short: np.ndarray, doc_len: Callable[[int], int], opts: SampleOptions,
                 rng: np.random.Generator) -> tuple[list[list[Span]], PlanStats]:
  """Plans the samples of one shard. `doc_len(doc_id)` is the token count with boundaries."""
  L = opts.length
  k_count = len(keywords)
  stats = PlanStats()
  plans: list[list[Span]] = []
  docs = [np.asarray(p, np.int64) for p in pools]
  pool: list[list[tuple[int, int]]] = []
  for d in docs:
    pool.append([(int(x), 0) for x in rng.permutation(d)])
  passes = np.ones(k_count, np.int64)
  base = np.where(np.array([len(p) > 0 for p in pool], bool), np.asarray(weights, np.float64), 0)
  base = np.where(base > 0, base, 0.0)
  tree = _Fenwick(base)
  long_left = int(np.sum((~np.asarray(short, bool)) & (base > 0)))
  has_long = long_left > 0

  def refill(k: int) -> bool:
    if not short[k] or passes[k] >= opts.max_epochs_short or len(docs[k]) == 0:
      return False
    pool[k] = [(int(x), 0) for x in rng.permutation(docs[k])]
    passes[k] += 1
    stats.refills += 1
    return True

  def budget_reached() -> bool:
    if opts.num_samples is not None and stats.samples >= opts.num_samples:
      return True
    return opts.token_budget is not None and stats.tokens + L > opts.token_budget

  def done() -> bool:
    return budget_reached() or (has_long and long_left == 0) or tree.active == 0

  def emit(spans: list[Span]) -> None:
    plans.append(spans)
    stats.samples += 1
    stats.tokens += L
    stats.keywords_per_sample[len({s[0] for s in spans})] += 1
    for kw_name, d, s, e in spans:
      stats.doc_uses[d] += 1
    stats.short_tokens += sum(e - s for kw_name, d, s, e in spans if short[kw_index[kw_name]])

  kw_index = {k: i for i, k in enumerate(keywords)}
  while not done():
    spans: list[Span] = []
    filled = 0
    used: list[int] = []
    in_sample: set[int] = set()
    while filled < L and tree.active > 0:
      k = tree.sample(rng)
      used.append(k)
      tree.set(k, 0.0)  # no second draw of this keyword within the sample
      refilled = False
      deferred: list[tuple[int, int]] = []
      while filled < L:
        if not pool[k]:
          if opts.fill_policy == "refill" and not refilled and refill(k):
            refilled = True
            continue
          break
        d, start = pool[k].pop()
        if d in in_sample:
          deferred.append((d, start))
          continue
        n = doc_len(d)
        if start == 0 and n > L:  # a document longer than L: samples of its own
          stats.long_docs += 1
          pieces = n // L if opts.long_doc_policy == "split" else 1
          for p in range(pieces):
            if budget_reached():
              break
            emit([(keywords[k], d, p * L, (p + 1) * L)])
          rest = n - pieces * L
          if rest and opts.long_doc_policy == "split" and opts.carry_remainder:
            pool[k].insert(int(rng.integers(len(pool[k]) + 1)), (d, pieces * L))
          else:
            stats.long_doc_tokens_dropped += rest
          continue
        take = min(n - start, L - filled)
        spans.append((keywords[k], d, start, start + take))
        in_sample.add(d)
        filled += take
        if start + take < n:
          if opts.carry_remainder:
            pool[k].insert(int(rng.integers(len(pool[k]) + 1)), (d, start + take))
          else:
            stats.overflow_tokens_dropped += n - start - take
      pool[k].extend(deferred)
      if filled < L and opts.fill_policy == "drop":
        break
    for k in used:  # restore the keywords drawn for this sample, or retire exhausted ones
      if pool[k] or refill(k):
        tree.set(k, float(base[k]))
      elif not short[k]:
        long_left -= 1
    if filled == L and not budget_reached():
      emit(spans)
    elif spans:
      stats.partial_dropped += 1
  return plans, stats
