"""The project's ScaNN index against raw ScaNN and exact search: recall@10 and queries/s (CPU).

Run (about 11 minutes at 1M on 2 shared cores; 1M x 384 float32 is 1.5 GB, peak RAM ~5 GB):
  PYTHONPATH=. .venv/bin/python experiments/bench/retrieval.py --sizes 1000000
Writes `<out>/retrieval.json` and `<out>/retrieval.png`; prints one line per measurement.

Workload: the neighbour lists, i.e. database vectors as queries (`--queries` rows sampled with
`--seed + 1`, so not the rows `build_index` tuned its search on, seed 0). Recall@k is against
`retrieval.brute_force_search` (numpy float32 matmul, BLAS on all cores).

Per size, on one built index:
- project: `build_index` with default settings (it picks the cheapest search that meets recall
  0.95 on its own sample), searched through `Index.search`; also its recall on `--fresh`
  vectors drawn from the data's mixture but not in the database, and the config's default
  search (leaves/10, reorder 250), which is what the index used before the search was chosen.
- raw ScaNN: the same searcher called directly (`search_batched_parallel`) over a grid of
  leaves searched x reorder depth, each point timed once.
- head to head: the project's search and the `--finalists` fastest raw points with recall >= 0.95
  timed again, alternating, `--repeats` times each; medians reported, so that load drift on a
  shared machine hits all alike. "best raw" is the finalist with the highest median and
  `ratio` = project median q/s / best raw median q/s.
With `--shards S` > 1 the project's index is built in S shards and measured alone (recall,
q/s, its manifest); the raw comparison needs one searcher and is skipped.

Data: a clustered synthetic set standing in for text embeddings (random directions have no
neighbourhood structure, so real retrieval never looks like them): `--clusters` unit centres,
each point = centre + isotropic Gaussian noise of norm ≈ `--spread`, L2-normalised (cosine to
the centre ≈ 0.78 at spread 0.8). `--data random` uses uniform directions instead.
"""

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from longjax import io
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


def raw_search(searcher, k: int, leaves: int | None, reorder: int | None):
  """A batch search function calling the ScaNN searcher directly (no project wrapper)."""
  return lambda b: searcher.search_batched_parallel(
      b, final_num_neighbors=k, pre_reorder_num_neighbors=max(reorder, k) if reorder else None,
      leaves_to_search=leaves)[0].astype(np.int64)


def raw_grid(config: retrieval.IndexConfig) -> list[tuple[int | None, int]]:
  """(leaves searched, reorder) points of the raw-ScaNN sweep, independent of the project's."""
  reorders = (20, 30, 40, 50, 70, 100, 150, 250, 500)
  if config.kind == "ah":
    return [(None, r) for r in reorders]
  fractions = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07, 0.1, 0.15, 0.2)
  leaves = sorted({max(1, round(config.num_leaves * f)) for f in fractions})
  return [(L, r) for L in leaves for r in reorders]


def measure(name: str, fn, q: np.ndarray, exact: np.ndarray, args, bf_qps: float) -> dict:
  """One timed search over `q`: q/s and recall@k against `exact`; printed as it goes."""
  ids, qps = timed_search(fn, q, args.batch)
  rec = retrieval.recall_at_k(ids, exact)
  print(f"    {name:<40} {qps:9.1f} q/s ({qps / bf_qps:6.1f}x brute force)  "
        f"recall@{args.k} {rec:.4f}", flush=True)
  return {"qps": round(qps, 1), f"recall@{args.k}": round(rec, 4)}


def head_to_head(fns: dict, q: np.ndarray, batch: int, repeats: int) -> dict[str, float]:
  """Median q/s of each search, timed in alternation `repeats` times."""
  runs = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      runs[name].append(timed_search(fn, q, batch)[1])
  return {name: round(float(np.median(v)), 1) for name, v in runs.items()}


def bench_size(n: int, args, rng) -> dict:
  """One database size: brute force, the project's index, the raw sweep, the head to head."""
  data = make_data(n + args.fresh, args.dim, args.data, args.clusters, args.spread, rng)
  x, fresh = data[:n], data[n:]
  q = x[np.random.default_rng(args.seed + 1).choice(n, size=args.queries, replace=False)]
  k = args.k
  exact, bf_qps = timed_search(lambda b: retrieval.brute_force_search(x, b, k)[0], q,
                               args.batch)
  print(f"n={n:,}: brute force {bf_qps:.1f} q/s", flush=True)
  t0 = time.perf_counter()
  index = retrieval.build_index(x, k=k, log=print, shards=args.shards)
  build_s = time.perf_counter() - t0
  config, chosen = index.config, index.manifest["search"]
  project = lambda b: index.search(b, k)[0]
  row = {"n": n, "dim": args.dim, "data": args.data, "shards": args.shards,
         "config": dataclasses.asdict(config),
         "search": chosen, "counts": index.manifest["counts"],
         "build_and_choose_seconds": round(build_s, 1), "brute_force_qps": round(bf_qps, 1)}
  row["project"] = measure(f"project: leaves {chosen['leaves_to_search']} reorder "
                           f"{chosen['reorder']}", project, q, exact, args, bf_qps)
  fresh_exact, _ = retrieval.brute_force_search(x, fresh, k)
  row["project"][f"fresh_recall@{k}"] = round(retrieval.recall_at_k(
      index.search(fresh, k)[0], fresh_exact), 4)
  if args.shards > 1:  # raw ScaNN is one searcher: nothing to set beside S of them
    return row
  return {**row, **raw_versus_project(index, project, q, exact, args, bf_qps)}


