"""Nearest-neighbour retrieval over L2-normalised vectors: ScaNN, exact reference, neighbour lists.

Similarity is the dot product (= cosine on normalised vectors). `index_config(n)` picks the
ScaNN settings by size (specs/nextlong.md §3, specs/baselines.md §3.3):
- n < 20,000: brute force (exact).
- 20,000 <= n < 100,000: asymmetric hashing (AH, 2 dims per block, anisotropic threshold 0.2)
  over all points + exact reorder of the best candidates.
- n >= 100,000: tree partitioning with num_leaves ≈ √n, then AH + reorder.
`build_index` can split the vectors into S contiguous shards with one ScaNN searcher each; a
query searches every shard and merges the shards' top-k exactly, ties going to the smaller id,
so exact shards give the same lists whatever S. The tree's k-means starts from k-means++
centres (`IndexConfig.center_init`): ScaNN's default random start is not reproducible (the
same vectors gave a different tree, AH codebook and neighbour lists on most builds, with one
training thread as with many: `experiments/bench/scann_determinism.py`), k-means++ is, so a
build is the same index every time. It then measures recall@k against
`brute_force_search` on a sample of the database vectors used as queries (the neighbour-list
workload) and picks the cheapest query-time search that meets the target (0.95), narrowing an
over-generous default as well as widening one that falls short (`search_settings`); the
manifest records the shards, the chosen search and its recall. `neighbour_lists` precomputes
top-k lists for every vector in blocks of `LIST_BLOCK` rows (`write_lists` stores them, with a
fingerprint, for this process and for the Beam build's per-shard search alike).

ScaNN is imported without TensorFlow: `import scann` imports TF when TF is installed (for its
TF op), so `_scann()` blocks that import while loading the pybind module the index needs.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from longjax import io
from longjax.synth import search_settings
from longjax.progress import Progress, silent

BRUTE_FORCE_BELOW = 20_000
TREE_FROM = 100_000
LIST_BLOCK = 4096  # query rows per search call when computing neighbour lists
CENTER_INITS = ("kmeans++", "random")


def _scann():
  """The `scann_ops_pybind` module, imported without pulling TensorFlow in."""
  name = "scann.scann_ops.py.scann_ops_pybind"
  if name in sys.modules:
    return sys.modules[name]
  blocked = "tensorflow" not in sys.modules
  if blocked:
    sys.modules["tensorflow"] = None  # makes `import tensorflow` raise ModuleNotFoundError
  try:
    from scann.scann_ops.py import scann_ops_pybind  # pylint: disable=import-outside-toplevel
  finally:
    if blocked:
      del sys.modules["tensorflow"]
  return scann_ops_pybind


@dataclasses.dataclass(frozen=True)
class IndexConfig:
  """ScaNN settings. `kind`: brute_force | ah | tree_ah."""
  kind: str
  num_leaves: int = 0
  num_leaves_to_search: int = 0
  training_sample_size: int = 250_000
  dimensions_per_block: int = 2
  anisotropic_quantization_threshold: float = 0.2
  reorder: int = 0  # candidates rescored exactly; 0 = no reorder
  # How the tree's k-means starts. "kmeans++": the same tree from the same vectors on every
  # build; "random" (ScaNN's default): a faster build (1M x 384: 77 s against 127 s, one run),
  # but a different tree, codebook and neighbour lists from build to build (docs/synthesis.md,
  # "Reproducibility").
  center_init: str = "kmeans++"

  def __post_init__(self):
    if self.kind not in ("brute_force", "ah", "tree_ah"):
      raise ValueError(f"IndexConfig.kind must be brute_force, ah or tree_ah, got {self.kind!r}")
    if self.center_init not in CENTER_INITS:
      raise ValueError(f"IndexConfig.center_init must be one of {CENTER_INITS}, "
                       f"got {self.center_init!r}")
    if self.kind == "tree_ah" and not 0 < self.num_leaves_to_search <= self.num_leaves:
      raise ValueError(f"num_leaves_to_search ({self.num_leaves_to_search}) must be in "
                       f"[1, num_leaves={self.num_leaves}]")
    if self.kind != "brute_force" and self.reorder < 1:
      raise ValueError(f"reorder ({self.reorder}) must be >= 1 for AH scoring")


def index_config(n: int) -> IndexConfig:
  """Default settings for `n` database vectors (see the module docstring)."""
  if n < BRUTE_FORCE_BELOW:
    return IndexConfig("brute_force")
  if n < TREE_FROM:
    return IndexConfig("ah", reorder=200)
  leaves = max(2, round(math.sqrt(n)))
  return IndexConfig("tree_ah", num_leaves=leaves, num_leaves_to_search=max(1, leaves // 10),
                     training_sample_size=min(n, 250_000), reorder=250)


def brute_force_search(database: np.ndarray, queries: np.ndarray, k: int, *,
                       batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k by dot product: (ids int64 [q, k'], scores float32 [q, k']), k' = min(k, n).

  Rows are sorted by descending score; ties go to the smaller id.
  """
  database = np.asarray(database, np.float32)
  k = min(k, len(database))
  ids = np.zeros((len(queries), k), np.int64)
  scores = np.zeros((len(queries), k), np.float32)
  for s in range(0, len(queries), batch_size):
    sims = np.asarray(queries[s:s + batch_size], np.float32) @ database.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.broadcast_to(
        np.arange(sims.shape[1]), sims.shape)
    top_scores = np.take_along_axis(sims, top, 1)
    order = np.lexsort((top, -top_scores), axis=1)
    ids[s:s + batch_size] = np.take_along_axis(top, order, 1)
    scores[s:s + batch_size] = np.take_along_axis(top_scores, order, 1)
  return ids, scores


