"""Documents as read from corpus files: the raw-document record and the format readers.

The bottom layer's one reader of text collections, shared by the synthesis corpus store
(`synth.corpus`, which validates, deduplicates and stores what it reads), SentencePiece
training (`tasks.train_spm`) and evaluation's held-out file (`eval.heldout`).

Input formats (`iter_raw_documents`):
- JSON lines, optionally gzipped (`.jsonl`, `.jsonl.gz`, `.ndjson`): one object per line with a
  string `text`, optional `id` (string or integer) and `title`.
- Parquet (`.parquet`) and Arrow (`.arrow`, IPC stream or file) tables with the same columns.
- A directory: if it holds any of the files above (an HF-datasets `save_to_disk` dump of one
  split, a TFDS parquet export with shard names like `x-train.parquet-00000-of-00004`), every
  such file in sorted path order; otherwise every non-hidden file is one plain-text document
  whose id is its relative path. TFDS tfrecord/array_record shards are refused with a clear
  error (decoding tf.train.Example needs TensorFlow).
- A single other file: one plain-text document.

Malformed structure (invalid JSON, no `text` column, a non-string text) raises `CorpusError`
naming the file and line/row. Bad *content* (invalid UTF-8, NUL bytes, empty text) is passed on
as it is, for the caller to judge: a `RawDocument`'s text stays bytes when it still needs
decoding.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator, Mapping

# File kinds by name; TFDS shards carry their format before a `-NNNNN-of-NNNNN` suffix.
_KINDS = {"jsonl": "jsonl", "jsonl.gz": "jsonl", "ndjson": "jsonl", "ndjson.gz": "jsonl",
          "parquet": "parquet", "arrow": "arrow", "tfrecord": "tf", "array_record": "tf"}
_KIND_RE = re.compile(
    r"\.(" + "|".join(re.escape(k) for k in sorted(_KINDS, key=len, reverse=True))
    + r")(-\d+-of-\d+)?$")


class CorpusError(ValueError):
  """Malformed corpus input; the message names the file and line or row."""


@dataclasses.dataclass(frozen=True)
class RawDocument:
  """One input item before validation. `text` is bytes when it still needs UTF-8 decoding."""
  source: str  # "path:line" or "path:row N"; where a person finds the item
  text: str | bytes | None
  key: str | None = None
  title: str | None = None


def _jsonl_documents(path: Path, text_field: str) -> Iterator[RawDocument]:
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "rb") as f:
    for lineno, line in enumerate(f, 1):
      source = f"{path}:{lineno}"
      if not line.strip():
        continue
      try:
        line = line.decode("utf-8")
      except UnicodeDecodeError:
        yield RawDocument(source, line)  # bytes: the caller judges (the store: not_utf8)
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise CorpusError(f"{source}: not valid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(obj, dict):
        raise CorpusError(f"{source}: expected a JSON object, got {type(obj).__name__}")
      yield _from_mapping(obj, source, text_field)


def _from_mapping(obj: Mapping[str, Any], source: str, text_field: str) -> RawDocument:
  if text_field not in obj:
    raise CorpusError(f"{source}: missing field {text_field!r} (fields: {sorted(obj)})")
  text = obj[text_field]
  if text is not None and not isinstance(text, (str, bytes)):
    raise CorpusError(f"{source}: field {text_field!r} must be a string, "
                      f"got {type(text).__name__}")
  key = obj.get("id")
  if key is not None and not isinstance(key, (str, int)):
    raise CorpusError(f"{source}: field 'id' must be a string or integer, "
                      f"got {type(key).__name__}")
  title = obj.get("title")
  if title is not None and not isinstance(title, str):
    raise CorpusError(f"{source}: field 'title' must be a string, got {type(title).__name__}")
  return RawDocument(source, text, None if key is None else str(key), title)


def _table_documents(path: Path, text_field: str) -> Iterator[RawDocument]:
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

  try:
    if _data_kind(path) == "parquet":
      batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    else:
      try:
        batches = iter(pa.ipc.open_stream(pa.memory_map(str(path))))
      except pa.ArrowInvalid:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
  except (pa.ArrowInvalid, OSError) as e:
    raise CorpusError(f"{path}: not a readable {path.suffix[1:]} table ({e})") from None
  row = 0
  for batch in batches:
    names = batch.schema.names
    if text_field not in names:
      raise CorpusError(f"{path}: no column {text_field!r} (columns: {names})")
    columns = [c for c in (text_field, "id", "title") if c in names]
    for rec in batch.select(columns).to_pylist():
      yield _from_mapping(rec, f"{path}:row {row}", text_field)
      row += 1


def _data_kind(path: Path) -> str | None:
  """'jsonl', 'parquet', 'arrow', 'tf' (TFDS tfrecord/array_record shards) or None (text)."""
  m = _KIND_RE.search(path.name)
  return _KINDS[m.group(1)] if m else None


def iter_raw_documents(source: str | os.PathLike, *, text_field: str = "text",
                       max_bytes: int | None = None) -> Iterator[RawDocument]:
  """Yields every input item of a corpus file or directory (see the module docstring).

  Plain-text files are read up to `max_bytes + 1` bytes: a longer file is too long anyway,
  and a multi-GB log file is then never loaded whole.
  """
  files, text_mode = input_files(source)
  for path in files:
    yield from iter_file_documents(path, source, text_mode=text_mode, text_field=text_field,
                                   max_bytes=max_bytes)


def input_files(source: str | os.PathLike) -> tuple[list[Path], bool]:
  """(the files `iter_raw_documents` reads in order, whether they are read as plain text)."""
  source = Path(source)
  if not source.exists():
    raise CorpusError(f"corpus {source}: no such file or directory")
  if source.is_file():
    return [source], _data_kind(source) is None
  all_files = sorted(p for p in source.rglob("*")
                     if p.is_file() and not any(part.startswith(".")
                                                for part in p.relative_to(source).parts))
  data_files = [p for p in all_files if _data_kind(p) is not None]
  files, text_mode = (data_files, False) if data_files else (all_files, True)
  if not files:
    raise CorpusError(f"corpus directory {source} holds no files")
  return files, text_mode


def iter_file_documents(path: Path, source: str | os.PathLike, *, text_mode: bool,
                        text_field: str = "text",
                        max_bytes: int | None = None) -> Iterator[RawDocument]:
  """The items of one file of `input_files(source)`: a parallel reader's unit of work."""
  source = Path(source)
  if text_mode:
    key = str(path.relative_to(source)) if source.is_dir() else path.name
    with open(path, "rb") as f:
      data = f.read(-1 if max_bytes is None else max_bytes + 1)
    yield RawDocument(f"{path}", data, key=key)
  elif _data_kind(path) == "tf":
    raise CorpusError(f"{path}: TFDS tfrecord/array_record shards hold tf.train.Example "
                      "protos, which need TensorFlow to decode; re-export the dataset as "
                      "parquet (tfds file_format='parquet') or jsonl")
  elif _data_kind(path) == "jsonl":
    yield from _jsonl_documents(path, text_field)
  else:
    yield from _table_documents(path, text_field)


def corpus_files(source: str | os.PathLike) -> list[Path]:
  """The files `iter_raw_documents` reads, for input fingerprints."""
  source = Path(source)
  return [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
