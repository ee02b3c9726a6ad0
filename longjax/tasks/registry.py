"""SeqIO Tasks and Mixtures over built synthesis indexes.

`register(index_dir, ...)` adds, for every method in `longjax.synth.methods.METHODS` and every
length:

* Task `longjax_<corpus>_<method>_<length>`: its `MethodSource` streams `method.examples(...)`
  for the requested shard from `index_dir`, so the grouping/interleaving happens while the Task
  streams; features `targets` (int32 [L], no EOS added by seqio) and `provenance` (JSON string).
* Task `longjax_<corpus>_replay_<length>`: the short-document replay stream.
* Mixture `longjax_<corpus>_<method>_<length>_mix`: the method Task plus replay, with
  `replay_ratio` the replay share of *tokens* (rates are per example, so the replay rate is
  divided by the mean replay example length, measured on a sample when the Mixture is first
  read).

Seeds. The synthesis seed is part of a Task's definition (`seed=`, default 0): every shard and
every seqio call sees the same samples. The `seed` that seqio passes to `get_dataset` (Beam
gives each cache shard its own) only drives seqio's shuffle buffer, never the synthesis.

Sharding. `MethodSource` supports arbitrary sharding: seqio's `ShardInfo(index, num_shards)`
goes straight to `examples(shard=index, num_shards=num_shards)`, whose shards are disjoint.
`list_shards` names `source_shards` shards, the units Beam caching works in parallel.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import seqio
import tensorflow as tf

from longjax.io import parse_length
from longjax.models.tokenizer import Tokenizer
from longjax.synth.methods import METHODS, replay
from longjax.synth.methods.base import check_boundaries, check_shard
from longjax.synth.methods.task_names import IndexInfo, task_name
from longjax.tasks.vocabularies import id_offset, make_vocabulary, tokenizer_of

SPLIT = "train"
ExamplesFn = Callable[..., Iterator[dict[str, Any]]]


class MethodSource(seqio.DataSource):
  """A seqio DataSource over a synthesis method's `examples` (arbitrary sharding); `method`
  names the method whose artifacts in `index_dir` they read (an export's fingerprint)."""

  def __init__(self, examples: ExamplesFn, *, method: str, index_dir: Path, length: int,
               tokenizer: Callable[[], Tokenizer], seed: int, source_shards: int,
               id_offset: Callable[[], int] = lambda: 0, fixed_length: bool = True):
    check_shard(0, source_shards)
    self.method = method
    self._examples, self._index_dir, self._length = examples, Path(index_dir), length
    self._tokenizer, self._seed, self._source_shards = tokenizer, seed, source_shards
    self._offset, self._fixed = id_offset, fixed_length
    super().__init__(splits=(SPLIT,), caching_permitted=True)

  @property
  def index_dir(self) -> Path:
    return self._index_dir

  @property
  def fixed_length(self) -> int | None:
    """The length of every example, or None where examples vary (replay)."""
    return self._length if self._fixed else None

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    self._check_split(split)
    n = self._source_shards
    return [f"{self._index_dir}@{i:05d}-of-{n:05d}" for i in range(n)]

  def _check_split(self, split: str) -> None:
    if split != SPLIT:
      raise ValueError(f"split {split!r}: longjax synthesis Tasks have only {SPLIT!r}")

  def examples(self, shard: int = 0, num_shards: int = 1) -> Iterator[dict[str, Any]]:
    """The numpy examples of one shard (what `get_dataset` wraps), each checked against the
    boundary convention."""
    tokenizer = self._tokenizer()
    for ex in self._examples(self._index_dir, length=self._length, tokenizer=tokenizer,
                             shard=shard, num_shards=num_shards, seed=self._seed):
      check_boundaries(ex["targets"], tokenizer, f"{self._index_dir} ({ex['provenance'][:80]})")
      yield ex

  def get_dataset(self, split: str = SPLIT, shuffle: bool = True, seed: Optional[int] = None,
                  shard_info: Optional[seqio.ShardInfo] = None, *,
                  sequence_length: Any = None, use_cached: bool = False,
                  num_epochs: Optional[int] = 1) -> tf.data.Dataset:
    del shuffle, seed, sequence_length, use_cached, num_epochs  # see the module docstring
    self._check_split(split)
    shard, n = (shard_info.index, shard_info.num_shards) if shard_info else (0, 1)
    check_shard(shard, n)
    spec = {"targets": tf.TensorSpec([self._length if self._fixed else None], tf.int32),
            "provenance": tf.TensorSpec([], tf.string)}
    offset = self._offset()  # token ids travel shifted in the SeqIO layer (vocabularies.py)
    ds = tf.data.Dataset.from_generator(lambda: self.examples(shard, n), output_signature=spec)
    return ds.map(lambda ex: {**ex, "targets": ex["targets"] + offset}) if offset else ds


def full_rows(name: str, length: int) -> bool:
  """Whether every example of Task or Mixture `name` is exactly `length` tokens (synthesis
  method Tasks, alone or mixed without replay), so that each one is a training row as is."""
  tasks = seqio.get_subtasks(seqio.get_mixture_or_task(name))
  return all(isinstance(t.source, MethodSource) and t.source.fixed_length == length
             for t in tasks)


def output_features(vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  return {
      "targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
      "provenance": seqio.Feature(seqio.PassThroughVocabulary(1), add_eos=False, required=False,
                                  dtype=tf.string, rank=0),
  }


def _add_task(name: str, source: MethodSource, vocabulary: seqio.Vocabulary,
              shuffle_buffer_size: int) -> None:
  seqio.TaskRegistry.remove(name)  # re-registering replaces
  seqio.TaskRegistry.add(name, source=source, output_features=output_features(vocabulary),
                         preprocessors=[seqio.CacheDatasetPlaceholder()],
                         shuffle_buffer_size=shuffle_buffer_size)


def register(index_dir: str | Path, *, corpus: str | None = None,
             vocabulary: seqio.Vocabulary | str | None = None,
             lengths: Sequence[int | str] | None = None, methods: Sequence[str] | None = None,
             seed: int = 0, replay_ratio: float = 0.1, source_shards: int = 8,
             shuffle_buffer_size: int = 64) -> list[str]:
  """Registers the Tasks and Mixtures of one index directory; returns their names.

  Unset arguments come from the index's build manifest: `corpus` (its name), `vocabulary`
  (the build tokenizer), `lengths` (the built lengths). `methods` defaults to every registered
  method; a Task of a method the index lacks raises a clear error when first read.
  """
  if not 0.0 <= replay_ratio < 1.0:
    raise ValueError(f"replay_ratio ({replay_ratio}) must be in [0, 1)")
  if shuffle_buffer_size < 1:
    raise ValueError(f"shuffle_buffer_size ({shuffle_buffer_size}) must be >= 1")
  info = IndexInfo.read(index_dir)
  corpus = corpus or info.corpus
  if isinstance(vocabulary, seqio.Vocabulary):
    vocab = vocabulary
  else:
    vocab = make_vocabulary(info.tokenizer if vocabulary is None else vocabulary)
  tokenizer = functools.cache(lambda: tokenizer_of(vocab))
  lengths = [parse_length(n) for n in (lengths or info.lengths)]
  methods = list(methods or METHODS)
  unknown = set(methods) - set(METHODS)
  if unknown:
    raise ValueError(f"unknown methods {sorted(unknown)}; registered: {sorted(METHODS)}")
  names = []
  for length in lengths:
    common = dict(index_dir=info.index_dir, length=length, tokenizer=tokenizer, seed=seed,
                  source_shards=source_shards, id_offset=lambda: id_offset(vocab))
    replay_task = task_name(corpus, replay.NAME, length)
    _add_task(replay_task, MethodSource(replay.replay_examples, method=replay.NAME,
                                        fixed_length=False, **common),
              vocab, shuffle_buffer_size)
    names.append(replay_task)
    replay_tokens = functools.cache(
        lambda length=length: replay.mean_tokens(info.index_dir, tokenizer(), length, seed=seed))
    for method in methods:
      name = task_name(corpus, method, length)
      _add_task(name, MethodSource(METHODS[method].examples, method=method, **common), vocab,
                shuffle_buffer_size)
      mix = [(name, (1.0 - replay_ratio) / length)]
      if replay_ratio > 0:
        mix.append((replay_task, lambda _, f=replay_tokens: replay_ratio / f()))
      seqio.MixtureRegistry.remove(name + "_mix")
      seqio.MixtureRegistry.add(name + "_mix", mix)
      names += [name, name + "_mix"]
  return names
