"""Exported training rows: their ArrayRecord format, validation, and a Grain `BatchSource`.

`python -m longjax.tasks export` (TensorFlow side) writes a directory of ArrayRecord shards of
ready training rows plus a `manifest.json`; this module reads it without TensorFlow or seqio.

Record format (`RowFormat`, manifest `format`): one record per row of L tokens, the raw bytes of
`targets`, then `segment_ids` and `positions` as differences from the previous value (the first
from 0, modulo the dtype), in that order, little-endian, the dtypes the manifest names (uint16
where the vocabulary or L allows), then the row's provenance as UTF-8 JSON (a list with one entry
per packed example). Fixed offsets make decoding one `np.frombuffer` per feature. Differences
make the index features of a row almost constant (1, 0, 0, ...; 0, 1, 1, ...), so the shard's
zstd compression stores them in a few bytes instead of ~16 KB per 16K row: an arm's export
shrinks by ~half, which decides whether it travels to an accelerator in one piece.

Reading (`ArrayRecordSource`): Grain's `MapDataset` over every shard, shuffled globally with a
seed and reshuffled each epoch, cut into host slices of every global batch. Random access makes
the resume O(1): batch `start` is found by index arithmetic, never by replaying earlier batches.
Grain's iterator state for this pipeline is `{"next_index": batches consumed}`, which is exactly
the data position the trainer saves in every Orbax checkpoint, so that position is the one piece
of data state a checkpoint needs (a separately saved iterator would run ahead of the trainer by
its prefetch depth).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
from grain.sources import ArrayRecordDataSource

from longjax import io

KIND = "export"
FORMAT = "longjax-rows-v2"
FEATURES = ("targets", "segment_ids", "positions")
# Trainer feature names (seqio's LM converter) of the stored features.
TRAINER_NAMES = {"targets": "decoder_target_tokens", "segment_ids": "decoder_segment_ids",
                 "positions": "decoder_positions"}


class ExportError(ValueError):
  """An export directory that cannot be trained on as it is (names the file and the problem)."""


def smallest_uint(bound: int) -> str:
  """The narrowest unsigned dtype holding every value in [0, bound)."""
  for dtype in ("uint8", "uint16", "uint32"):
    if bound <= np.iinfo(dtype).max + 1:
      return dtype
  raise ValueError(f"no unsigned 32-bit dtype holds values up to {bound}")


@dataclasses.dataclass(frozen=True)
class RowFormat:
  """How one row of `length` tokens is laid out in a record (see the module docstring)."""
  length: int
  token_dtype: str
  index_dtype: str      # segment ids and positions (both < length + 1)

  @classmethod
  def make(cls, length: int, vocab_size: int) -> "RowFormat":
    return cls(length, smallest_uint(vocab_size), smallest_uint(length + 1))

  @classmethod
  def from_manifest(cls, manifest: Mapping[str, Any]) -> "RowFormat":
    f = manifest["format"]
    return cls(int(f["length"]), f["token_dtype"], f["index_dtype"])

  def to_json(self) -> dict[str, Any]:
    return {"name": FORMAT, "features": list(FEATURES), **dataclasses.asdict(self)}

  @property
  def _dtypes(self) -> tuple[np.dtype, ...]:
    return (np.dtype(self.token_dtype).newbyteorder("<"),
            np.dtype(self.index_dtype).newbyteorder("<"),
            np.dtype(self.index_dtype).newbyteorder("<"))

  def encode(self, row: Mapping[str, np.ndarray], provenance: Sequence[Any] = ()) -> bytes:
    """One record: `row`'s features (each [length]) in the stored dtypes, then provenance."""
    parts = []
    for name, dtype in zip(FEATURES, self._dtypes):
      values = np.asarray(row[name])
      if values.shape != (self.length,):
        raise ValueError(f"feature {name} has shape {values.shape}, expected ({self.length},)")
      if values.size and (values.min() < 0 or values.max() > np.iinfo(dtype).max):
        raise ValueError(f"feature {name} has values in [{values.min()}, {values.max()}], "
                         f"outside {dtype.name}")
      values = values.astype(dtype)
      if name != "targets":
        values = np.diff(values, prepend=dtype.type(0))  # wraps modulo the dtype: exact
      parts.append(values.tobytes())
    return b"".join(parts) + json.dumps(list(provenance)).encode("utf-8")

  def decode(self, record: bytes) -> dict[str, np.ndarray]:
    """The features of one record as int32 [length] arrays (provenance is not decoded)."""
    out, offset = {}, 0
    for name, dtype in zip(FEATURES, self._dtypes):
      values = np.frombuffer(record, dtype, self.length, offset)
      if name != "targets":
        values = np.cumsum(values, dtype=dtype)  # undoes the differences, modulo the dtype
      out[name] = values.astype(np.int32)
      offset += self.length * dtype.itemsize
    return out

  def provenance(self, record: bytes) -> list[Any]:
    size = sum(self.length * d.itemsize for d in self._dtypes)
    return json.loads(record[size:])


