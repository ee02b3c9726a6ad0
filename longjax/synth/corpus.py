"""The corpus document store: validation, dedup, skips with reasons, random access by id.

Documents come from `longjax.documents.iter_raw_documents` (every input format it reads) or
from any iterable of `RawDocument`s (the bundled default corpus, tests).

Malformed structure raises `longjax.documents.CorpusError` while reading. Bad *content* is
skipped and recorded with a reason: `not_utf8` (also a JSON escape of an unpaired surrogate,
"\\ud83d"), `too_long` (more than `max_chars` characters), `binary` (contains NUL), `empty`
(whitespace only), `duplicate` (exact text seen before), `duplicate_id`, `heldout` (text equal
to a held-out evaluation document); the rule is `Dedup`'s. `check_document` (per item) and
`StoreWriter` (in input order) are shared with the Beam ingest of `synth.pipeline`.

Store layout (`<dir>/`): `documents.jsonl` + `documents.offsets.npy` (records
`{"key", "title", "source", "text"}`, see `artifacts.RecordWriter`), `keys.json` (stable ids and
content hashes in row order) and `manifest.json`. Methods address documents by row number
(`doc_id`, int, aligned with embedding rows); `key(doc_id)` is the stable string id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from longjax import io
from longjax.documents import RawDocument, corpus_files, iter_raw_documents
from longjax.progress import Progress, silent
from longjax.synth import artifacts

STORE_DIRNAME = "corpus"
DEFAULT_MAX_CHARS = 1_000_000


@dataclasses.dataclass(frozen=True)
class Document:
  doc_id: int  # row in the store
  key: str  # stable id: given by the input, or the content hash
  text: str
  title: str | None
  source: str


def text_hash(text: str) -> str:
  """The document hash used for dedup and train/held-out disjointness (sha256, 128 bits)."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# ---------------------------------------------------------------------------------------------
# Building


def _validate(raw: RawDocument, max_chars: int) -> tuple[str | None, str, str]:
  """Returns (text or None, reason, detail) for one raw item."""
  data = raw.text
  if data is None:
    return None, "empty", "text is null"
  if isinstance(data, bytes):
    if len(data) > 4 * max_chars:  # cannot decode to <= max_chars characters; don't decode
      return None, "too_long", f"more than 4 * max_chars = {4 * max_chars} bytes"
    try:
      data = data.decode("utf-8")
    except UnicodeDecodeError as e:
      return None, "not_utf8", f"invalid UTF-8 at byte {e.start}"
  surrogate = _lone_surrogate(data, raw.title, raw.key)
  if surrogate:  # JSON escapes like "\ud83d" decode to text that UTF-8 cannot store
    return None, "not_utf8", surrogate
  if len(data) > max_chars:
    return None, "too_long", f"{len(data)} characters > max_chars ({max_chars})"
  if "\x00" in data:
    return None, "binary", f"contains NUL at character {data.index(chr(0))}"
  if not data.strip():
    return None, "empty", "whitespace only" if data else "zero length"
  return data, "", ""


def _lone_surrogate(*fields: str | None) -> str:
  """Where the first field that UTF-8 cannot encode (an unpaired surrogate) breaks, or ''."""
  for name, text in zip(("text", "title", "id"), fields):
    try:
      (text or "").encode("utf-8")
    except UnicodeEncodeError as e:
      return f"{name} has an unpaired surrogate at character {e.start}"
  return ""


@dataclasses.dataclass(frozen=True)
class Checked:
  """One raw item after the per-document checks: its text and hash, or why it is unusable."""
  text: str | None
  hash: str | None
  key: str | None  # the stable id it would be stored under (the input's, or the hash's prefix)
  reason: str = ""
  detail: str = ""


def check_document(raw: RawDocument, max_chars: int) -> Checked:
  """Validates and hashes one raw item; the per-document half of `build_store` (and of the
  Beam ingest, `synth.pipeline`)."""
  text, reason, detail = _validate(raw, max_chars)
  if text is None:
    return Checked(None, None, None, reason, detail)
  h = text_hash(text)
  return Checked(text, h, raw.key if raw.key is not None else h[:16])


