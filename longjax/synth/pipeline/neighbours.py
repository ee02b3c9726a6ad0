"""Neighbour lists in Beam: a search per index shard, an exact top-k merge per block of queries.

One task per (list, shard, span of `SPAN` query rows). Its worker loads that shard alone
(`retrieval.Index.load(..., shard=s)`: global row ids, the index's chosen search settings;
a worker keeps the last shard it loaded) and searches the span in blocks of
`retrieval.LIST_BLOCK` rows of the collection's vectors (read from the shared index
directory), emitting each block's top-k of that shard keyed by (list, block). Grouped per
block, the shards' lists are merged query by query with `retrieval.merge_top_k` (by score,
ties to the smaller id): the merge `Index.search` does, over the same per-shard calls on the
same blocks, so the lists equal the in-process ones. `assemble` writes them with
`retrieval.write_lists` (one writer; fingerprints in the manifest).

The index itself is built and its search chosen in the driver (`neighbours.embed_and_index`)
before this runs: choosing the search measures recall against exact search over all vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import apache_beam as beam
import numpy as np

from longjax import io
from longjax.synth import retrieval
from longjax.synth.methods import neighbours

SPAN = 64 * retrieval.LIST_BLOCK  # query rows per task: amortises loading the shard
_DIR = "lists"  # under the scratch directory


class ListRequest(NamedTuple):
  """Top-`k` lists of every row of collection `name` (`embeddings/<name>`, `index/<name>`)."""
  name: str
  k: int


def _label(name: str, k: int) -> str:
  return f"{name}-k{k}"


class _SearchShard(beam.DoFn):
  """(list name, k asked, k, shard, start, stop) -> ((list name, k asked, k, block start),
  (shard, ids, scores)) per block of `retrieval.LIST_BLOCK` rows of that shard."""

  def __init__(self, index_dir: Path):
    self.index_dir = str(index_dir)

  def setup(self) -> None:
    self._loaded: tuple[Any, ...] = ()

  def _shard(self, name: str, shard: int) -> tuple[retrieval.Index, np.ndarray]:
    if self._loaded[:2] != (name, shard):
      root = Path(self.index_dir)
      self._loaded = (name, shard, retrieval.Index.load(root / "index" / name, shard=shard),
                      np.load(root / "embeddings" / name / "vectors.npy", mmap_mode="r"))
    return self._loaded[2], self._loaded[3]

  def process(self, task: tuple[str, int, int, int, int, int]) -> Iterator[tuple]:
    name, asked, k, shard, start, stop = task
    index, vectors = self._shard(name, shard)
    for s in range(start, stop, retrieval.LIST_BLOCK):
      ids, scores = index.search(np.asarray(vectors[s:min(s + retrieval.LIST_BLOCK, stop)]),
                                 k, batch_size=retrieval.LIST_BLOCK)
      yield (name, asked, k, s), (shard, ids, scores)


def _merge(element: tuple[tuple[str, int, int, int], Iterable[tuple[int, np.ndarray, np.ndarray]]],
           directory: str) -> None:
  """One block's lists: the shards' top-k merged exactly, written under `directory`."""
  (name, asked, k, start), found = element
  found = sorted(found, key=lambda f: f[0])
  ids, scores = retrieval.merge_top_k([i for _, i, _ in found], [d for _, _, d in found], k)
  out = Path(directory) / _label(name, asked)
  io.write_npy(out / "ids" / f"{start:012d}.npy", ids)
  io.write_npy(out / "scores" / f"{start:012d}.npy", scores)


def pending(index_dir: Path, requests: Iterable[ListRequest],
            indexes: dict[str, tuple[np.ndarray, retrieval.Index]]) -> list[ListRequest]:
  """The requests whose lists are not finished (an identical earlier run is reused)."""
  out = []
  for r in dict.fromkeys(requests):
    vectors, index = indexes[r.name]
    if not io.is_complete(neighbours.lists_dir(index_dir, r.name, r.k),
                          **retrieval.lists_key(index, len(vectors), r.k)):
      out.append(r)
  return out


def add_branch(p: beam.Pipeline, index_dir: Path, requests: Sequence[ListRequest],
               indexes: dict[str, tuple[np.ndarray, retrieval.Index]], scratch: Path) -> None:
  """Adds the search and merge of `requests` to `p`; the blocks land under `scratch`."""
  tasks = []
  for r in requests:
    vectors, index = indexes[r.name]
    tasks += [(r.name, r.k, min(r.k, index.n), s, lo, min(lo + SPAN, len(vectors)))
              for s in range(len(index.offsets) - 1) for lo in range(0, len(vectors), SPAN)]
  _ = (p | "search tasks" >> beam.Create(tasks) | "spread searches" >> beam.Reshuffle()
       | "search shards" >> beam.ParDo(_SearchShard(index_dir))
       | "group blocks" >> beam.GroupByKey()
       | "merge shards" >> beam.Map(_merge, str(scratch / _DIR)))


def assemble(index_dir: Path, requests: Sequence[ListRequest],
             indexes: dict[str, tuple[np.ndarray, retrieval.Index]], scratch: Path) -> None:
  """Writes each request's lists from its merged blocks, in row order."""
  for r in requests:
    vectors, index = indexes[r.name]
    blocks = scratch / _DIR / _label(r.name, r.k)
    starts = sorted(int(p.stem) for p in (blocks / "ids").glob("*.npy"))
    retrieval.write_lists(
        neighbours.lists_dir(index_dir, r.name, r.k), index, len(vectors), r.k,
        ((s, np.load(blocks / "ids" / f"{s:012d}.npy"),
          np.load(blocks / "scores" / f"{s:012d}.npy")) for s in starts))
