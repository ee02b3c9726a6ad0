"""The bottom layer for files: atomic writes, manifests, fingerprints and length names.

Every layer above (synth, models, train, eval, tasks) writes through this module, so there is
one mechanism for each of these jobs:

Atomicity: a file or directory is written under a temporary sibling name (`.tmp-*`) and moved
onto its final name in one step. A new file replaces an old one with `os.replace` (atomic on
POSIX). A new directory replaces an old one by an exchange of the two names (Linux
`renameat2(RENAME_EXCHANGE)`), so a crash at any point leaves either the old or the new
directory under the real name, complete; then the old one is removed. Where the OS cannot
exchange, two renames are used and, for the instant between them, the old directory survives
under `.old-*`. A crash leaves only `.tmp-*` / `.old-*` litter, never a half-written file or
directory under a real name.

Manifests: every directory a command writes ends with a `manifest.json` (config, versions,
input fingerprints, counts, skips), written last, so its presence (with `"complete": true`)
marks the work as finished; `is_complete` compares config and inputs so an interrupted or
changed run redoes the work instead of trusting half-written files.

Length names: '8k' <-> 8192, used by task names, synthesis, eval and experiments.

Paths with a scheme (gs://...) are written with etils.epath: an object store makes a whole
object visible at once, which is the atomicity a single file needs there.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
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
_VERSIONED = ("numpy", "jax", "flax", "optax", "orbax-checkpoint", "scann", "transformers",
              "tokenizers", "pyarrow")
_LENGTH_SUFFIX = {"k": 1024, "m": 1024 ** 2}

# ---------------------------------------------------------------------------------------------
# Atomic files and directories.

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
  """Swaps the names `a` and `b` in one step (Linux renameat2); False where unsupported."""
  renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
  if renameat2 is None:
    return False
  renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                        ctypes.c_uint)
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # e.g. a filesystem without it
    return False
  raise OSError(err, os.strerror(err), str(a), str(b))


def _commit(tmp: Path, path: Path) -> None:
  """Moves the finished `tmp` onto `path`; an old directory at `path` ends up at `tmp`."""
  if not (tmp.is_dir() and path.is_dir()):
    os.replace(tmp, path)
  elif not _exchange(tmp, path):
    old = path.with_name(f".old-{uuid.uuid4().hex[:8]}-{path.name}")
    os.replace(path, old)
    os.replace(tmp, path)
    os.replace(old, tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary sibling of `path` (not created); on success moves it onto `path`.

  For files and for directories (the caller creates the directory and fills it). An existing
  directory at `path` is replaced as the module docstring says. On an exception the temporary
  is removed and `path` is left untouched.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}-{path.name}")
  try:
    yield tmp
    _commit(tmp, path)
  finally:
    if tmp.is_dir():
      shutil.rmtree(tmp, ignore_errors=True)
    elif tmp.exists():
      tmp.unlink()


def _remote(path: Any) -> bool:
  return "://" in str(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
  """Writes `data` to `path` atomically (local), or as one object (gs://...)."""
  if _remote(path):
    from etils import epath  # pylint: disable=import-outside-toplevel
    epath.Path(path).write_bytes(data)
    return epath.Path(path)
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)
  return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
  return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.save(f, np.asarray(array))
  return Path(path)


def json_default(obj: Any) -> Any:
  """The `default=` of `json.dumps` for numpy scalars and arrays and paths."""
  if isinstance(obj, (np.integer, np.floating)):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, os.PathLike):
    return os.fspath(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any) -> Any:
  """`obj` as plain JSON values (numpy scalars/arrays and paths converted)."""
  return json.loads(json.dumps(obj, default=json_default))


# ---------------------------------------------------------------------------------------------
# Versions and fingerprints.


def versions() -> dict[str, str]:
  """Versions of Python, the numeric packages and the longjax git commit (when in a checkout)."""
  out = {"python": platform.python_version()}
  for name in _VERSIONED:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    repo = Path(__file__).resolve().parents[1]
    out["longjax_commit"] = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
        timeout=5, check=True).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    pass
  return out


def file_sha256(path: str | os.PathLike) -> str:
  """sha256 of a file's content, read in 16 MiB pieces (about 1 s per GB)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while piece := f.read(1 << 24):
      h.update(piece)
  return h.hexdigest()


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
  data = json.dumps(obj, sort_keys=True, default=json_default).encode()
  return hashlib.sha256(data).hexdigest()


def fingerprint_array(array: np.ndarray) -> str:
  """sha256 of an array's shape, dtype and bytes (about 1 s per GB)."""
  a = np.ascontiguousarray(array)
  h = hashlib.sha256(f"{a.shape}{a.dtype}".encode())
  h.update(memoryview(a).cast("B"))
  return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Manifests.


def write_manifest(directory: str | os.PathLike, *, kind: str, config: Mapping[str, Any],
                   inputs: Mapping[str, Any], counts: Mapping[str, Any],
                   skipped: Sequence[Mapping[str, Any]] = (),
                   extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Writes `<directory>/manifest.json`, marking the work complete. Call it last.

  Args:
    kind: what the directory holds ("corpus", "chunks", "index", a method name, "train"...).
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
  write_json(f"{str(directory).rstrip('/')}/{MANIFEST}", manifest)
  return manifest


def begin_stage(directory: str | os.PathLike) -> Path:
  """Creates `directory` and removes its manifest, so work being redone never looks finished.

  Without this, a rebuild that crashes after replacing some files of an earlier build would
  leave those files under the earlier build's manifest. Temporaries a killed run left anywhere
  under `directory` (`.tmp-*`, `.old-*` of `atomic_path`) are removed too.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / MANIFEST).unlink(missing_ok=True)
  for litter in sorted(directory.rglob(".tmp-*")) + sorted(directory.rglob(".old-*")):
    if litter.is_dir() and not litter.is_symlink():
      shutil.rmtree(litter, ignore_errors=True)
    else:
      litter.unlink(missing_ok=True)
  return directory


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
  """The manifest of `directory`, or None when the work never finished there."""
  path = Path(directory) / MANIFEST
  if not path.exists():
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def is_complete(directory: str | os.PathLike, *, config: Mapping[str, Any],
                inputs: Mapping[str, Any]) -> bool:
  """True when `directory` holds finished work built from the same config and inputs."""
  m = read_manifest(directory)
  if m is None or not m.get("complete"):
    return False
  canon = lambda x: to_json(dict(x))
  return canon(m["config"]) == canon(config) and canon(m["inputs"]) == canon(inputs)


# ---------------------------------------------------------------------------------------------
# Length names.


def parse_length(text: str | int) -> int:
  """'8k' -> 8192, '1m' -> 1048576, '4096' -> 4096 (task names use the short form)."""
  if isinstance(text, int):
    return text
  t = text.strip().lower()
  try:
    return int(t[:-1]) * _LENGTH_SUFFIX[t[-1]] if t and t[-1] in _LENGTH_SUFFIX else int(t)
  except ValueError:
    raise ValueError(f"length {text!r}: expected an integer with optional k/m suffix, like 8k")


def format_length(n: int) -> str:
  """8192 -> '8k', 1048576 -> '1m', 1000 -> '1000'; inverse of `parse_length`."""
  for suffix, unit in (("m", 1024 ** 2), ("k", 1024)):
    if n % unit == 0:
      return f"{n // unit}{suffix}"
  return str(n)
