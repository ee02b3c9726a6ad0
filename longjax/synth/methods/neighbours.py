"""Where the methods get their embeddings, ScaNN indexes and neighbour lists.

A thin layer over `synth.embed` (resumable corpus embedding) and `synth.retrieval` (ScaNN build,
load, search, neighbour lists) that fixes one layout under the index directory, so KNN and ICLM
share the document index and NExtLong's build and streaming agree on the chunk index:

    <index_dir>/embeddings/<name>/vectors.npy   embed_corpus output (+ manifest)
    <index_dir>/index/<name>/                   ScaNN index in `ctx.shards` shards (+ manifest
                                                with recall@10)
    <index_dir>/neighbours/<name>-k<K>/         precomputed top-K lists (self included)

`<name>` is `docs` for documents and `chunks-<size>` for NExtLong chunks. Every stage reuses a
finished identical artifact, so KNN and ICLM embed the corpus once between them, and the
methods find finished what the Beam build computed before them (synth/pipeline/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from longjax import io
from longjax.synth import chunking, embed, retrieval
from longjax.synth.methods.base import BuildContext


def embed_and_index(ctx: BuildContext, name: str, source: Any,
                    inputs: dict[str, Any]) -> tuple[np.ndarray, retrieval.Index]:
  """Embeds `source` (len + text(i)) with `ctx.embedder` and builds its ScaNN index."""
  if ctx.embedder is None:
    raise ValueError(f"building {name!r} neighbours needs an embedder; pass one explicitly "
                     f"(e.g. `--embedder minilm`; `hashing` is for tests only)")
  vectors = embed.embed_corpus(source, ctx.embedder, ctx.index_dir / "embeddings" / name,
                               inputs=inputs, progress=ctx.progress)
  if ctx.shards > len(vectors):
    raise ValueError(f"--shards ({ctx.shards}) must be at most the {len(vectors)} vectors of "
                     f"{name!r}: every index shard needs at least one")
  index = retrieval.build_index(vectors, out_dir=ctx.index_dir / "index" / name,
                                inputs={"embeddings": inputs, "embedder": ctx.embedder.name},
                                log=ctx.log, shards=ctx.shards)
  return vectors, index


def list_name(name: str, k: int) -> str:
  """The name of collection `name`'s top-k lists (their folder under `neighbours/`)."""
  return f"{name}-k{k}"


def lists_dir(index_dir: Path, name: str, k: int) -> Path:
  """Where the top-k lists of collection `name` live (the methods' builds and the Beam build
  write and read the same place)."""
  return Path(index_dir) / "neighbours" / list_name(name, k)


def lists_read(method: str, config: dict[str, Any]) -> list[str]:
  """The names of the neighbour lists that `method`'s build read, from the `config` of its
  manifest: KNN's and ICLM's document lists, NExtLong's chunk lists when it precomputes them
  (else it searches live and reads none). What an export of the method depends on, whatever
  other methods' lists the index also holds."""
  if method in ("knn", "iclm"):
    return [list_name(*document_lists(config["k_nn"]))]
  if method == "nextlong" and config.get("precompute_k"):
    return [list_name(f"chunks-{config['chunk_size']}", config["precompute_k"])]
  return []


def document_lists(k: int) -> tuple[str, int]:
  """(collection, k) of the lists `document_neighbours(ctx, k)` reads: self included, k + 1."""
  return "docs", k + 1


def drop_self(ids: np.ndarray, k: int) -> np.ndarray:
  """Rows of `ids` (row i = neighbours of item i) without i, cut to k; -1 pads short rows."""
  out = np.full((len(ids), k), -1, np.int64)
  for i, row in enumerate(ids):
    rest = row[(row != i) & (row >= 0)][:k]
    out[i, :len(rest)] = rest
  return out


def document_neighbours(ctx: BuildContext, k: int, *,
                        include_self: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
  """Top-k neighbour positions of every document (rows aligned with `ctx.store.doc_ids()`).

  Returns (int64 [N, k], -1 where fewer exist; info for the method manifest: embedder, index
  settings and its measured recall).
  """
  vectors, index = embed_and_index(ctx, *document_collection(ctx.store))
  name, k_self = document_lists(k)
  ids, _ = retrieval.neighbour_lists(index, vectors, k_self,
                                     out_dir=lists_dir(ctx.index_dir, name, k_self),
                                     progress=ctx.progress)
  table = ids[:, :k] if include_self else drop_self(ids, k)
  info = {"embedder": ctx.embedder.name, "index": index.manifest.get("config"),
          "index_counts": index.manifest.get("counts"), "k": k, "include_self": include_self}
  return table, info


def document_collection(store) -> tuple[str, "_Texts", dict[str, Any]]:
  """(name, source, inputs) of the document embeddings, for `embed_and_index` and the Beam
  build (`synth.pipeline`), which must write the very same embeddings directory."""
  return "docs", _Texts(store), {"store": chunking.store_fingerprint(store)}


def chunk_collection(chunks: chunking.ChunkStore) -> tuple[str, chunking.ChunkStore,
                                                           dict[str, Any]]:
  """(name, source, inputs) of NExtLong's chunk embeddings for a chunk store."""
  return (f"chunks-{chunks.size}", chunks,
          {"chunks": io.fingerprint_json(chunks.manifest["inputs"]), "chunk_size": chunks.size})


class _Texts:
  """Adapts a DocStore (texts by doc id) to `embed_corpus`'s positional `text(i)`."""

  def __init__(self, store):
    self.store, self.ids = store, np.asarray(store.doc_ids())

  def __len__(self) -> int:
    return len(self.ids)

  def text(self, i: int) -> str:
    return self.store.text(int(self.ids[i]))


def chunk_searcher(index_dir: Path, name: str):
  """(vectors memmap, loaded Index) of a chunk collection built by `embed_and_index`."""
  vectors = np.load(Path(index_dir) / "embeddings" / name / "vectors.npy", mmap_mode="r")
  return vectors, retrieval.Index.load(Path(index_dir) / "index" / name)
