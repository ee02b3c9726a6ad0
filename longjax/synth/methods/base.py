"""The protocol every long-context synthesis method implements, and its build context.

A method has two halves (ARCHITECTURE.md, "Synthesis"):

* `build(ctx)`: the corpus-wide, usually sequential work (global groupings, neighbour lists,
  context boundaries), done once by `python -m longjax.synth build`. It writes under
  `ctx.method_dir(name)` = `<index_dir>/<name>/`, always with a `manifest.json` that accounts for
  every document the method saw (used, or skipped with a reason).
* `examples(index_dir, ...)`: the per-sample work, done while a SeqIO Task (or any numpy
  consumer) streams. It reads only what `build` wrote plus the corpus store under `index_dir`, and
  yields examples of exactly `length` tokens. The same seed gives the same examples; shards
  `0..num_shards-1` are disjoint and together cover the method's samples.

Its options are `options_type`, a frozen dataclass deriving from `options.MethodOptions` (names,
types, defaults and ranges in one place); `ctx.options(method)` parses its `config` entry.

This module is TF-free: `longjax.tasks` wraps `examples` into SeqIO data sources.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from longjax.models.tokenizer import Tokenizer
from longjax.progress import Progress, silent
from longjax.synth.embed import Embedder
from longjax.synth.methods.options import MethodOptions


@runtime_checkable
class DocStore(Protocol):
  """What methods need from the corpus store: ids, content hashes and random access to texts."""
  hashes: Sequence[str]  # content hash per document, in store order (input fingerprints)

  def __len__(self) -> int: ...

  def doc_ids(self) -> np.ndarray:
    """All document ids (int64), in store order."""
    ...

  def text(self, doc_id: int) -> str:
    """The text of one document."""
    ...


@dataclasses.dataclass(frozen=True)
class BuildContext:
  """Everything a method's corpus-wide `build` may use.

  Attributes:
    store: the (deduplicated) corpus document store.
    tokenizer: the training tokenizer; methods that fix context boundaries at build time
      (ICLM, KNN) count tokens with it and record its name in their manifest.
    embedder: document/chunk embedder, or None when no method being built needs one.
    config: per-method options, `config[method_name] -> {option: value}`; missing keys take
      the method's defaults (`options`).
    index_dir: root of the built index; method `m` writes under `index_dir / m`.
    lengths: target sample lengths in tokens. Methods whose grouping depends on the length
      (KNN, ICLM) plan one set of contexts per length at build time; others ignore it.
    log: a line logger for progress messages and summaries.
    progress: wraps an iterable with a progress display (tqdm-compatible keywords `desc`,
      `total`); the default shows nothing.
    shards: ScaNN searchers per nearest-neighbour index (contiguous row ranges searched one
      by one and merged exactly: `retrieval.build_index`).
  """
  store: DocStore
  tokenizer: Tokenizer
  embedder: Embedder | None
  config: Mapping[str, Mapping[str, Any]]
  index_dir: Path
  lengths: tuple[int, ...] = ()
  log: Callable[[str], None] = logging.getLogger("longjax.synth").info
  progress: Progress = silent
  shards: int = 1

  def __post_init__(self):
    if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
      raise ValueError(f"BuildContext.shards must be an integer >= 1, got {self.shards!r}")
    object.__setattr__(self, "index_dir", Path(self.index_dir))
    object.__setattr__(self, "lengths", tuple(int(n) for n in self.lengths))
    for n in self.lengths:
      if n < 2:
        raise ValueError(f"BuildContext.lengths: every length must be >= 2 tokens, got {n}")

  def method_dir(self, name: str) -> Path:
    """The directory method `name` writes its build output to."""
    return self.index_dir / name

  def options(self, method: "Method") -> Any:
    """`method`'s options: its `config` entry parsed by `method.options_type` (unknown names and
    wrong types are ValueErrors naming the method and option)."""
    return method.options_type.parse(method.name, self.config.get(method.name, {}))


@runtime_checkable
class Method(Protocol):
  """A synthesis method: corpus-wide `build`, then streaming `examples`.

  Each example is `{"targets": np.int32[length], "provenance": str}` where provenance is a JSON
  object saying which documents / chunks (with token spans) and seeds made the sample.

  Two optional class attributes enter the build's stage key (`build._code_key`): `version`, an
  int raised whenever a code change alters what `build` or `examples` produce (so every index
  rebuilds the method rather than reusing a stale build), and `reads`, the names of the methods
  whose builds this one reads (questshuffled reads quest's).
  """
  name: str
  options_type: type[MethodOptions]

  def build(self, ctx: BuildContext) -> None: ...

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]: ...


def check_boundaries(tokens: np.ndarray, tokenizer: Tokenizer, where: str) -> None:
  """Raises if a sample holds a control token outside the boundary convention.

  Every method, the replay data and the eval prompts share `tokenizer.boundaries`; a stray BOS
  or chat marker in one arm's samples is a confound between arms (specs/baselines.md §0).
  """
  stray = tokenizer.special_ids - tokenizer.boundaries.ids
  found = np.isin(tokens, np.fromiter(stray, np.int64, len(stray))) if stray else None
  if found is not None and found.any():
    ids = sorted({int(t) for t in np.asarray(tokens)[found]})
    raise ValueError(f"{where}: sample holds control tokens {ids} outside the boundary "
                     f"convention {tokenizer.boundaries.signature()} ({tokenizer.boundaries.rule})")


def check_shard(shard: int, num_shards: int) -> None:
  """Raises a clear error for an invalid (shard, num_shards) pair."""
  if num_shards < 1:
    raise ValueError(f"num_shards ({num_shards}) must be >= 1")
  if not 0 <= shard < num_shards:
    raise ValueError(f"shard ({shard}) must be in [0, num_shards={num_shards})")


def shard_range(n: int, shard: int, num_shards: int) -> range:
  """The contiguous slice [start, stop) of `n` items that `shard` owns (sizes differ by <= 1)."""
  check_shard(shard, num_shards)
  return range(n * shard // num_shards, n * (shard + 1) // num_shards)
