"""ScaNN vs exact brute force: recall@10 and queries/s at 10K-1M vectors (CPU).

Run (a few minutes at 1M on 2 cores; 1M x 384 float32 is 1.5 GB, peak RAM ~5 GB):
  PYTHONPATH=. .venv/bin/python experiments/bench/retrieval.py --sizes 1000000
  PYTHONPATH=. .venv/bin/python experiments/bench/retrieval.py --sizes 10000,100000,1000000
Expect at 1M with the default settings (`retrieval.index_config`): recall@10 >= 0.95 at >= 5x
the brute-force queries/s. Writes `<out>/retrieval.json` and `<out>/retrieval.png`.

Data: a clustered synthetic set standing in for text embeddings (random directions have no
neighbourhood structure, so real retrieval never looks like them): `--clusters` unit centres,
each point = centre + isotropic Gaussian noise of norm ≈ `--spread`, L2-normalised (cosine to
the centre ≈ 0.78 at spread 0.8). Queries are fresh draws from the same mixture, not database
points. `--data random` uses uniform directions instead, as a worst case.

Brute force is `retrieval.brute_force_search` (numpy float32 matmul + argpartition, BLAS on all
cores); ScaNN searches with `search_batched_parallel` (all cores). Both see the same queries in
batches of `--batch`. Besides the default settings, the leaves searched and the reorder depth are
swept at query time on the same index to show the recall/speed trade-off.
"""

import argparse
import json
import os
import time

import numpy as np

from longjax.synth import retrieval


def make_data(n: int, dim: int, kind: str, clusters: int, spread: float,
              rng: np.random.Generator) -> np.ndarray:
  """float32 [n, dim], unit rows; generated in blocks to bound temporary memory."""
  centres = rng.standard_normal((clusters, dim)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  out = np.empty((n, dim), np.float32)
  for s in range(0, n, 100_000):
    m = min(100_000, n - s)
    noise = rng.standard_normal((m, dim)).astype(np.float32)
    if kind == "clustered":
      block = centres[rng.integers(0, clusters, m)] + noise * (spread / np.sqrt(dim))
    else:
      block = noise
    out[s:s + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
  return out


def timed_search(fn, queries: np.ndarray, batch: int) -> tuple[np.ndarray, float]:
  """(ids, queries per second) over all queries in batches."""
  fn(queries[:batch])  # warm-up (thread pools, caches)
  t0 = time.perf_counter()
  ids = np.concatenate([fn(queries[s:s + batch]) for s in range(0, len(queries), batch)])
  return ids, len(queries) / (time.perf_counter() - t0)


def bench_size(n: int, args, rng) -> dict:
  data = make_data(n + args.queries, args.dim, args.data, args.clusters, args.spread, rng)
  x, q = data[:n], data[n:]  # queries: fresh draws from the same mixture
  k = args.k
  exact, bf_qps = timed_search(lambda b: retrieval.brute_force_search(x, b, k)[0], q,
                               args.batch)
  config = retrieval.index_config(n)
  t0 = time.perf_counter()
  index = retrieval.build_index(x, config=config, k=k, recall_queries=200)
  build_s = time.perf_counter() - t0
  found, qps = timed_search(lambda b: index.search(b, k)[0], q, args.batch)
  row = {"n": n, "dim": args.dim, "data": args.data, "config": config.__dict__,
         "search": index.manifest["search"],
         "build_seconds": round(build_s, 1), "brute_force_qps": round(bf_qps, 1),
         "scann_qps": round(qps, 1), "speedup": round(qps / bf_qps, 2),
         f"recall@{k}": round(retrieval.recall_at_k(found, exact), 4), "sweep": []}
  print(f"n={n:>9,}  {config.kind:<11} build {build_s:6.1f}s  brute force {bf_qps:9.1f} q/s  "
        f"scann {qps:9.1f} q/s ({qps / bf_qps:5.1f}x)  recall@{k} {row[f'recall@{k}']:.4f}",
        flush=True)
  if config.kind == "tree_ah":
    for leaves in sorted({max(1, config.num_leaves // d) for d in (40, 20, 10, 5)}):
      for reorder in (100, 250, 500):
        fn = lambda b, L=leaves, R=reorder: index.searcher.search_batched_parallel(
            b, final_num_neighbors=k, pre_reorder_num_neighbors=R, leaves_to_search=L)[0]
        ids, s_qps = timed_search(fn, q, args.batch)
        rec = retrieval.recall_at_k(ids.astype(np.int64), exact)
        row["sweep"].append({"leaves_to_search": leaves, "reorder": reorder,
                             "qps": round(s_qps, 1), f"recall@{k}": round(rec, 4)})
        print(f"    leaves {leaves:5d} reorder {reorder:4d}: {s_qps:9.1f} q/s "
              f"({s_qps / bf_qps:5.1f}x)  recall@{k} {rec:.4f}", flush=True)
  return row


def plot(rows: list[dict], path: str, k: int) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    pts = [(s["qps"] / r["brute_force_qps"], s[f"recall@{k}"]) for s in r["sweep"]]
    if pts:
      ax.scatter(*zip(*pts), s=14, alpha=0.6, label=f"n={r['n']:,} sweep")
    ax.scatter([r["speedup"]], [r[f"recall@{k}"]], marker="*", s=160,
               label=f"n={r['n']:,} default ({r['config']['kind']})")
  ax.axhline(0.95, color="grey", ls="--", lw=0.8)
  ax.axvline(5, color="grey", ls="--", lw=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("speed-up over exact brute force (queries/s ratio)")
  ax.set_ylabel(f"recall@{k} vs brute force")
  ax.set_title(f"ScaNN on {rows[0]['data']} {rows[0]['dim']}-d float32 (dot product)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sizes", default="1000000", help="comma-separated database sizes")
  p.add_argument("--dim", type=int, default=384)
  p.add_argument("--data", choices=("clustered", "random"), default="clustered")
  p.add_argument("--clusters", type=int, default=2000)
  p.add_argument("--spread", type=float, default=0.8)
  p.add_argument("--queries", type=int, default=1000)
  p.add_argument("--batch", type=int, default=250)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="experiments/bench/results")
  args = p.parse_args()
  rng = np.random.default_rng(args.seed)
  rows = [bench_size(int(n), args, rng) for n in args.sizes.split(",")]
  os.makedirs(args.out, exist_ok=True)
  meta = {"cpu_count": os.cpu_count(), "load_avg": os.getloadavg(), "args": vars(args)}
  with open(os.path.join(args.out, "retrieval.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  plot(rows, os.path.join(args.out, "retrieval.png"), args.k)
  print(f"wrote {args.out}/retrieval.json and retrieval.png")


if __name__ == "__main__":
  main()
