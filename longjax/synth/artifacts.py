"""What synthesis writes and reads beyond `longjax.io`: record files and the built-method check.

Atomic files, manifests, fingerprints and versions are `longjax.io`'s (the bottom layer that
every writer imports directly); this module holds only what is synthesis's own:

- `require_built`: the one check a method's `examples` makes before reading its build output.
- Record files (`RecordWriter` / `RecordReader`), the random-access format of the document and
  chunk stores: one JSON object per line in `<name>.jsonl`, plus `<name>.offsets.npy` (int64
  [n + 1] byte offsets). We chose this over ArrayRecord because it is plain text a person can
  `head`, needs no extra reader, and `np.load(mmap_mode="r")` + one `seek` gives O(1) access.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from longjax.io import atomic_path, json_default, read_manifest, write_npy


def require_built(directory: str | os.PathLike, *, method: str) -> dict[str, Any]:
  """The manifest of `method`'s finished build in `directory`; else an error saying how to
  build it (the one check a method's `examples` makes before reading its index)."""
  manifest = read_manifest(directory)
  if manifest is None or not manifest.get("complete"):
    raise FileNotFoundError(f"{directory}: no finished build of method {method!r} (no "
                            f"manifest.json); run `python -m longjax.synth build --methods "
                            f"{method}` first")
  return manifest


class RecordWriter:
  """Appends JSON records to `<path>.jsonl` and their offsets to `<path>.offsets.npy`.

  Both files appear under their real names only at `close()` (atomic rename), so a crashed
  writer never leaves a store that looks complete. Use as a context manager.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self._commit = contextlib.ExitStack()
    self._file = open(self._commit.enter_context(atomic_path(f"{self.path}.jsonl")), "wb")
    self._offsets = [0]

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def write(self, record: Mapping[str, Any]) -> int:
    """Appends one record and returns its row number."""
    line = json.dumps(record, ensure_ascii=False, default=json_default).encode("utf-8") + b"\n"
    self._file.write(line)
    self._offsets.append(self._offsets[-1] + len(line))
    return len(self._offsets) - 2

  def close(self) -> None:
    self._file.close()
    write_npy(f"{self.path}.offsets.npy", np.asarray(self._offsets, np.int64))
    self._commit.close()  # the .jsonl moves onto its name

  def abort(self) -> None:
    self._file.close()
    self._commit.__exit__(RuntimeError, RuntimeError("aborted"), None)  # the .jsonl is removed

  def __enter__(self) -> "RecordWriter":
    return self

  def __exit__(self, exc_type, *_) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


class RecordReader:
  """Random access to the records a `RecordWriter` wrote: `reader[i] -> dict`."""

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    data, offsets = Path(f"{self.path}.jsonl"), Path(f"{self.path}.offsets.npy")
    if not data.exists() or not offsets.exists():
      raise FileNotFoundError(f"record file {data} (with {offsets.name}) not found")
    self._offsets = np.load(offsets, mmap_mode="r")
    self._file = open(data, "rb")

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def raw(self, i: int) -> bytes:
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} out of range [0, {len(self)}) in {self.path}.jsonl")
    start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
    return os.pread(self._file.fileno(), stop - start, start)  # no shared seek: thread-safe

  def __getitem__(self, i: int) -> dict[str, Any]:
    return json.loads(self.raw(int(i)))

  def __iter__(self) -> Iterator[dict[str, Any]]:
    with open(f"{self.path}.jsonl", "rb") as f:
      for line in f:
        yield json.loads(line)

  def close(self) -> None:
    self._file.close()
