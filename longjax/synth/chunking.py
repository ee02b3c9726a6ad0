"""NExtLong meta-chunking (specs/nextlong.md §2) and the chunk store built from it.

`meta_chunks` reproduces `group_segments` of the NExtLong release exactly: split on every "\n",
group segments while the *sum of segment lengths* (characters; joining newlines not counted)
stays <= size, never split a segment. The chunk store then drops blank chunks (our pipeline's
choice, §2) and numbers the rest: one index entry `(chunk_id, doc_id, j, text)` per non-blank
chunk, where `chunk_id` is the row (aligned with chunk embeddings) and `j` counts the
document's non-blank chunks from 0.

Store layout (`<index_dir>/chunks/<size>/`): `chunks.jsonl` + offsets (records
`{"chunk_id", "doc_id", "j", "text"}`), `doc_of_chunk.npy` (int64 [N]),
`doc_chunk_offsets.npy` (int64 [num_docs + 1]: document d owns chunk ids
`offsets[d]:offsets[d+1]`) and `manifest.json`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from longjax import io
from longjax.progress import Progress, silent
from longjax.synth import artifacts
from longjax.synth.corpus import DocumentStore

CHUNK_CHARS = 2048


def meta_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
  """Splits `text` into NExtLong meta-chunks of about `size` characters (exact §2 semantics).

  Blank chunks are kept here; `"".join` properties and edge cases are in the spec.
  """
  if size < 1:
    raise ValueError(f"chunk size ({size}) must be >= 1 character")
  chunks: list[str] = []
  group: list[str] = []
  length = 0
  for segment in text.split("\n"):
    if length + len(segment) > size:
      if length > 0:
        chunks.append("\n".join(group))
      group, length = [segment], len(segment)
    else:
      group.append(segment)
      length += len(segment)
  if group:
    chunks.append("\n".join(group))
  return chunks


@dataclasses.dataclass(frozen=True)
class Chunk:
  chunk_id: int
  doc_id: int
  j: int  # index among the document's non-blank chunks
  text: str


def store_fingerprint(store: DocumentStore) -> str:
  """Identifies a store's content (its ordered document hashes) for downstream manifests."""
  return io.fingerprint_json(store.hashes)


def chunk_dir(index_dir: str | os.PathLike, size: int = CHUNK_CHARS) -> Path:
  return Path(index_dir) / "chunks" / str(size)


def document_chunks(text: str, size: int = CHUNK_CHARS) -> tuple[list[str], int]:
  """(the non-blank meta-chunks of one document, how many blank ones were dropped)."""
  all_chunks = meta_chunks(text, size)
  kept = [c for c in all_chunks if c.strip()]
  return kept, len(all_chunks) - len(kept)


def chunk_config(store: DocumentStore, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """(config, inputs) of a chunk store's manifest (shared with the Beam build)."""
  return {"size": size, "drop_blank": True}, {"store": store_fingerprint(store)}


def build_chunk_store(store: DocumentStore, out_dir: str | os.PathLike, *,
                      size: int = CHUNK_CHARS,
                      progress: Progress = silent
                      ) -> "ChunkStore":
  """Chunks every document of `store` (or reopens an identical finished chunk store)."""
  config, inputs = chunk_config(store, size)
  if io.is_complete(out_dir, config=config, inputs=inputs):
    return ChunkStore(out_dir)
  docs = progress(store, desc="chunking", total=len(store), unit="doc")
  return write_chunk_store(((d.doc_id, d.key, *document_chunks(d.text, size)) for d in docs),
                           out_dir, store=store, size=size)


def write_chunk_store(per_document: Iterable[tuple[int, str, list[str], int]],
                      out_dir: str | os.PathLike, *, store: DocumentStore,
                      size: int) -> "ChunkStore":
  """Writes the chunk store from `(doc_id, key, non-blank chunks, blank count)` in doc order."""
  out_dir = io.begin_stage(out_dir)
  config, inputs = chunk_config(store, size)
  doc_of_chunk: list[int] = []
  offsets = [0]
  blank = 0
  skipped = []
  with artifacts.RecordWriter(out_dir / "chunks") as writer:
    for doc_id, key, kept, dropped in per_document:
      if doc_id != len(offsets) - 1:
        raise ValueError(f"{out_dir}: chunks of document {doc_id} arrived at row "
                         f"{len(offsets) - 1}; documents must come in store order")
      blank += dropped
      if not kept:
        skipped.append({"doc_id": doc_id, "key": key, "reason": "no_nonblank_chunk"})
      for j, text in enumerate(kept):
        writer.write({"chunk_id": len(doc_of_chunk), "doc_id": doc_id, "j": j, "text": text})
        doc_of_chunk.append(doc_id)
      offsets.append(len(doc_of_chunk))
  if len(offsets) - 1 != len(store):
    raise ValueError(f"{out_dir}: chunked {len(offsets) - 1} of the store's {len(store)} "
                     "documents")
  io.write_npy(out_dir / "doc_of_chunk.npy", np.asarray(doc_of_chunk, np.int64))
  io.write_npy(out_dir / "doc_chunk_offsets.npy", np.asarray(offsets, np.int64))
  per_doc = np.diff(offsets)
  counts = {"documents": len(store), "chunks": len(doc_of_chunk), "blank_dropped": blank,
            "chunks_per_doc_mean": float(per_doc.mean()) if len(per_doc) else 0.0,
            "chunks_per_doc_max": int(per_doc.max()) if len(per_doc) else 0}
  io.write_manifest(out_dir, kind="chunks", config=config, inputs=inputs, counts=counts,
                    skipped=skipped)
  return ChunkStore(out_dir)


class ChunkStore:
  """Random access to NExtLong index entries by `chunk_id`, and a document's chunk range."""

  def __init__(self, directory: str | os.PathLike):
    self.directory = Path(directory)
    self.manifest = io.read_manifest(self.directory)
    if self.manifest is None or self.manifest.get("kind") != "chunks":
      raise FileNotFoundError(f"{self.directory}: not a finished chunk store")
    self.size: int = self.manifest["config"]["size"]
    self._records = artifacts.RecordReader(self.directory / "chunks")
    self.doc_of_chunk: np.ndarray = np.load(self.directory / "doc_of_chunk.npy")
    self.doc_chunk_offsets: np.ndarray = np.load(self.directory / "doc_chunk_offsets.npy")

  def __len__(self) -> int:
    return len(self.doc_of_chunk)

  def chunk(self, chunk_id: int) -> Chunk:
    r = self._records[int(chunk_id)]
    return Chunk(r["chunk_id"], r["doc_id"], r["j"], r["text"])

  def text(self, chunk_id: int) -> str:
    return self._records[int(chunk_id)]["text"]

  def chunks_of(self, doc_id: int) -> range:
    """The chunk ids of document `doc_id`, in order (j = 0, 1, ...)."""
    return range(int(self.doc_chunk_offsets[doc_id]), int(self.doc_chunk_offsets[doc_id + 1]))

  def __iter__(self):
    for r in self._records:
      yield Chunk(r["chunk_id"], r["doc_id"], r["j"], r["text"])


def open_chunk_store(index_dir: str | os.PathLike, size: int = CHUNK_CHARS) -> ChunkStore:
  """The chunk store `build` wrote under `index_dir` for chunk size `size`."""
  return ChunkStore(chunk_dir(index_dir, size))