class Dedup:
  """The duplicate rule, applied to items in input order: the first valid copy of a text wins
  (later copies are `duplicate`, a held-out text is `heldout`); among winners, the first use of
  an id wins (later ones are `duplicate_id`).

  Each decision depends only on earlier items with the same hash (or, for ids, the same key), so
  the rule can also run per group: `synth.pipeline` feeds each hash group, then each key group
  of the winners, to a fresh `Dedup` in input order and gets the same decisions.
  """

  def __init__(self, heldout_hashes: Iterable[str] = ()):
    self.heldout = set(heldout_hashes)
    self._first_key: dict[str, str] = {}
    self._keys: set[str] = set()

  def by_hash(self, h: str, key: str) -> tuple[str, str]:
    """(reason, detail) when this text was seen or is held out, else ('', '')."""
    if h in self._first_key:
      return "duplicate", f"same text as {self._first_key[h]!r}"
    if h in self.heldout:
      return "heldout", "text equals a held-out evaluation document"
    self._first_key[h] = key
    return "", ""

  def by_key(self, key: str) -> tuple[str, str]:
    """(reason, detail) when a winning text already holds this id, else ('', '')."""
    if key in self._keys:
      return "duplicate_id", f"id {key!r} already used by another document"
    self._keys.add(key)
    return "", ""


class StoreWriter:
  """Writes a store from items in input order, each kept or skipped with its reason.

  `counts.read == counts.kept + sum(counts.skipped.values())`: every item is accounted for.
  """

  def __init__(self, out_dir: str | os.PathLike, *, max_chars: int,
               config: Mapping[str, Any] | None, inputs: Mapping[str, Any] | None):
    if max_chars < 1:
      raise ValueError(f"max_chars ({max_chars}) must be >= 1")
    self.out_dir = io.begin_stage(out_dir)
    self._meta = {"max_chars": max_chars, **(config or {})}, dict(inputs or {})
    self.keys: list[str] = []
    self.hashes: list[str] = []
    self.skipped: list[dict[str, Any]] = []
    self.reasons: dict[str, int] = {}
    self.read = self.chars = 0
    self._records = artifacts.RecordWriter(self.out_dir / "documents")

  def add(self, raw: RawDocument, checked: Checked, reason: str = "", detail: str = "") -> None:
    """Records one item: skipped when `checked` or the dedup `reason` says so, else stored."""
    self.read += 1
    reason, detail = (checked.reason, checked.detail) if checked.reason else (reason, detail)
    if reason:
      self.reasons[reason] = self.reasons.get(reason, 0) + 1
      self.skipped.append({"source": raw.source, "key": raw.key, "reason": reason,
                           "detail": detail})
      return
    self.keys.append(checked.key)
    self.hashes.append(checked.hash)
    self.chars += len(checked.text)
    self._records.write({"key": checked.key, "title": raw.title, "source": raw.source,
                         "text": checked.text})

  def finish(self) -> "DocumentStore":
    self._records.close()
    io.write_json(self.out_dir / "keys.json", {"keys": self.keys, "hashes": self.hashes})
    counts = {"read": self.read, "kept": len(self.keys), "skipped": self.reasons,
              "chars": self.chars}
    config, inputs = self._meta
    io.write_manifest(self.out_dir, kind="corpus", config=config, inputs=inputs, counts=counts,
                      skipped=self.skipped)
    return DocumentStore(self.out_dir)

  def abort(self) -> None:
    self._records.abort()


def build_store(raw_documents: Iterable[RawDocument], out_dir: str | os.PathLike, *,
                max_chars: int = DEFAULT_MAX_CHARS, config: Mapping[str, Any] | None = None,
                inputs: Mapping[str, Any] | None = None,
                heldout_hashes: Iterable[str] = (),
                progress: Progress = silent) -> "DocumentStore":
  """Validates, deduplicates (`Dedup`) and writes documents into a store at `out_dir`.

  Every raw item ends up either as one stored document or as one entry of the manifest's
  `skipped` list, so `counts.read == counts.kept + sum(counts.skipped.values())`.
  """
  writer = StoreWriter(out_dir, max_chars=max_chars, config=config, inputs=inputs)
  dedup = Dedup(heldout_hashes)
  try:
    for raw in progress(raw_documents, desc="corpus", unit="doc"):
      checked = check_document(raw, max_chars)
      reason, detail = "", ""
      if checked.text is not None:
        reason, detail = dedup.by_hash(checked.hash, checked.key)
        if not reason:
          reason, detail = dedup.by_key(checked.key)
      writer.add(raw, checked, reason, detail)
  except BaseException:
    writer.abort()
    raise
  return writer.finish()


