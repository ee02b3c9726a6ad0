"""SeqIO Mixture/Task -> packed LM features -> this host's numpy batches (a trainer BatchSource).

The one TensorFlow-side piece of training input: `seqio.get_dataset` with the decoder-only
`LMFeatureConverter` (packing gives decoder_segment_ids and decoder_positions; labels are the
targets and inputs the targets shifted right within each packed document), this host's shard of
the examples, batching, and `skip(start)` for an exact resume. The pipeline is deterministic for
a seed (tf.data is deterministic by default and seqio seeds its shuffles), so skipping `start`
batches lands on exactly the batch an uninterrupted run would read next. The cost is re-reading
`start` batches on restart, paid once.
"""

from collections.abc import Iterator, Mapping

import numpy as np
import seqio
import tensorflow as tf


class FullRowsConverter(seqio.LMFeatureConverter):
  """The packed LM features of examples that each fill a row exactly (a synthesis method's
  Task alone): segment id 1 and positions 0..L-1, as packing gives a one-example row.

  seqio packs `L` examples at a time (one `padded_batch` window per row length), so at 16K it
  would synthesize 16,384 samples before the first row; these rows need no packing.
  """

  def __init__(self):
    super().__init__(pack=True)

  def _pack_or_pad(self, ds: tf.data.Dataset, packed_lengths: Mapping[str, int]) -> tf.data.Dataset:
    length = packed_lengths["targets"]

    def one_row(ex):
      targets = ex["targets"]
      check = tf.debugging.assert_equal(
          tf.size(targets), length, message=f"FullRowsConverter: an example is not {length} "
          "tokens long (pack it with seqio.LMFeatureConverter)")
      with tf.control_dependencies([check]):
        return {"targets": tf.identity(targets),
                "targets_segment_ids": tf.ones([length], tf.int32),
                "targets_positions": tf.range(length, dtype=tf.int32)}

    return ds.map(one_row, num_parallel_calls=tf.data.AUTOTUNE)


class SeqioBatches:
  """A `longjax.train.data.BatchSource` over a registered SeqIO Mixture or Task."""

  def __init__(self, mixture_or_task_name: str, task_feature_lengths: Mapping[str, int], *,
               split: str = "train", shuffle: bool = True, seed: int = 0, pack: bool = True,
               use_cached: bool = False):
    import longjax.tasks  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    names = set(seqio.TaskRegistry.names()) | set(seqio.MixtureRegistry.names())
    if mixture_or_task_name not in names:
      close = sorted(n for n in names if n.split("_")[:2] == mixture_or_task_name.split("_")[:2])
      raise ValueError(f"MIXTURE_OR_TASK_NAME {mixture_or_task_name!r} is not a registered SeqIO "
                       f"Task or Mixture" + (f"; similar: {close[:10]}" if close else ""))
    if "targets" not in task_feature_lengths:
      raise ValueError("TASK_FEATURE_LENGTHS needs a 'targets' length for a decoder-only LM, got "
                       f"{dict(task_feature_lengths)}")
    self.name = mixture_or_task_name
    self.lengths = dict(task_feature_lengths)
    self.split, self.shuffle, self.seed, self.pack = split, shuffle, seed, pack
    self.use_cached = use_cached

  @property
  def converter(self) -> seqio.FeatureConverter:
    from longjax.tasks.registry import full_rows  # pylint: disable=import-outside-toplevel
    if self.pack and full_rows(self.name, self.lengths["targets"]):
      return FullRowsConverter()
    return seqio.LMFeatureConverter(pack=self.pack)

  def examples(self, *, shard: int, num_shards: int) -> tf.data.Dataset:
    """The endless example stream of one shard before feature conversion: the first half of
    `dataset` (`seqio.get_dataset` applies `converter` to it), for exports that keep each
    example's provenance."""
    return seqio.get_mixture_or_task(self.name).get_dataset(
        self.lengths, split=self.split, use_cached=self.use_cached, shuffle=self.shuffle,
        seed=self.seed, shard_info=seqio.ShardInfo(index=shard, num_shards=num_shards),
        num_epochs=None, trim_output_features=True)

  def dataset(self, *, shard: int, num_shards: int) -> tf.data.Dataset:
    """The endless, packed, converted example stream of one shard (unbatched)."""
    return seqio.get_dataset(
        self.name, self.lengths, self.converter,
        dataset_split=self.split, use_cached=self.use_cached, shuffle=self.shuffle,
        num_epochs=None, shard_info=seqio.ShardInfo(index=shard, num_shards=num_shards),
        seed=self.seed, verbose=False)

  def batches(self, *, start: int, rows: slice,
              global_batch: int) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of global batches `start`, `start + 1`, ...

    Host rows [r0, r1) read shard r0 / (r1 - r0) of global_batch / (r1 - r0) example shards.
    """
    n = rows.stop - rows.start
    if global_batch % n or rows.start % n:
      raise ValueError(f"host rows {rows.start}:{rows.stop} do not split the global batch "
                       f"({global_batch}) into equal shards")
    ds = self.dataset(shard=rows.start // n, num_shards=global_batch // n)
    ds = ds.batch(n, drop_remainder=True).skip(start).prefetch(tf.data.AUTOTUNE)
    offset = self.id_offset()
    for batch in ds.as_numpy_iterator():
      yield unshift(batch, offset) if offset else batch

  def id_offset(self) -> int:
    """The shift of token ids inside the SeqIO layer (`vocabularies.id_offset`)."""
    from longjax.tasks.vocabularies import id_offset  # pylint: disable=import-outside-toplevel
    vocab = seqio.get_mixture_or_task(self.name).output_features["targets"].vocabulary
    return id_offset(vocab)


def unshift(batch: Mapping[str, np.ndarray], offset: int) -> dict[str, np.ndarray]:
  """Token ids back to the model's: id - offset, and 0 where seqio padded (or, for inputs, where
  a packed document starts; the model reads 0 there, as without the shift)."""
  out = dict(batch)
  for key in ("decoder_target_tokens", "decoder_input_tokens", "targets"):
    if key in out:
      x = out[key]
      out[key] = np.where(x > 0, x - offset, 0).astype(x.dtype)
  return out