def recall_per_query(found: np.ndarray, exact: np.ndarray) -> np.ndarray:
  """float64 [q]: the fraction of each row's exact top-k ids that `found`'s row contains."""
  k = exact.shape[1]
  hits = [len(set(f[:k].tolist()) & set(e.tolist())) for f, e in zip(found, exact)]
  return np.asarray(hits, np.float64) / max(1, k)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
  """Mean fraction of each row's exact top-k ids that `found` contains."""
  return float(np.mean(recall_per_query(found, exact))) if len(exact) else 0.0


class Index:
  """ScaNN searchers over `n` vectors of dimension `dim`, one per contiguous shard of rows.

  Shard s holds rows `offsets[s]:offsets[s + 1]`. `leaves_to_search` / `reorder` are the
  query-time settings `search` uses by default: the config's, or those `build_index` chose.
  One shard loaded alone (`load(directory, shard=s)`) is an Index over its rows only whose
  search returns global row ids, so the shards' results merged (`merge_top_k`) are what the
  whole index returns: the Beam build searches shard by shard this way.
  """

  def __init__(self, searchers: Sequence[Any], config: IndexConfig, offsets: Sequence[int],
               dim: int, manifest: dict[str, Any] | None = None, *,
               leaves_to_search: int | None = None, reorder: int | None = None):
    if len(offsets) != len(searchers) + 1:
      raise ValueError(f"{len(searchers)} searchers need {len(searchers) + 1} offsets, "
                       f"got {len(offsets)}")
    self.searchers, self.config, self.dim = list(searchers), config, dim
    self.offsets = [int(o) for o in offsets]
    self.n = self.offsets[-1] - self.offsets[0]
    self.manifest = manifest or {}
    self.leaves_to_search = leaves_to_search or config.num_leaves_to_search or None
    self.reorder = reorder or config.reorder or None

  def search(self, queries: np.ndarray, k: int, *, batch_size: int = LIST_BLOCK,
             leaves_to_search: int | None = None,
             reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by dot product: (ids int64 [q, k'], scores float32 [q, k']), k' = min(k, n).

    Rows are sorted by descending score, ties to the smaller id. `leaves_to_search` and
    `reorder` override the index's settings for this call.
    """
    queries = np.ascontiguousarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != self.dim:
      raise ValueError(f"queries must be [q, {self.dim}], got {queries.shape}")
    k = min(k, self.n)
    reorder = reorder or self.reorder
    pre = max(reorder, k) if reorder else None
    leaves = leaves_to_search or self.leaves_to_search
    ids = np.zeros((len(queries), k), np.int64)
    scores = np.zeros((len(queries), k), np.float32)
    for s in range(0, len(queries), batch_size):
      batch = queries[s:s + batch_size]
      found = [searcher.search_batched_parallel(
          batch, final_num_neighbors=min(k, hi - lo), leaves_to_search=leaves,
          pre_reorder_num_neighbors=min(pre, hi - lo) if pre else None)
               for searcher, lo, hi in zip(self.searchers, self.offsets, self.offsets[1:])]
      ids[s:s + len(batch)], scores[s:s + len(batch)] = merge_top_k(
          [i.astype(np.int64) + lo for (i, _), lo in zip(found, self.offsets)],
          [d for _, d in found], k)
    return ids, scores

  def save(self, directory: str | os.PathLike) -> None:
    """Serialises into `<directory>/scann/` (relative asset paths: the directory can move).

    One shard's assets fill `scann/`; S > 1 shards go to `scann/<s>-of-<S>/`. Never with a
    pickle: ScaNN pickles the searcher's doc ids when it has any, and we index by row number,
    so none are set (`_check_no_pickle` refuses an index that has one).
    """
    if any(getattr(s, "docids", None) is not None for s in self.searchers):
      raise ValueError("a ScaNN searcher with doc ids would be saved with a pickle; index rows")
    with io.atomic_path(Path(directory) / "scann") as tmp:
      for s, searcher in enumerate(self.searchers):
        path = _shard_dir(tmp, s, len(self.searchers))
        path.mkdir(parents=True)
        searcher.serialize(str(path), relative_path=True)
        _check_no_pickle(path)

  @classmethod
  def load(cls, directory: str | os.PathLike, *, shard: int | None = None) -> "Index":
    """Loads an index that `build_index(..., out_dir=directory)` wrote, without unpickling;
    with `shard`, only that shard (an Index over its rows, see the class docstring).

    ScaNN's own `load_searcher` unpickles `scann_docids.pkl` when the file exists, which runs
    any code in it; an index from elsewhere must be safe to open, so the assets are read here
    and a directory holding a pickle is refused.
    """
    manifest = io.read_manifest(directory)
    if manifest is None or manifest.get("kind") != "index":
      raise FileNotFoundError(f"{directory}: not a finished ScaNN index (no index manifest)")
    counts = manifest["counts"]
    offsets = manifest.get("shards", {}).get("offsets", [0, counts["vectors"]])
    shards = len(offsets) - 1
    wanted = range(shards) if shard is None else [shard]
    if shard is not None and not 0 <= shard < shards:
      raise ValueError(f"{directory}: shard must be in [0, {shards}), got {shard}")
    searchers = [_load_searcher(_shard_dir(Path(directory) / "scann", s, shards)) for s in wanted]
    c = manifest["config"]
    # Indexes built before `center_init` existed were built with ScaNN's random start.
    config = IndexConfig(**{f.name: c.get(f.name, "random" if f.name == "center_init" else None)
                            for f in dataclasses.fields(IndexConfig)})
    chosen = manifest.get("search", {})
    return cls(searchers, config, offsets if shard is None else offsets[shard:shard + 2],
               counts["dim"], manifest, leaves_to_search=chosen.get("leaves_to_search"),
               reorder=chosen.get("reorder"))


def merge_top_k(ids: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                k: int) -> tuple[np.ndarray, np.ndarray]:
  """The k best of several [q, *] candidate lists: by descending score, ties to the smaller id.

  An exact merge: when each list holds its part's top-k, the result is the top-k of the union.
  """
  ids, scores = np.concatenate(ids, axis=1), np.concatenate(scores, axis=1)
  order = np.lexsort((ids, -scores), axis=1)[:, :k]
  return np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1)


def shard_offsets(n: int, shards: int) -> list[int]:
  """Row offsets of `shards` contiguous shards of `n` rows (sizes differ by at most one)."""
  if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or not 1 <= shards <= n:
    raise ValueError(f"shards must be an integer in [1, n={n}], got {shards!r}")
  return [s * n // int(shards) for s in range(int(shards) + 1)]


def _shard_dir(root: Path, s: int, shards: int) -> Path:
  """Where shard `s` of `shards` keeps its ScaNN assets under `root` (`root` itself if one)."""
  return root if shards == 1 else root / f"{s:05d}-of-{shards:05d}"


def _check_no_pickle(directory: Path) -> None:
  """Refuses a ScaNN directory that holds a pickle (unpickling runs arbitrary code)."""
  pickles = sorted(p.name for p in Path(directory).iterdir()
                   if p.suffix in (".pkl", ".pickle"))
  if pickles:
    raise ValueError(f"{directory}: refusing a ScaNN index that holds a pickle ({pickles}): "
                     "opening it could run code; rebuild the index with `synth build`")


def _load_searcher(directory: Path) -> Any:
  """ScaNN's `load_searcher` without its pickle path (doc ids) and its assets-guessing shim."""
  assets = directory / "scann_assets.pbtxt"
  if not assets.is_file():
    raise FileNotFoundError(f"{directory}: no scann_assets.pbtxt (not a ScaNN index)")
  _check_no_pickle(directory)
  pybind = _scann()
  return pybind.ScannSearcher(
      pybind.scann_pybind.ScannNumpy(str(directory), assets.read_text()), None)


def _build_searcher(vectors: np.ndarray, config: IndexConfig, k: int) -> Any:
  builder = _scann().builder(vectors, k, "dot_product")
  if config.kind == "brute_force":
    return builder.score_brute_force().build()
  if config.kind == "tree_ah":
    builder = builder.tree(num_leaves=config.num_leaves,
                           num_leaves_to_search=config.num_leaves_to_search,
                           training_sample_size=config.training_sample_size,
                           random_init=config.center_init == "random")
  builder = builder.score_ah(config.dimensions_per_block,
                             anisotropic_quantization_threshold=(
                                 config.anisotropic_quantization_threshold),
                             training_sample_size=config.training_sample_size)
  return builder.reorder(config.reorder).build()


def build_index(vectors: np.ndarray, *, config: IndexConfig | None = None, k: int = 10,
                out_dir: str | os.PathLike | None = None, inputs: dict[str, Any] | None = None,
                recall_queries: int = 1000, min_recall: float = 0.95, seed: int = 0,
                log: Callable[[str], None] = lambda _: None, shards: int = 1) -> Index:
  """Builds `shards` ScaNN searchers over contiguous row ranges and picks the search settings.

  Settings come from `index_config(rows of the largest shard)` unless `config` is given (then
  every shard uses it). Recall@k is measured against exact search over all vectors on
  `recall_queries` database vectors sampled with `seed`; the query-time search (leaves
  searched, reorder depth, the same for every shard) is the cheapest that meets `min_recall`
  on that sample (`search_settings.choose`), narrower or wider than the config's. With
  `out_dir`, serialises the index with a manifest (config, shards, chosen search and the trials
  behind it, recall, timings) and reuses an identical finished index found there.
  """
  vectors = np.ascontiguousarray(vectors, np.float32)
  if vectors.ndim != 2 or len(vectors) == 0:
    raise ValueError(f"vectors must be a non-empty [n, d] array, got shape {vectors.shape}")
  n, dim = vectors.shape
  offsets = shard_offsets(n, shards)
  sizes = [hi - lo for lo, hi in zip(offsets, offsets[1:])]
  config = config or index_config(max(sizes))
  if config.kind == "tree_ah" and config.num_leaves > min(sizes):
    raise ValueError(f"num_leaves ({config.num_leaves}) must be at most the rows of the "
                     f"smallest shard ({min(sizes)}); use fewer shards or leaves")
  cfg = {**dataclasses.asdict(config), "k": k, "recall_queries": recall_queries,
         "min_recall": min_recall, "seed": seed, "shards": shards,
         "search_selection": "cheapest meeting min_recall"}
  inputs = dict(inputs or {"vectors": io.fingerprint_array(vectors)})
  if out_dir is not None and io.is_complete(out_dir, config=cfg, inputs=inputs):
    return Index.load(out_dir)
  if out_dir is not None:
    io.begin_stage(out_dir)
  t0 = time.perf_counter()
  index = Index([_build_searcher(vectors[lo:hi], config, min(k, hi - lo))
                 for lo, hi in zip(offsets, offsets[1:])], config, offsets, dim)
  build_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  search, counts = _choose_search(index, vectors, k, recall_queries, min_recall, seed)
  counts = {"vectors": n, "dim": dim, **counts, "build_seconds": round(build_s, 3),
            "search_selection_seconds": round(time.perf_counter() - t0, 3)}
  recall = counts[f"recall@{k}"]
  log(f"index: {config.kind} in {shards} shard(s) over {n} x {dim}, recall@{k} = {recall:.4f} "
      f"({counts['recall_queries']} queries; {counts[f'recall@{k}_default_search']:.4f} with "
      f"the config's search) searching {search['leaves_to_search']} leaves, reorder "
      f"{search['reorder']}; built in {build_s:.1f}s")
  if counts[f"recall@{k}_lower_95"] < min_recall:
    log(f"WARNING: index recall@{k} {recall:.4f} (95% bound "
        f"{counts[f'recall@{k}_lower_95']:.4f}) stays below {min_recall} at the widest search")
  extra = {"search": search, "shards": {"count": shards, "offsets": offsets}}
  if out_dir is not None:
    index.save(out_dir)
    index.manifest = io.write_manifest(out_dir, kind="index", config=cfg, inputs=inputs,
                                       counts=counts, extra=extra)
  else:
    index.manifest = {"config": cfg, "counts": counts, **extra}
  return index


def _choose_search(index: Index, vectors: np.ndarray, k: int, recall_queries: int,
                   min_recall: float, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """Sets `index`'s query-time search to the cheapest meeting `min_recall` on a sample.

  Returns (the manifest's `search`: chosen settings and every trial; recall counts). An exact
  (brute-force) index has nothing to choose: no trials, its recall is the full search's.
  """
  config = index.config
  rng = np.random.default_rng(seed)
  q = vectors[np.sort(rng.choice(index.n, size=min(recall_queries, index.n), replace=False))]
  exact, _ = brute_force_search(vectors, q, k)
  measure = lambda leaves, reorder: recall_per_query(
      index.search(q, k, leaves_to_search=leaves or None, reorder=reorder or None)[0], exact)
  leaves, reorder = index.leaves_to_search or 0, index.reorder or 0
  default = search_settings.Trial.from_recalls(leaves, reorder, measure(leaves, reorder), 0)
  chosen, trials = default, []
  if config.kind != "brute_force":
    rows = max(hi - lo for lo, hi in zip(index.offsets, index.offsets[1:]))
    chosen, trials = search_settings.choose(
        measure, num_leaves=config.num_leaves if config.kind == "tree_ah" else 0,
        points=rows, k=min(k, rows), min_recall=min_recall,
        max_reorder=min(rows, max(k, 4 * config.reorder)))
    index.leaves_to_search, index.reorder = chosen.leaves or None, chosen.reorder
  search = {"leaves_to_search": index.leaves_to_search, "reorder": index.reorder,
            "trials": [dataclasses.asdict(t) for t in trials]}
  counts = {f"recall@{k}": chosen.recall, f"recall@{k}_lower_95": chosen.recall_lower,
            f"recall@{k}_default_search": default.recall, "recall_queries": len(q)}
  return search, counts


def neighbour_lists(index: Index, vectors: np.ndarray, k: int, *, batch_size: int = LIST_BLOCK,
                    out_dir: str | os.PathLike | None = None,
                    progress: Progress = silent
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Top-k neighbours of every row of `vectors`, most similar first (self included if indexed).

  Returns (ids int32 [n, k'], scores [n, k']), k' = min(k, index.n). Without `out_dir` they
  are in memory (scores float32). With `out_dir` they stream block by block through
  `write_lists`, so lists larger than RAM work; the return values are then read-only memory
  maps, and a finished identical run is reused (same rows, k, index inputs, shards and search
  settings). Ties go to the smaller id, so lists from exact shards are the same whatever the
  shard count.
  """
  n = len(vectors)
  k = min(k, index.n)
  starts = progress(range(0, n, batch_size), desc="neighbours", unit="batch",
                    total=-(-n // batch_size))
  blocks = ((s, *index.search(vectors[s:s + batch_size], k, batch_size=batch_size))
            for s in starts)
  if out_dir is None:
    ids, scores = np.zeros((n, k), np.int32), np.zeros((n, k), np.float32)
    for s, block_ids, block_scores in blocks:
      ids[s:s + len(block_ids)], scores[s:s + len(block_ids)] = block_ids, block_scores
    return ids, scores
  if not io.is_complete(out_dir, **lists_key(index, n, k)):
    write_lists(out_dir, index, n, k, blocks)
  return tuple(np.load(Path(out_dir) / name, mmap_mode="r") for name in LIST_FILES)


LIST_FILES = ("neighbours.npy", "scores.npy")


def lists_key(index: Index, rows: int, k: int) -> dict[str, dict[str, Any]]:
  """The `config` and `inputs` that identify the top-k lists of `rows` database rows over
  `index` (what `io.is_complete` compares)."""
  return {"config": {"k": min(k, index.n), "index": index.manifest.get("config"),
                     "shards": index.offsets,
                     "search": {"leaves_to_search": index.leaves_to_search,
                                "reorder": index.reorder}},
          "inputs": {"index": index.manifest.get("inputs", {}), "rows": rows}}


def write_lists(out_dir: str | os.PathLike, index: Index, rows: int, k: int,
                blocks: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> dict[str, Any]:
  """Writes neighbour lists from (first row, ids [b, k'], scores [b, k']) blocks in row order:
  `neighbours.npy` (int32) and `scores.npy` (float16) as memory maps, then the manifest with
  their fingerprints (sha256), by which two builds' lists are compared. Returns the manifest.

  One writer for this process's lists (`neighbour_lists`) and the Beam build's, whose blocks
  come from a search per shard and an exact merge per block of queries (synth/pipeline/).
  """
  key = lists_key(index, rows, k)
  k = key["config"]["k"]
  out_dir = io.begin_stage(out_dir)
  paths = [out_dir / name for name in LIST_FILES]
  with io.atomic_path(paths[0]) as tmp_ids, io.atomic_path(paths[1]) as tmp_scores:
    ids = np.lib.format.open_memmap(tmp_ids, mode="w+", dtype=np.int32, shape=(rows, k))
    scores = np.lib.format.open_memmap(tmp_scores, mode="w+", dtype=np.float16, shape=(rows, k))
    done = 0
    for start, block_ids, block_scores in blocks:
      if start != done or block_ids.shape[1] != k or start + len(block_ids) > rows:
        raise ValueError(f"{out_dir}: a neighbour block of shape {block_ids.shape} at row "
                         f"{start}; expected row {done}, {k} columns, rows up to {rows}")
      ids[start:start + len(block_ids)], scores[start:start + len(block_ids)] = \
          block_ids, block_scores
      done += len(block_ids)
    if done != rows:
      raise ValueError(f"{out_dir}: neighbour blocks cover {done} of {rows} rows")
    ids.flush()
    scores.flush()
    fingerprints = {"neighbours": io.fingerprint_array(ids),
                    "scores": io.fingerprint_array(scores)}
    del ids, scores
  return io.write_manifest(out_dir, kind="neighbours", counts={"rows": rows, "k": k},
                           extra={"fingerprints": fingerprints}, **key)
