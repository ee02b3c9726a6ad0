"""Ring attention scaling over the GPUs of one host: per-GPU fwd+bwd TFLOP/s vs one GPU's cuDNN.

For each ring size n (mesh `sequence` = n, zigzag layout, cuDNN block kernel):
  weak scaling:   S = chunk * n (fixed tokens per GPU, default 32K)
  strong scaling: S = total     (fixed length, default 256K)
Per-GPU throughput = causal fwd+bwd FLOPs(S) / n / time. The reference is the single-GPU fused
kernel (cuDNN through `ops.attention`, n = 1) measured in the same run, at the same total length
S ("vs 1 GPU @S": the same problem on one device) and at the per-GPU length S/n ("vs 1 GPU
@S/n": the work one GPU of the ring owns). Target (multi-GPU issue): >= 85% at 8 GPUs.

On a multi-GPU machine, through the device tool:
  NCCL_NVLS_ENABLE=0 XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true \\
    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 experiments/bench/ring_scaling.py --out $OUT
Re-plot a saved run: python experiments/bench/ring_scaling.py --plot results.json
Shapes and FLOP convention: experiments/bench/attention.py (B=1, 32 heads, 8 kv heads, H=128).
"""

import argparse
import json
import os
import sys
import time

import jax

from attention import FLOP_CONVENTION, Shape, bench_one, pyplot  # this folder's script
from longjax import ops
from longjax.train.mesh import MeshConfig, make_mesh

SHAPE = Shape()  # attention.py's default shape
SHAPE_JSON = {k.upper(): v for k, v in SHAPE._asdict().items()}


def _mesh(n: int) -> jax.sharding.Mesh:
  """The trainer's mesh with the sequence over the first n devices."""
  return make_mesh(MeshConfig(data=1, sequence=n), jax.devices()[:n])


def _attention(q, k, v):
  # ring over `sequence` when n > 1; the inputs are random, the layout says how to mask them
  return ops.attention(q, k, v, implementation="gpu", ring=ops.RingOptions(layout="zigzag"))


def measure(n: int, s: int, budget_s: float) -> dict:
  """One cell: ring of n GPUs (the fused kernel itself when n = 1) at total length s."""
  t0 = time.perf_counter()
  try:
    row = bench_one(_attention, _mesh(n), s, budget_s, SHAPE)
    row["tflops_per_gpu"] = row.pop("tflops") / n
  except Exception as e:  # an OOM or unsupported size is a table entry, not the end of the run
    row = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
  row.update(n=n, seq=s, wall_s=round(time.perf_counter() - t0, 1))
  print(row, flush=True)
  return row


def run(shards: list[int], chunk: int, total: int, budget_s: float) -> dict:
  weak = [measure(n, chunk * n, budget_s) for n in shards]
  strong = [measure(n, total, budget_s) for n in shards]
  singles = {r["seq"]: r for r in weak + strong if r["n"] == 1 and "tflops_per_gpu" in r}
  for s in sorted({chunk * n for n in shards} | {total // n for n in shards} | {total}):
    if s not in singles:
      singles[s] = measure(1, s, budget_s)
  ref = lambda s: singles.get(s, {}).get("tflops_per_gpu")
  for r in weak + strong:
    if "tflops_per_gpu" in r:
      for key, s in (("vs_one_gpu_same_s", r["seq"]), ("vs_one_gpu_chunk", r["seq"] // r["n"])):
        r[key] = r["tflops_per_gpu"] / ref(s) if ref(s) else None
  return {"device": jax.devices()[0].device_kind, "devices": jax.device_count(),
          "jax": jax.__version__, "flop_convention": FLOP_CONVENTION,
          "shape": SHAPE_JSON, "chunk": chunk, "total": total,
          "weak": weak, "strong": strong,
          "single_gpu": sorted(singles.values(), key=lambda r: r["seq"])}


def table(res: dict) -> str:
  pct = lambda x: f"{x:.1%}" if x else "n/a"
  lines = [f"device: {res['devices']} x {res['device']}  jax {res['jax']}",
           f"FLOPs: {res['flop_convention']}",
           f"{'scaling':<8}{'GPUs':>5}{'S':>9}{'ms':>10}{'TF/s/GPU':>10}{'vs 1 GPU @S':>13}"
           f"{'vs 1 GPU @S/n':>15}{'mem GiB':>9}"]
  for kind in ("weak", "strong"):
    for r in res[kind]:
      if "error" in r:
        lines.append(f"{kind:<8}{r['n']:>5}{r['seq']:>9}  {r['error'][:80]}")
        continue
      mem = r["memory_bytes"] / 2**30 if r["memory_bytes"] else float("nan")
      lines.append(f"{kind:<8}{r['n']:>5}{r['seq']:>9}{r['seconds'] * 1e3:>10.1f}"
                   f"{r['tflops_per_gpu']:>10.1f}{pct(r['vs_one_gpu_same_s']):>13}"
                   f"{pct(r['vs_one_gpu_chunk']):>15}{mem:>9.2f}")
  lines.append("single GPU (cuDNN fused): " + ", ".join(
      f"{r['seq'] // 1024}K {r['tflops_per_gpu']:.0f}" for r in res["single_gpu"]
      if "tflops_per_gpu" in r) + " TF/s")
  return "\n".join(lines)


def plot(res: dict, path: str) -> None:
  if (plt := pyplot()) is None:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for ax, kind, what in ((axes[0], "weak", f"{res['chunk'] // 1024}K tokens per GPU"),
                         (axes[1], "strong", f"{res['total'] // 1024}K tokens in all")):
    rows = [r for r in res[kind] if "tflops_per_gpu" in r]
    ns = [r["n"] for r in rows]
    ax.plot(ns, [r["tflops_per_gpu"] for r in rows], "o-", label="ring, per GPU")
    refs = [(r["n"], r["tflops_per_gpu"] / r["vs_one_gpu_same_s"]) for r in rows
            if r["vs_one_gpu_same_s"]]
    if refs:
      ax.plot(*zip(*refs), "s--", label="1 GPU cuDNN at the same S")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("GPUs in the ring")
    ax.set_ylabel("fwd+bwd TFLOP/s per GPU")
    ax.set_title(f"{kind} scaling: {what}", fontsize=10)
    ax.legend(fontsize=8)
  fig.suptitle("ring attention (zigzag, cuDNN blocks), "
               + " ".join(f"{k}={v}" for k, v in SHAPE_JSON.items()) + " bf16 causal, "
               f"{res['device']}", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print("wrote", path)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="bench_out")
  ap.add_argument("--shards", default=None, help="ring sizes; default 1,2,4,.. up to all GPUs")
  ap.add_argument("--chunk", type=int, default=32768, help="weak scaling: tokens per GPU")
  ap.add_argument("--total", type=int, default=262144, help="strong scaling: total tokens")
  ap.add_argument("--budget", type=float, default=3.0, help="seconds of timing per cell")
  ap.add_argument("--plot", help="re-plot a results JSON and exit")
  args = ap.parse_args(argv)
  if args.plot:
    res = json.load(open(args.plot))
    print(table(res))
    plot(res, os.path.splitext(args.plot)[0] + ".png")
    return 0
  if args.shards:
    shards = [int(x) for x in args.shards.split(",")]
  else:
    shards = [n for n in (1, 2, 4, 8, 16, 32) if n <= jax.device_count()]
  if 1 not in shards:
    shards = [1] + shards
  res = run(shards, args.chunk, args.total, args.budget)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "ring_scaling.json"), "w") as f:
    json.dump(res, f, indent=1)
  print(table(res))
  plot(res, os.path.join(args.out, "ring_scaling.png"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
