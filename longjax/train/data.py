"""Input to the trainer: per-host numpy batches with a position, completed and zigzag-permuted.

A `BatchSource` yields this host's rows of each global batch, starting at a given batch index
(the data position stored in checkpoints), so a restarted run sees exactly the batches an
uninterrupted one would. Sources: `longjax.tasks.input.SeqioBatches` (SeqIO, TF),
`longjax.train.arrayrecord.ArrayRecordSource` (exported rows, Grain), `IterableSource`
(any iterable of global numpy batches) and `SyntheticSource` (seeded random tokens, benchmarks).
TF never enters this module.
"""

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from longjax.ops import zigzag
from longjax.train.step import FEATURES

Batch = Mapping[str, np.ndarray]


class BatchSource(Protocol):
  """Anything that yields this host's [rows, S] part of each global batch, from `start` on."""

  def batches(self, *, start: int, rows: slice, global_batch: int) -> Iterator[Batch]:
    """Yields batches `start`, `start + 1`, ...: rows `rows` of each [global_batch, S] batch."""
    ...


def describe(source: BatchSource) -> dict[str, Any]:
  """What a run's manifest records of its data: the source's class and public JSON settings
  (a SeqIO source's Mixture/Task name, lengths, split and seed; a synthetic source's seed)."""
  def jsonable(v):
    try:
      json.dumps(v)
      return True
    except TypeError:
      return False
  cls = type(source)
  settings = {k: v for k, v in vars(source).items() if not k.startswith("_") and jsonable(v)}
  return {"type": f"{cls.__module__}.{cls.__qualname__}", **settings}


@runtime_checkable
class CheckedSource(Protocol):
  """A source that can tell, before anything compiles, whether a run fits its data."""

  def check_run(self, *, seq_len: int, vocab_size: int) -> None:
    """Raises ValueError naming what differs (row length, vocabulary) from the run's config."""
    ...


class IterableSource:
  """Wraps a factory of an iterable of global numpy batches (dicts of [B, S] arrays).

  Resuming replays the first `start` batches, so the factory must be deterministic.
  """

  def __init__(self, make_iterable: Callable[[], Iterable[Batch]]):
    self._make = make_iterable

  def batches(self, *, start: int, rows: slice, global_batch: int) -> Iterator[Batch]:
    for i, batch in enumerate(self._make()):
      if i < start:
        continue
      first = next(iter(batch.values()))
      if first.shape[0] != global_batch:
        raise ValueError(f"batch {i} has {first.shape[0]} rows, expected the global batch size "
                         f"{global_batch}")
      yield {k: np.asarray(v)[rows] for k, v in batch.items()}


class SyntheticSource:
  """Uniform random tokens, a pure function of (seed, batch index, row): for benchmarks/tests."""

  def __init__(self, vocab_size: int, seq_len: int, seed: int = 0):
    self.vocab_size, self.seq_len, self.seed = vocab_size, seq_len, seed

  def batches(self, *, start: int, rows: slice, global_batch: int) -> Iterator[Batch]:
    step = start
    while True:
      tokens = np.stack([
          np.random.default_rng((self.seed, step, r)).integers(
              1, self.vocab_size, self.seq_len + 1, dtype=np.int32)
          for r in range(*rows.indices(global_batch))])
      yield {"decoder_input_tokens": tokens[:, :-1], "decoder_target_tokens": tokens[:, 1:]}
      step += 1


def complete(batch: Batch) -> dict[str, np.ndarray]:
  """Fills in the features a source may omit, with the meaning seqio's LM converter gives them.

  Only `decoder_target_tokens` is required. Missing segment ids: 1 on non-padding (target != 0);
  positions: the index within each segment; loss weights: segment ids > 0; input tokens: the
  targets shifted right by one within each segment (0 at a segment's start).
  """
  if "decoder_target_tokens" not in batch:
    raise ValueError(f"a batch needs 'decoder_target_tokens'; got features {sorted(batch)}")
  out = {k: np.asarray(v) for k, v in batch.items() if k in FEATURES}
  targets = out["decoder_target_tokens"]
  if targets.ndim != 2:
    raise ValueError(f"decoder_target_tokens must be [B, S], got shape {targets.shape}")
  seg = out.setdefault("decoder_segment_ids", (targets != 0).astype(np.int32))
  start = np.ones_like(seg, dtype=bool)
  start[:, 1:] = seg[:, 1:] != seg[:, :-1]
  if "decoder_positions" not in out:
    idx = np.broadcast_to(np.arange(targets.shape[1]), targets.shape)
    out["decoder_positions"] = (idx - np.maximum.accumulate(np.where(start, idx, 0), axis=1)
                                ).astype(np.int32)
  if "decoder_input_tokens" not in out:
    shifted = np.zeros_like(targets)
    shifted[:, 1:] = targets[:, :-1]
    out["decoder_input_tokens"] = np.where(start, 0, shifted)
  out.setdefault("decoder_loss_weights", (seg > 0).astype(np.float32))
  for k in FEATURES:
    if out[k].shape != targets.shape:
      raise ValueError(f"feature {k} has shape {out[k].shape}, expected {targets.shape}")
  return out


def zigzag_batch(batch: Batch, shards: int) -> dict[str, np.ndarray]:
  """Applies the load-balancing zigzag permutation (`longjax.ops.zigzag`) to every feature.

  Called once per batch on the host, after labels were shifted (`complete`), so tokens, labels,
  positions, segment ids and weights stay aligned; a no-op when `shards` == 1. numpy in, numpy
  out: no device sees the batch before `sharding.global_batch` places it.
  """
  if shards == 1:
    return dict(batch)
  return {k: zigzag(np.asarray(v), shards, axis=1) for k, v in batch.items()}
