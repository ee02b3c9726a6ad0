"""Embedding on another machine: word-piece ids out, a table of vectors back.

A CPU machine embeds MiniLM at ~20 texts/s, so a corpus of 200K documents and chunks is a
three-hour job there and a minute on one GPU. The three steps:

    python -m longjax.synth embed-inputs --index-dir IDX --embedder minilm --out T
        (CPU: the exact word-piece ids of every document and NExtLong chunk, keyed by text)
    python -m longjax.synth embed-table T --embedder minilm [--model-path DIR]
        (accelerator: vectors for those ids, float16, in shards small enough to copy back)
    python -m longjax.synth build ... --embedder minilm --embedding-table T
        (CPU: the build reads the vectors from the table instead of computing them)

The table answers by text (an 8-byte blake2b key), so the build, `embed_corpus` and the index
layout are those of a local run. Its vectors are the local run's up to the float16 rounding
(relative error ~5e-4 per component; rows are renormalised); the table's manifest says so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from longjax import io
from longjax.progress import Progress, silent

INPUTS = "inputs.npz"
SHARD_BYTES = 15 << 20  # one file the device tool can bring back (16 MiB each)


def text_key(text: str) -> int:
  """The 64-bit key of a text (blake2b, the same in every process)."""
  return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def write_inputs(texts: Iterable[str], embedder, out_dir: str | Path, *, batch: int = 4096,
                 progress: Progress = silent) -> dict:
  """Writes `<out_dir>/inputs.npz` (keys uint64, ids uint16 flat, offsets) for the distinct
  `texts`, tokenized exactly as `embedder` (a `MiniLMEmbedder`) reads them."""
  encoder = embedder.encoder
  if encoder.tokenizer.get_vocab_size() > 1 << 16:  # before any work
    raise ValueError(f"embedder {embedder.name}: vocabulary too large for uint16 ids")
  keys, seen, ids, lengths = [], set(), [], []
  pending: list[str] = []

  def flush() -> None:
    for row in encoder.token_ids(pending):
      ids.append(np.asarray(row, np.uint16))
      lengths.append(len(row))
    pending.clear()

  for text in progress(texts, desc="word pieces", unit="text"):
    key = text_key(text)
    if key in seen:
      continue
    seen.add(key)
    keys.append(key)
    pending.append(text)
    if len(pending) == batch:
      flush()
  flush()
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  with io.atomic_path(out_dir / INPUTS) as tmp:
    with open(tmp, "wb") as f:
      np.savez_compressed(f, keys=np.asarray(keys, np.uint64), offsets=offsets,
                          ids=np.concatenate(ids) if ids else np.zeros(0, np.uint16))
  counts = {"texts": len(keys), "word_pieces": int(offsets[-1])}
  io.write_manifest(out_dir, kind="embedding_inputs",
                    config={"embedder": embedder.name, "max_length": encoder.max_length},
                    inputs={INPUTS: io.file_sha256(out_dir / INPUTS)}, counts=counts)
  return counts


def compute_table(table_dir: str | Path, embedder, *, batch: int = 16384,
                  progress: Progress = silent) -> dict:
  """Embeds `inputs.npz` into float16 shards `vectors-NNNNN.npy` (rows in input order) with
  `embedder` (a `MiniLMEmbedder`, the one the inputs were made for)."""
  encoder = embedder.encoder
  table_dir = Path(table_dir)
  wanted = _read_manifest(table_dir, "embedding_inputs", "embedding_table")
  if wanted["config"]["embedder"] != embedder.name:
    raise ValueError(f"{table_dir}: inputs were made for embedder "
                     f"{wanted['config']['embedder']!r}, not {embedder.name!r}")
  data = np.load(table_dir / INPUTS)
  offsets, flat = data["offsets"], data["ids"]
  n = len(offsets) - 1
  rows = max(1, SHARD_BYTES // (2 * encoder.dim))
  shards = {}
  for s, start in enumerate(progress(range(0, n, rows), desc="embed shards", unit="shard")):
    stop = min(start + rows, n)
    parts = [encoder.encode_ids([flat[offsets[i]:offsets[i + 1]].tolist()
                                 for i in range(b, min(b + batch, stop))])
             for b in range(start, stop, batch)]
    name = f"vectors-{s:05d}.npy"
    io.write_npy(table_dir / name, np.concatenate(parts).astype(np.float16))
    shards[name] = io.file_sha256(table_dir / name)
  io.write_manifest(table_dir, kind="embedding_table",
                    config={"embedder": embedder.name, "dim": encoder.dim, "dtype": "float16",
                            "rows_per_shard": rows},
                    inputs={INPUTS: wanted["inputs"][INPUTS], "shards": shards},
                    counts={"texts": n})
  return {"texts": n, "shards": len(shards)}


class TableEmbedder:
  """An `Embedder` that answers from a computed table; its `name` is the real embedder's, so
  every fingerprint downstream is a local run's."""

  def __init__(self, table_dir: str | Path, *, name: str, dim: int):
    table_dir = Path(table_dir)
    manifest = _read_manifest(table_dir, "embedding_table")
    if manifest["config"]["embedder"] != name or manifest["config"]["dim"] != dim:
      raise ValueError(f"{table_dir}: the table holds {manifest['config']['embedder']} "
                       f"({manifest['config']['dim']}-d) vectors, not {name} ({dim}-d)")
    for shard, sha in manifest["inputs"]["shards"].items():
      if not (table_dir / shard).is_file() or io.file_sha256(table_dir / shard) != sha:
        raise ValueError(f"{table_dir / shard}: missing or not the file the table's manifest "
                         "names (sha256 differs); copy it again")
    keys = np.load(table_dir / INPUTS)["keys"]
    vectors = np.concatenate([np.load(table_dir / s) for s in sorted(manifest["inputs"]["shards"])])
    if len(vectors) != len(keys):
      raise ValueError(f"{table_dir}: {len(vectors)} vectors for {len(keys)} texts")
    order = np.argsort(keys)
    self._keys, self._vectors = keys[order], vectors[order]
    self.name, self.dim, self.directory = name, dim, table_dir

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    keys = np.asarray([text_key(t) for t in texts], np.uint64)
    pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
    missing = np.flatnonzero(self._keys[pos] != keys) if len(keys) else []
    if len(missing):
      raise ValueError(f"{len(missing)} of {len(texts)} texts are not in the embedding table "
                       f"{self.directory} (first: {texts[missing[0]][:60]!r}...); it was made "
                       "for another corpus or chunking: run embed-inputs and embed-table again")
    v = self._vectors[pos].astype(np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def index_texts(index_dir: str | Path, chunk_sizes: Sequence[int],
                progress: Progress = silent) -> Iterable[str]:
  """Every text a build over `index_dir` embeds: its documents, then the chunks of each size
  (the chunk stores are built here if absent, as NExtLong's build would)."""
  from longjax.synth import chunking, corpus  # pylint: disable=import-outside-toplevel
  store = corpus.open_store(index_dir)
  for doc_id in store.doc_ids():
    yield store.text(int(doc_id))
  for size in chunk_sizes:
    chunks = chunking.build_chunk_store(store, chunking.chunk_dir(index_dir, size), size=size,
                                        progress=progress)
    for i in range(len(chunks)):
      yield chunks.text(i)


def _read_manifest(table_dir: Path, *kinds: str) -> dict:
  manifest = io.read_manifest(table_dir)
  if not manifest or manifest.get("kind") not in kinds:
    step = "embed-table" if kinds == ("embedding_table",) else "embed-inputs"
    raise ValueError(f"{table_dir}: no {' or '.join(kinds)} manifest (expected the output of "
                     f"`python -m longjax.synth {step}`)")
  return manifest