def read_export(data_dir: str | Path, *, verify: bool = True) -> dict[str, Any]:
  """The manifest of a complete export, after checking every shard's size and (`verify`) sha256.

  Raises `ExportError` naming the file and what was expected; reads only, writes nothing.
  """
  data_dir = Path(data_dir)
  manifest = io.read_manifest(data_dir)
  where = data_dir / io.MANIFEST
  if manifest is None:
    raise ExportError(f"{where} not found: DATA_DIR must be a directory written by "
                      "`python -m longjax.tasks export`")
  if manifest.get("kind") != KIND or not manifest.get("complete"):
    raise ExportError(f"{where}: expected a complete '{KIND}' manifest, got kind="
                      f"{manifest.get('kind')!r}, complete={manifest.get('complete')!r}")
  if manifest.get("format", {}).get("name") != FORMAT:
    raise ExportError(f"{where}: record format {manifest.get('format')!r}; this reader "
                      f"reads {FORMAT!r}")
  for shard in manifest["shards"]:
    _check_size(data_dir / shard["file"], shard["bytes"])
  if verify:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # hashlib releases the GIL
      digests = pool.map(io.file_sha256, [data_dir / s["file"] for s in manifest["shards"]])
      for shard, digest in zip(manifest["shards"], digests):
        if digest != shard["sha256"]:
          raise ExportError(f"{data_dir / shard['file']}: sha256 {digest} does not match the "
                            f"manifest's {shard['sha256']}; the shard changed after the export")
  return manifest


def _check_size(path: Path, expected: int) -> None:
  if not path.is_file():
    raise ExportError(f"{path}: shard missing (the manifest lists it with {expected} bytes)")
  size = path.stat().st_size
  if size != expected:
    raise ExportError(f"{path}: {size} bytes, the manifest expects {expected} "
                      f"({'truncated' if size < expected else 'grown'} since the export)")


class ArrayRecordSource:
  """A TF-free `BatchSource` over an export directory, read with Grain (module docstring)."""

  def __init__(self, data_dir: str | Path, *, seed: int = 0, shuffle: bool = True,
               mixture_or_task_name: str | None = None, verify: bool = True,
               read_threads: int = 4, prefetch: int = 4):
    """Validates the export now (before anything compiles): manifest, shards, sha256, and that
    it was exported from `mixture_or_task_name` when given."""
    self.data_dir = Path(data_dir)
    self.manifest = read_export(self.data_dir, verify=verify)
    self.format = RowFormat.from_manifest(self.manifest)
    task = self.manifest["config"]["task"]
    if mixture_or_task_name is not None and mixture_or_task_name != task:
      raise ExportError(f"{self.data_dir / io.MANIFEST}: exported from {task!r}, but "
                        f"MIXTURE_OR_TASK_NAME is {mixture_or_task_name!r}")
    self.seed, self.shuffle = seed, shuffle
    self.read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch)

  @property
  def rows(self) -> int:
    return int(self.manifest["counts"]["rows"])

  def check_run(self, *, seq_len: int, vocab_size: int) -> None:
    """Raises unless the run trains on rows of this length with every stored token id."""
    where = self.data_dir / io.MANIFEST
    if seq_len != self.format.length:
      raise ExportError(f"{where}: rows of {self.format.length} tokens, but "
                        f"TASK_FEATURE_LENGTHS['targets'] is {seq_len}")
    data_vocab = int(self.manifest["config"]["vocab_size"])
    if data_vocab > vocab_size:
      raise ExportError(f"{where}: tokenizer {self.manifest['config']['tokenizer']!r} has "
                        f"{data_vocab} ids, more than the model's vocab_size ({vocab_size})")

  def dataset(self) -> grain.MapDataset:
    """Every row, decoded, epoch after epoch (each epoch its own permutation when shuffling)."""
    paths = [str(self.data_dir / s["file"]) for s in self.manifest["shards"]]
    ds = grain.MapDataset.source(ArrayRecordDataSource(paths))
    if self.shuffle:
      ds = ds.shuffle(seed=self.seed)
    return ds.repeat().map(self._decode)

  def _decode(self, record: bytes) -> dict[str, np.ndarray]:
    return {TRAINER_NAMES[k]: v for k, v in self.format.decode(record).items()}

  def batches(self, *, start: int, rows: slice,
              global_batch: int) -> Iterator[dict[str, np.ndarray]]:
    """This host's rows of global batches `start`, `start + 1`, ...: global batch b holds rows
    [b * global_batch, (b + 1) * global_batch) of `dataset()`; only this host's are read."""
    n = rows.stop - rows.start
    if global_batch % n or rows.start % n:
      raise ValueError(f"host rows {rows.start}:{rows.stop} do not split the global batch "
                       f"({global_batch}) into equal parts")
    hosts = global_batch // n
    # Element k of the batched dataset holds rows [k n, (k + 1) n): host part k % hosts of
    # global batch k // hosts.
    mine = self.dataset().batch(n, drop_remainder=True)[rows.start // n::hosts]
    yield from mine[start:].to_iter_dataset(self.read_options)
