"""Attention benchmark: forward+backward TFLOP/s and memory of each implementation vs cuDNN.

Run on one GPU (through the device tool):
  PYTHONUNBUFFERED=1 PYTHONPATH=. python3 experiments/bench/attention.py --out $OUT
Expect: `gpu` within a few % of `cudnn` (same kernels), `blockwise` far below (pure-JAX loops).
Document masks (tokamax's Mosaic-GPU kernel; needs tokamax installed, see docs/attention.md):
  ... attention.py --sizes 32768,131072 \
      --impls "cudnn,tokamax,tokamax/8docs,tokamax/64docs,ring1(tokamax)/8docs"
`NAME/Ddocs` rows pack D documents per row (random cuts, positions restarting per document);
their FLOPs are still counted as unmasked causal attention, so a kernel that skips the masked
tiles can pass 100% of cuDNN, which runs without documents.
Re-plot a saved run on any machine: python experiments/bench/attention.py --plot results.json

Shapes: B=1, 32 query heads, 8 kv heads (GQA), head dim 128, bf16, causal, S in {8K, 32K, 128K};
`--shape B,N,K,H` sets batch, query heads, kv heads and head dim (e.g. 1,32,8,64 for the
Llama-3.2-1B shape, 1,9,3,64 for SmolLM2-135M).
FLOP convention (stated in every output): forward = 4·B·S²·N·H / 2 (causal counted at half),
backward = 2.5 × forward, so forward+backward = 3.5 × 4·B·S²·N·H / 2. Memory is XLA's compiled
memory analysis of the forward+backward program (temporaries + arguments + outputs).

Before timing, a parity check at S=2048 compares o and dq/dk/dv of every implementation, and a
two-block lse combine through the cuDNN backward fed the global o/lse (the ring's contract),
with the dense f32 reference.
"""

import argparse
import json
import os
import statistics
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from longjax import ops
from longjax.ops import gpu, ring, tokamax_gpu
from longjax.ops.kernels import BlockMask
from longjax.ops.reference import reference_attention

FLOP_CONVENTION = ("fwd = 4*B*S^2*N*H/2 (causal at half); fwd+bwd = 3.5 x fwd "
                   "(backward = 2.5 x forward)")


class Shape(NamedTuple):
  """Batch, query heads, kv heads, head dim of every benchmarked attention."""
  b: int = 1
  n: int = 32
  k: int = 8
  h: int = 128


def fwd_bwd_flops(s: int, shape: Shape) -> float:
  """Causal attention FLOPs of one forward+backward at length s (FLOP_CONVENTION)."""
  return 3.5 * 4 * shape.b * s * s * shape.n * shape.h / 2


def _inputs(s, shape: Shape, seed=0):
  ks = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(ks[0], (shape.b, s, shape.n, shape.h), jnp.bfloat16)
  k = jax.random.normal(ks[1], (shape.b, s, shape.k, shape.h), jnp.bfloat16)
  v = jax.random.normal(ks[2], (shape.b, s, shape.k, shape.h), jnp.bfloat16)
  do = jax.random.normal(ks[3], (shape.b, s, shape.n, shape.h), jnp.bfloat16)
  return q, k, v, do


def documents(batch, s, n_docs, seed=0):
  """([batch, s] segment ids of n_docs documents at random cuts, [batch, s] positions per
  document); each row cut differently."""
  rng = np.random.default_rng(seed)
  segs, poss = [], []
  for _ in range(batch):
    cuts = np.sort(rng.choice(np.arange(1, s), n_docs - 1, replace=False))
    seg = np.searchsorted(cuts, np.arange(s), side="right")
    segs.append(seg + 1)
    poss.append(np.arange(s) - np.concatenate([[0], cuts])[seg])
  return jnp.asarray(np.stack(segs), jnp.int32), jnp.asarray(np.stack(poss), jnp.int32)


def _docs_of(name):
  """Documents per row of a `NAME/Ddocs` row, else None."""
  return int(name.split("/")[1][:-4]) if "/" in name else None


def _fns():
  """name -> attention function (q, k, v) -> o, all causal; `NAME/Ddocs` with D documents."""
  mesh1 = jax.make_mesh((1,), ("sequence",), axis_types=(jax.sharding.AxisType.Auto,))

  def ring1(q, k, v, kernel=gpu.CUDNN, docs=None):
    seg, pos = documents(q.shape[0], q.shape[1], docs) if docs else (None, None)
    return ring.ring_attention(q, k, v, kernel=kernel, options=ring.RingOptions(layout="zigzag"),
                               segment_ids=seg, positions=pos)

  def packed(implementation, docs):
    def fn(q, k, v):
      seg, pos = documents(q.shape[0], q.shape[1], docs)
      return ops.attention(q, k, v, segment_ids=seg, positions=pos, implementation=implementation)
    return fn

  return {
      "cudnn": lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                            implementation="cudnn"),
      "gpu": lambda q, k, v: ops.attention(q, k, v, implementation="gpu"),
      # what the Llama calls: positions given, checked on device, cuDNN taken by lax.cond
      "gpu(positions)": lambda q, k, v: ops.attention(
          q, k, v, positions=jnp.broadcast_to(jnp.arange(q.shape[1]), q.shape[:2]),
          implementation="gpu"),
      "ring1(gpu)": ring1,
      "blockwise": lambda q, k, v: ops.attention(q, k, v, implementation="blockwise"),
      "tokamax": lambda q, k, v: ops.attention(q, k, v, implementation="tokamax"),
      "tokamax/8docs": packed("tokamax", 8),
      "tokamax/64docs": packed("tokamax", 64),
      "ring1(tokamax)/8docs": lambda q, k, v: ring1(q, k, v, tokamax_gpu.TOKAMAX, 8),
      "blockwise/8docs": packed("blockwise", 8),
  }, mesh1


