"""Does ScaNN build the same index twice from the same data? (It decides whether approximate
neighbour lists can be reproduced for a fixed seed.)

Run (about a minute on 2 cores; the timing part at 1M x 384 adds ~15 minutes):
  PYTHONPATH=. .venv/bin/python experiments/bench/scann_determinism.py --builds 6 \
      --timing 200000x128,1000000x384
Part 1 builds each variant `--builds` times on the same clustered vectors and prints, per
build, the fraction of top-10 entries (3,000 database rows as queries) that differ from the
first build's, and how many builds serialized to the same bytes as the first. Part 2 builds a
tree + AH index with each k-means start at the `--timing` sizes (√n leaves, as `index_config`)
and prints the build time and recall@10 at three searches.

Seen with scann 1.4.2 (`results/scann_determinism_cpu2.log`, docs/synthesis.md): the tree's
random k-means start (ScaNN's default) is the source: with it the partitioner differs between
builds whatever the scorer, and tree + AH with residual quantization then differs in ~89% of
entries at 5 leaves (also with one training thread, or an explicit partitioning
`clustering_seed`, which the builder does not expose). The k-means++ start
(`tree(random_init=False)`, `IndexConfig.center_init="kmeans++"`, our default) gives the same
bytes on every build, at 1, 2 or 4 training threads.
"""

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np

from longjax.synth import retrieval

scann = retrieval._scann  # pylint: disable=protected-access


def clustered(n: int, dim: int, seed: int, centres: int = 200) -> np.ndarray:
  """float32 [n, dim] unit rows around `centres` random centres."""
  rng = np.random.default_rng(seed)
  c = rng.standard_normal((centres, dim)).astype(np.float32)
  x = c[rng.integers(0, centres, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def variants(x: np.ndarray) -> dict:
  """name -> a function building one searcher on `x` (10 neighbours, dot product)."""
  tree = lambda random_init=True: scann().builder(x, 10, "dot_product").tree(
      num_leaves=140, num_leaves_to_search=5, training_sample_size=len(x),
      random_init=random_init)
  ah = lambda b, **kw: b.score_ah(2, anisotropic_quantization_threshold=0.2, **kw)
  return {
      "tree + brute force": lambda: tree().score_brute_force().build(),
      "tree + AH, no residual": lambda: ah(tree(), residual_quantization=False).build(),
      "tree + AH (residual)": lambda: ah(tree()).build(),
      "tree + AH (residual), 1 training thread": lambda: ah(tree()).set_n_training_threads(
          1).build(),
      "tree + AH (residual), clustering_seed 7": lambda: scann().create_searcher(
          x, ah(tree()).create_config().replace(
              "partitioning {", "partitioning {\n clustering_seed: 7", 1), 0),
      "tree + AH (residual) + reorder 100": lambda: ah(tree()).reorder(100).build(),
      "k-means++ tree + AH (residual)": lambda: ah(tree(False)).build(),
      "k-means++ tree + AH (residual), 1 thread": lambda: ah(tree(False)).set_n_training_threads(
          1).build(),
      "k-means++ tree + AH (residual), 4 threads": lambda: ah(
          tree(False)).set_n_training_threads(4).build(),
      "AH only (no tree) + reorder 100": lambda: ah(
          scann().builder(x, 10, "dot_product")).reorder(100).build(),
  }


def assets_sha256(searcher) -> str:
  """sha256 over the serialized assets (file names and bytes, in name order)."""
  with tempfile.TemporaryDirectory() as d:
    searcher.serialize(d, relative_path=True)
    h = hashlib.sha256()
    for path in sorted(Path(d).iterdir()):
      h.update(path.name.encode())
      h.update(path.read_bytes())
    return h.hexdigest()


def repeat_builds(x: np.ndarray, builds: int) -> None:
  for name, build in variants(x).items():
    ids, digests = [], []
    for _ in range(builds):
      searcher = build()
      ids.append(searcher.search_batched(x[:3000], final_num_neighbors=10)[0])
      digests.append(assets_sha256(searcher))
    same = sum(d == digests[0] for d in digests[1:])
    print(f"{name:<44} differs from build 1: "
          + " ".join(f"{float((i != ids[0]).mean()):.3f}" for i in ids[1:])
          + f"; same bytes as build 1: {same}/{builds - 1}", flush=True)


def timing(n: int, dim: int) -> None:
  """Build seconds and recall@10 of tree + AH with each k-means start, at n x dim."""
  x = clustered(n, dim, seed=0, centres=2000)
  q = x[np.random.default_rng(1).choice(n, 1000, replace=False)]
  exact, _ = retrieval.brute_force_search(x, q, 10)
  config = retrieval.index_config(max(n, retrieval.TREE_FROM))
  leaves = config.num_leaves
  for init in ("random", "kmeans++"):
    t0 = time.perf_counter()
    searcher = scann().builder(x, 10, "dot_product").tree(
        num_leaves=leaves, num_leaves_to_search=config.num_leaves_to_search,
        training_sample_size=min(n, 250_000), random_init=init == "random").score_ah(
            2, anisotropic_quantization_threshold=0.2,
            training_sample_size=min(n, 250_000)).reorder(250).build()
    seconds = time.perf_counter() - t0
    recalls = []
    for lv, ro in ((max(1, leaves // 100), 50), (leaves // 30, 100), (leaves // 10, 250)):
      found = searcher.search_batched(q, final_num_neighbors=10, leaves_to_search=lv,
                                      pre_reorder_num_neighbors=ro)[0]
      recalls.append(f"leaves {lv}, reorder {ro}: {retrieval.recall_at_k(found, exact):.4f}")
    print(f"{n} x {dim}, {leaves} leaves, {init:<8} start: build {seconds:.1f} s; recall@10 "
          + "; ".join(recalls), flush=True)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", type=int, default=20_000)
  p.add_argument("--dim", type=int, default=32)
  p.add_argument("--builds", type=int, default=4)
  p.add_argument("--timing", default="", help="comma-separated NxDIM sizes, e.g. 200000x128")
  args = p.parse_args()
  repeat_builds(clustered(args.n, args.dim, seed=0), args.builds)
  for size in filter(None, args.timing.split(",")):
    n, dim = (int(v) for v in size.split("x"))
    timing(n, dim)


if __name__ == "__main__":
  main()
