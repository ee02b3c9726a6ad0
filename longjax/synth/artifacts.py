"""The one place that writes synthesis artifacts: atomic files, manifests, record files.

Every directory a synthesis stage writes ends with a `manifest.json` (config, versions, input
fingerprints, counts, skips). The manifest is written last, so its presence (with
`"complete": true`) marks the stage as finished; `is_complete` compares config and inputs so an
interrupted or changed run redoes the stage instead of trusting half-written files.

Atomicity: every file goes to a temporary name in the same directory and is `os.replace`d onto
its final name, which POSIX makes atomic. A crash leaves only `.tmp-*` litter, never a
truncated file under a real name.

Record files (`RecordWriter` / `RecordReader`) are the random-access format of the document
and chunk stores: one JSON object per line in `<name>.jsonl`, plus `<name>.offsets.npy`
(int64 [n + 1] byte offsets). We chose this over ArrayRecord because it is plain text a person
can `head`, needs no extra reader, and `np.load(mmap_mode="r")` + one `seek` gives O(1) access.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

MANIFEST = "manifest.json"
_VERSIONED = ("numpy", "jax", "flax", "scann", "transformers", "tokenizers", "pyarrow")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary sibling of `path`; on success moves it onto `path` atomically.

  Works for files and for directories (an existing directory at `path` is replaced). On an
  exception the temporary is removed and `path` is left untouched.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
  try:
    yield tmp
    if tmp.is_dir() and path.is_dir():
      old = path.with_name(f".old-{uuid.uuid4().hex[:8]}-{path.name}")
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  finally:
    if tmp.is_dir():
      shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
      tmp.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)
  return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
  return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(array))
  return Path(path)


def _json_default(obj: Any) -> Any:
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, Path):
    return str(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def versions() -> dict[str, str]:
  """Versions of Python, the numeric packages and the longjax git commit (when in a checkout)."""
  out = {"python": platform.python_version()}
  for name in _VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    repo = Path(__file__).resolve().parents[2]
    out["longjax_commit"] = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
        timeout=5, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    pass
  return out


def fingerprint_files(paths: Iterable[str | os.PathLike]) -> str:
  """A cheap fingerprint of input files: sha256 over (path, size, mtime_ns) of each file.

  Content is not read (corpora can be terabytes); touching or editing a file changes it.
  """
  h = hashlib.sha256()
  for p in sorted(str(Path(p).resolve()) for p in paths):
    st = os.stat(p)
    h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def fingerprint_json(obj: Any) -> str:
  """sha256 of the canonical JSON form of `obj` (config dicts, id lists)."""
  data = json.dumps(obj, sort_keys=True, default=_json_default).encode()
  return hashlib.sha256(data).hexdigest()


def fingerprint_array(array: np.ndarray) -> str:
  """sha256 of an array's shape, dtype and bytes (about 1 s per GB)."""
  a = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
  h.update(memoryview(a).cast("B"))
  return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 of a file's content, read in 16 MiB pieces (about 1 s per GB)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while piece := f.read(1 << 24):
      h.update(piece)
  return h.hexdigest()


def write_manifest(directory: str | os.PathLike, *, kind: str, config: Mapping[str, Any],
                   inputs: Mapping[str, Any], counts: Mapping[str, Any],
                   skipped: Sequence[Mapping[str, Any]] = (),
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes `<directory>/manifest.json`, marking the stage complete. Call it last.

  Args:
    kind: what the directory holds ("corpus", "chunks", "embeddings", "index", a method name).
    config: the options that determine the output (compared by `is_complete`).
    inputs: fingerprints of what was read (compared by `is_complete`).
    counts: numbers a person checks (documents read/kept, vectors, recall...).
    skipped: one entry per skipped input item, each with at least a `reason`.
    extra: anything else worth recording.
  """
  manifest = {
      "kind": kind,
      "complete": True,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "config": dict(config),
      "inputs": dict(inputs),
      "counts": dict(counts),
      "skipped": list(skipped),
      "versions": versions(),
  }
  if extra:
    manifest.update(extra)
  write_json(Path(directory) / MANIFEST, manifest)
  return manifest


def begin_stage(directory: str | os.PathLike) -> Path:
  """Creates `directory` and removes its manifest, so a stage being rebuilt never looks finished.

  Without this, a rebuild that crashes after replacing some files of an earlier build would
  leave those files under the earlier build's manifest.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / MANIFEST).unlink(missing_ok=True)
  return directory


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
  """The manifest of `directory`, or None when the stage never finished there."""
  path = Path(directory) / MANIFEST
  if not path.exists():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def is_complete(directory: str | os.PathLike, *, config: Mapping[str, Any],
                inputs: Mapping[str, Any]) -> bool:
  """True when `directory` holds a finished stage built from the same config and inputs."""
  m = read_manifest(directory)
  if m is None or not m.get("complete"):
    return False
  canon = lambda x: json.loads(json.dumps(dict(x), sort_keys=True, default=_json_default))
  return canon(m["config"]) == canon(config) and canon(m["inputs"]) == canon(inputs)


class RecordWriter:
  """Appends JSON records to `<path>.jsonl` and their offsets to `<path>.offsets.npy`.

  Both files appear under their real names only at `close()` (atomic rename), so a crashed
  writer never leaves a store that looks complete. Use as a context manager.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._tmp = self.path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{self.path.name}.jsonl")
    self._file = open(self._tmp, "wb")
    self._offsets = [0]

  def __len__(self) -> int:
    return len(self._offsets) - 1

  def write(self, record: Mapping[str, Any]) -> int:
    """Appends one record and returns its row number."""
    line = json.dumps(record, ensure_ascii=False, default=_json_default).encode("utf-8") + b"\n"
    self._file.write(line)
    self._offsets.append(self._offsets[-1] + len(line))
    return len(self._offsets) - 2

  def close(self) -> None:
    self._file.close()
    write_npy(f"{self.path}.offsets.npy", np.asarray(self._offsets, np.int64))
    os.replace(self._tmp, f"{self.path}.jsonl")

  def abort(self) -> None:
    self._file.close()
    self._tmp.unlink(missing_ok=True)

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