def ingest_config(source: str | os.PathLike, *, max_chars: int, text_field: str,
                  heldout_hashes: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
  """(config, inputs) of the store manifest that `ingest_corpus` (and the Beam ingest) write."""
  heldout = sorted(set(heldout_hashes))
  config = {"source": str(Path(source).resolve()), "text_field": text_field,
            "max_chars": max_chars, "heldout": io.fingerprint_json(heldout)}
  return config, {"files": io.fingerprint_files(corpus_files(source))}


def ingest_corpus(source: str | os.PathLike, out_dir: str | os.PathLike, *,
                  max_chars: int = DEFAULT_MAX_CHARS, text_field: str = "text",
                  heldout_hashes: Iterable[str] = (),
                  progress: Progress = silent) -> "DocumentStore":
  """Builds (or, when already built from the same input and options, reopens) a store."""
  heldout_hashes = set(heldout_hashes)
  config, inputs = ingest_config(source, max_chars=max_chars, text_field=text_field,
                                 heldout_hashes=heldout_hashes)
  if io.is_complete(out_dir, config=config, inputs=inputs):
    return DocumentStore(out_dir)
  raws = iter_raw_documents(source, text_field=text_field, max_bytes=4 * max_chars)
  return build_store(raws, out_dir,
                     max_chars=max_chars, config=config, inputs=inputs,
                     heldout_hashes=heldout_hashes, progress=progress)


# ---------------------------------------------------------------------------------------------
# Reading


class DocumentStore:
  """Random access to a built store. Implements `methods.base.DocStore`."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = Path(directory)
    self.manifest = io.read_manifest(self.directory)
    if self.manifest is None or self.manifest.get("kind") != "corpus":
      raise FileNotFoundError(f"{self.directory}: not a finished corpus store "
                              f"(no corpus manifest.json; run `python -m longjax.synth build`)")
    self._records = artifacts.RecordReader(self.directory / "documents")
    with open(self.directory / "keys.json", encoding="utf-8") as f:
      index = json.load(f)
    self._keys: list[str] = index["keys"]
    self.hashes: list[str] = index["hashes"]
    self._row: dict[str, int] | None = None

  def __len__(self) -> int:
    return len(self._keys)

  def doc_ids(self) -> np.ndarray:
    return np.arange(len(self), dtype=np.int64)

  def key(self, doc_id: int) -> str:
    return self._keys[int(doc_id)]

  def index_of(self, key: str) -> int:
    """The row (`doc_id`) of the document with stable id `key`."""
    if self._row is None:
      self._row = {k: i for i, k in enumerate(self._keys)}
    if key not in self._row:
      raise KeyError(f"no document with id {key!r} in {self.directory}")
    return self._row[key]

  def text(self, doc_id: int) -> str:
    return self._records[int(doc_id)]["text"]

  def texts(self, doc_ids: Sequence[int]) -> list[str]:
    return [self.text(i) for i in doc_ids]

  def document(self, doc_id: int) -> Document:
    r = self._records[int(doc_id)]
    return Document(int(doc_id), r["key"], r["text"], r["title"], r["source"])

  def get(self, key: str) -> Document:
    return self.document(self.index_of(key))

  def __iter__(self) -> Iterator[Document]:
    for i, r in enumerate(self._records):
      yield Document(i, r["key"], r["text"], r["title"], r["source"])

  def assert_disjoint(self, hashes: Iterable[str], what: str = "held-out documents") -> None:
    """Raises if any stored document's hash is in `hashes` (train/eval separation)."""
    overlap = set(self.hashes).intersection(hashes)
    if overlap:
      rows = sorted(self.hashes.index(h) for h in overlap)[:5]
      raise AssertionError(f"{len(overlap)} documents of {self.directory} are also "
                           f"{what}, e.g. ids {[self._keys[r] for r in rows]}")


def open_store(index_dir: str | os.PathLike) -> DocumentStore:
  """The corpus store that `python -m longjax.synth build` wrote under `index_dir`."""
  return DocumentStore(Path(index_dir) / STORE_DIRNAME)