def _fwd_bwd(fn):
  def loss(q, k, v, do):
    return jnp.sum(fn(q, k, v).astype(jnp.float32) * do.astype(jnp.float32))
  return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def _rel(a, b):
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def parity(fns, mesh1, shape: Shape, s=2048):
  """Relative errors of o, dq, dk, dv vs the f32 dense reference (with the row's documents, if
  any), plus the 2-block combine."""
  q, k, v, do = _inputs(s, shape, seed=1)
  scale = shape.h ** -0.5
  f32 = lambda *xs: [x.astype(jnp.float32) for x in xs]
  refs = {}
  out = {}
  for name, fn in fns.items():
    docs = _docs_of(name)
    if docs not in refs:
      seg, pos = documents(shape.b, s, docs) if docs else (None, None)
      ref = lambda q, k, v: ops.attention(q, k, v, segment_ids=seg, positions=pos,
                                          implementation="reference")
      o_ref, vjp = jax.vjp(ref, *f32(q, k, v))
      refs[docs] = o_ref, vjp(do.astype(jnp.float32))
    o_ref, g_ref = refs[docs]
    try:
      with jax.set_mesh(mesh1):
        o, vjp = jax.vjp(jax.jit(fn), q, k, v)
        g = vjp(do)
      out[name] = {"o": _rel(o, o_ref), **{d: _rel(a, b) for d, a, b in zip(("dq", "dk", "dv"),
                                                                             g, g_ref)}}
    except Exception as e:  # keep going: the table reports what failed
      out[name] = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
  if jax.default_backend() != "gpu":
    return out
  # Ring contract: non-causal attention as two KV halves merged through lse, then each half's
  # cuDNN backward fed the global (o, lse). Autodiff through this merge would be wrong (T2).
  half = s // 2
  parts = [(k[:, :half], v[:, :half]), (k[:, half:], v[:, half:])]
  res = [gpu.cudnn_fwd(q, kk, vv, BlockMask(causal=False), scale) for kk, vv in parts]
  lse = jnp.logaddexp(res[0][1], res[1][1])
  o = sum(jnp.exp(l - lse)[..., None] * oo.astype(jnp.float32) for oo, l in res)
  o = o.astype(jnp.bfloat16)
  grads = [gpu.cudnn_bwd(q, kk, vv, o, lse, do, BlockMask(causal=False), scale)
           for kk, vv in parts]
  dq = sum(g[0].astype(jnp.float32) for g in grads)
  dk = jnp.concatenate([g[1] for g in grads], 1)
  dv = jnp.concatenate([g[2] for g in grads], 1)
  full = lambda q, k, v: ops.attention(q, k, v, causal=False, implementation="reference")
  o_full, vjp = jax.vjp(full, *f32(q, k, v))
  g_full = vjp(do.astype(jnp.float32))
  _, lse_full = reference_attention(*f32(q, k, v), segment_ids=jnp.ones((shape.b, s), jnp.int32),
                                    positions=jnp.zeros((shape.b, s), jnp.int32), causal=False,
                                    scale=scale, return_lse=True)
  out["cudnn 2-block combine"] = {"o": _rel(o, o_full), "lse": _rel(lse, lse_full),
                                  **{d: _rel(a, b) for d, a, b in zip(("dq", "dk", "dv"),
                                                                      (dq, dk, dv), g_full)}}
  return out


def bench_one(fn, mesh, s, budget_s, shape: Shape):
  """Median time, TFLOP/s (all devices together) and compiled memory of fn's fwd+bwd at length s.

  Inputs are split along the sequence over the mesh's `sequence` axis when it has one.
  """
  seq = "sequence" if "sequence" in mesh.axis_names else None
  q, k, v, do = jax.device_put(_inputs(s, shape), NamedSharding(mesh, P(None, seq)))
  step = _fwd_bwd(fn)
  with jax.set_mesh(mesh):
    compiled = step.lower(q, k, v, do).compile()
    mem = compiled.memory_analysis()
    mem_bytes = None if mem is None else int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                             + mem.output_size_in_bytes)
    jax.block_until_ready(compiled(q, k, v, do))  # warm-up
    times = []
    t_end = time.perf_counter() + budget_s
    while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 20):
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(q, k, v, do))
      times.append(time.perf_counter() - t0)
  t = statistics.median(times)
  return {"seconds": t, "tflops": fwd_bwd_flops(s, shape) / t / 1e12, "memory_bytes": mem_bytes,
          "temp_bytes": None if mem is None else int(mem.temp_size_in_bytes), "reps": len(times)}