def raw_versus_project(index, project, q: np.ndarray, exact: np.ndarray, args,
                       bf_qps: float) -> dict:
  """The config's search, the raw sweep and the head to head, on the index's one searcher."""
  k, config, searcher = args.k, index.config, index.searchers[0]
  default = raw_search(searcher, k, config.num_leaves_to_search or None, config.reorder or None)
  out = {"config_default": measure(f"config default: leaves {config.num_leaves_to_search} "
                                   f"reorder {config.reorder}", default, q, exact, args, bf_qps),
         "raw_sweep": [{"leaves_to_search": L, "reorder": R, **measure(
             f"raw: leaves {L} reorder {R}", raw_search(searcher, k, L, R), q, exact, args,
             bf_qps)} for L, R in (raw_grid(config) if config.kind != "brute_force" else [])]}
  passing = sorted((p for p in out["raw_sweep"] if p[f"recall@{k}"] >= 0.95),
                   key=lambda p: -p["qps"])[:args.finalists]
  if passing:  # the sweep's single timings are noisy: re-time its fastest few with the project
    fns = {"project": project, **{
        f"raw leaves {p['leaves_to_search']} reorder {p['reorder']}": raw_search(
            searcher, k, p["leaves_to_search"], p["reorder"]) for p in passing}}
    medians = head_to_head(fns, q, args.batch, args.repeats)
    name, best = max(((m, v) for m, v in medians.items() if m != "project"), key=lambda t: t[1])
    out["head_to_head"] = {"median_qps": medians, "repeats": args.repeats, "best_raw": name,
                           "ratio": round(medians["project"] / best, 3)}
    print(f"  head to head (median of {args.repeats}): project {medians['project']:.1f} q/s, "
          f"best raw ({name}) {best:.1f} q/s, ratio {out['head_to_head']['ratio']:.3f}",
          flush=True)
  return out


def plot(rows: list[dict], path: str, k: int) -> None:
  """Recall against queries/s: the raw sweep as dots, the project's search as a star."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in rows:
    pts = [(s["qps"], s[f"recall@{k}"]) for s in r.get("raw_sweep", [])]
    if pts:
      ax.scatter(*zip(*pts), s=14, alpha=0.6, label=f"n={r['n']:,} raw ScaNN sweep")
    for key, marker in (("project", "*"), ("config_default", "x")):
      if key not in r:
        continue
      ax.scatter([r[key]["qps"]], [r[key][f"recall@{k}"]], marker=marker, s=160,
                 label=f"n={r['n']:,} {key.replace('_', ' ')}")
  ax.axhline(0.95, color="grey", ls="--", lw=0.8)
  ax.set_xscale("log")
  ax.set_xlabel("queries/s (database rows as queries)")
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
  p.add_argument("--queries", type=int, default=1000, help="database rows used as queries")
  p.add_argument("--fresh", type=int, default=200, help="off-database queries (recall only)")
  p.add_argument("--repeats", type=int, default=3, help="head-to-head timings of each search")
  p.add_argument("--finalists", type=int, default=3, help="raw points in the head to head")
  p.add_argument("--shards", type=int, default=1,
                 help="shards of the project's index; > 1 measures it alone (no raw sweep)")
  p.add_argument("--batch", type=int, default=250)
  p.add_argument("--k", type=int, default=10)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default="experiments/bench/results")
  args = p.parse_args()
  rng = np.random.default_rng(args.seed)
  load_start = os.getloadavg()
  rows = [bench_size(int(n), args, rng) for n in args.sizes.split(",")]
  os.makedirs(args.out, exist_ok=True)
  meta = {"cpu_count": os.cpu_count(), "load_avg_start": load_start,
          "load_avg_end": os.getloadavg(), "args": vars(args), "versions": io.versions()}
  with open(os.path.join(args.out, "retrieval.json"), "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2, default=io.json_default)
  plot(rows, os.path.join(args.out, "retrieval.png"), args.k)
  print(f"wrote {args.out}/retrieval.json and retrieval.png")


if __name__ == "__main__":
  main()