def pyplot():
  """matplotlib.pyplot on the Agg backend, or None (said once) where matplotlib is missing."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print("matplotlib missing: no PNG (re-plot with --plot)")
    return None
  return plt


def plot(results, path):
  if (plt := pyplot()) is None:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for name in results["implementations"]:
    rows = [r for r in results["rows"] if r["impl"] == name and "tflops" in r]
    xs = [r["seq"] for r in rows]
    axes[0].plot(xs, [r["tflops"] for r in rows], "o-", label=name)
    axes[1].plot(xs, [r["memory_bytes"] / 2**30 for r in rows], "o-", label=name)
  for ax, title in zip(axes, ("fwd+bwd TFLOP/s (" + FLOP_CONVENTION[:30] + "...)",
                              "compiled memory, GiB")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
  fig.suptitle("attention " + " ".join(f"{k}={v}" for k, v in results["shape"].items())
               + f" bf16 causal on {results['device']}")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print("wrote", path)


def table(results):
  lines = [f"device: {results['device']}  jax {results['jax']}", f"FLOPs: {FLOP_CONVENTION}",
           f"{'impl':<16}{'S':>8}{'ms':>10}{'TFLOP/s':>10}{'vs cudnn':>10}{'mem GiB':>10}"]
  base = {r["seq"]: r["tflops"] for r in results["rows"] if r["impl"] == "cudnn" and "tflops" in r}
  for r in results["rows"]:
    if "tflops" not in r:
      lines.append(f"{r['impl']:<16}{r['seq']:>8}  {r['error'][:70]}")
      continue
    ratio = r["tflops"] / base[r["seq"]] if r["seq"] in base else float("nan")
    mem = r["memory_bytes"] / 2**30 if r["memory_bytes"] is not None else float("nan")
    lines.append(f"{r['impl']:<16}{r['seq']:>8}{r['seconds'] * 1e3:>10.1f}{r['tflops']:>10.1f}"
                 f"{ratio:>10.1%}{mem:>10.2f}")
  return "\n".join(lines)


def _shape_arg(ap: argparse.ArgumentParser, text: str) -> Shape:
  """--shape B,N,K,H as a Shape, or an argparse error that says what was expected."""
  parts = text.split(",")
  if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
    ap.error(f"--shape {text!r}: expected four positive integers B,N,K,H, e.g. 1,32,8,64")
  shape = Shape(*(int(p) for p in parts))
  if shape.n % shape.k:
    ap.error(f"--shape {text!r}: query heads N={shape.n} must be a multiple of kv heads "
             f"K={shape.k}")
  return shape


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default="bench_out")
  ap.add_argument("--sizes", default="8192,32768,131072")
  ap.add_argument("--impls", default="cudnn,gpu,gpu(positions),ring1(gpu),blockwise")
  ap.add_argument("--budget", type=float, default=4.0, help="seconds of timing per cell")
  ap.add_argument("--shape", default="1,32,8,128",
                  help="batch, query heads, kv heads, head dim (default 1,32,8,128)")
  ap.add_argument("--plot", help="re-plot a results JSON and exit")
  args = ap.parse_args(argv)
  shape = _shape_arg(ap, args.shape)
  if args.plot:
    results = json.load(open(args.plot))
    print(table(results))
    plot(results, os.path.splitext(args.plot)[0] + ".png")
    return
  os.makedirs(args.out, exist_ok=True)
  fns, mesh1 = _fns()
  names = args.impls.split(",")
  results = {"device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
             "flop_convention": FLOP_CONVENTION,
             "shape": {"B": shape.b, "N": shape.n, "K": shape.k, "H": shape.h},
             "implementations": names, "rows": []}
  try:
    results["parity"] = parity({n: fns[n] for n in names}, mesh1, shape)
  except Exception as e:
    results["parity"] = {"combine": {"error": f"{type(e).__name__}: {str(e)[:300]}"}}
  print("parity (relative error vs f32 reference):", flush=True)
  for name, errs in results["parity"].items():
    print(f"  {name:<24}" + " ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in errs.items()), flush=True)
  for s in [int(x) for x in args.sizes.split(",")]:
    for name in names:
      t0 = time.perf_counter()
      try:
        row = {"impl": name, "seq": s, **bench_one(fns[name], mesh1, s, args.budget, shape)}
      except Exception as e:  # report OOM / unsupported cells in the table instead of dying
        row = {"impl": name, "seq": s, "error": f"{type(e).__name__}: {e}"}
      results["rows"].append(row)
      print(f"[{time.perf_counter() - t0:6.1f}s] {row}", flush=True)
      with open(os.path.join(args.out, "attention_bench.json"), "w") as f:
        json.dump(results, f, indent=1)
  print(table(results))
  plot(results, os.path.join(args.out, "attention_bench.png"))


if __name__ == "__main__":
  sys.exit(main())
