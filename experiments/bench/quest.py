"""Quest throughput: query prediction (T5-base shape, GPU) and RAKE + indexing (CPU).

Query prediction (one H100, random weights are enough for throughput):
  PYTHONPATH=. python experiments/bench/quest.py predict --docs 16384 --batch 512 1024
Each document is one 320-token segment; decoding is top-p 0.95 sampling for up to 64 tokens
(random weights rarely emit EOS, so nearly every row runs all 64 steps: the worst case).

RAKE + keywords + inverted index + split-ratio weights (this machine, no accelerator):
  .venv/bin/python experiments/bench/quest.py rake --docs 200000
Plot: python experiments/bench/quest.py plot experiments/bench/results/quest_predict_h100_*.json \
        --png experiments/bench/results/quest_predict_h100.png
Expect: predict >= 1,000 docs/s on an H100 (the paper's group reports ~79 docs/s overall);
RAKE + indexing tens of thousands of docs/s per core.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def bench_predict(args) -> list[dict]:
  import jax
  from flax import nnx
  from longjax.models.t5 import T5, T5Config
  from longjax.models.t5_generate import DecodeConfig
  from longjax.synth.methods.quest.predict import T5QueryPredictor

  print(f"devices: {jax.devices()}", flush=True)
  cfg = T5Config.v1_1_base(dtype=args.dtype, param_dtype=args.dtype)
  model = T5(cfg, rngs=nnx.Rngs(0))
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
  rng = np.random.default_rng(0)
  rows = [(i, 0, list(rng.integers(2, cfg.vocab_size, size=args.input_tokens - 1)) + [1])
          for i in range(args.docs)]
  results = []
  modes = (("top_p", DecodeConfig(max_new_tokens=args.new_tokens, top_p=0.95)),
           ("greedy", DecodeConfig(max_new_tokens=args.new_tokens, greedy=True)))
  for decode_name, decode in modes:
    if decode_name not in args.decode:
      continue
    for batch in args.batch:
      pred = T5QueryPredictor(model, tokenizer=None, batch_size=batch,
                              max_input_tokens=args.input_tokens, decode=decode)
      t0 = time.perf_counter()
      pred.generate_ids(rows[:batch], seed=0)  # compile + warm up
      compile_s = time.perf_counter() - t0
      times, lens = [], []
      for rep in range(args.repeats):
        t0 = time.perf_counter()
        out = pred.generate_ids(rows, seed=rep + 1)
        times.append(time.perf_counter() - t0)
        lens.append(np.mean([len(o) for o in out]))
      dt = float(np.median(times))
      r = {"decode": decode_name, "batch": batch, "docs": args.docs, "seconds": dt,
           "docs_per_s": args.docs / dt, "compile_s": compile_s,
           "mean_new_tokens": float(np.mean(lens)), "params": int(n_params),
           "device": str(jax.devices()[0].device_kind), "dtype": args.dtype}
      results.append(r)
      print(json.dumps(r), flush=True)
  return results


def _synthetic_queries(n_docs: int, seed: int) -> list[list[str]]:
  """Query-like strings over a Zipf vocabulary, 1-3 per document, with stopwords mixed in."""
  rng = np.random.default_rng(seed)
  vocab = [f"w{i}" for i in range(20000)]
  glue = ["what is", "how to", "the", "of", "for", "and", "in", "?"]
  out = []
  for _ in range(n_docs):
    qs = []
    for _ in range(rng.integers(1, 4)):
      words = [vocab[min(int(z), 19999)] for z in rng.zipf(1.3, size=rng.integers(3, 9))]
      cut = rng.integers(1, len(words))
      qs.append(" ".join([glue[rng.integers(2)]] + words[:cut] + [glue[rng.integers(2, 8)]]
                         + words[cut:]))
    out.append(qs)
  return out


def bench_rake(args) -> dict:
  from longjax.synth.methods.quest import index as qindex
  from longjax.synth.methods.quest import keywords as qkw

  queries = _synthetic_queries(args.docs, 0)
  doc_ids = np.arange(args.docs, dtype=np.int64)
  n_tokens = np.random.default_rng(1).integers(50, 2000, size=args.docs)
  t0 = time.perf_counter()
  candidates = [qkw.doc_candidates(q) for q in queries]
  t_rake = time.perf_counter() - t0
  t0 = time.perf_counter()
  chosen = qkw.assign_keywords(doc_ids, candidates, seed=0, blacklist=qkw.load_blacklist(),
                               auto_top_n=0)
  inv = qindex.build_index(doc_ids, chosen.keywords, n_tokens)
  qindex.split_weights(inv, split_ratio=0.2)
  t_index = time.perf_counter() - t0
  r = {"docs": args.docs, "rake_s": t_rake, "index_s": t_index,
       "docs_per_s": args.docs / (t_rake + t_index), "keywords": len(inv.keywords),
       "keywordless_docs": int(chosen.no_keyword.sum())}
  print(json.dumps(r), flush=True)
  return r


def plot_results(args) -> None:
  """docs/s by batch size and decoding from `predict --out` JSON files, as a PNG."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  rows = [r for path in args.results for r in json.load(open(path))]
  fig, ax = plt.subplots(figsize=(6, 4))
  for path in args.results:
    for decode in ("top_p", "greedy"):
      pts = sorted((r["batch"], r["docs_per_s"]) for r in json.load(open(path))
                   if r["decode"] == decode)
      if pts:
        ax.plot(*zip(*pts), marker="o", label=f"{decode} ({path.split('/')[-1]})")
  ax.axhline(1000, color="gray", ls="--", label="target 1,000 docs/s")
  ax.set_xscale("log", base=2)
  ax.set_ylim(bottom=0)
  ax.set_xlabel("batch (segments)")
  ax.set_ylabel("documents / s")
  ax.set_title(f"T5-v1.1-base query prediction, {rows[0]['device'] if rows else ''}")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(args.png, dpi=100)
  print(f"wrote {args.png}")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  sub = p.add_subparsers(dest="part", required=True)
  pp = sub.add_parser("predict")
  pp.add_argument("--docs", type=int, default=16384)
  pp.add_argument("--batch", type=int, nargs="+", default=[512, 1024])
  pp.add_argument("--input_tokens", type=int, default=320)
  pp.add_argument("--new_tokens", type=int, default=64)
  pp.add_argument("--dtype", default="bfloat16")
  pp.add_argument("--repeats", type=int, default=2)
  pp.add_argument("--decode", nargs="+", default=["top_p", "greedy"])
  pp.add_argument("--out", default=None, help="write results JSON here")
  pr = sub.add_parser("rake")
  pr.add_argument("--docs", type=int, default=200000)
  pr.add_argument("--out", default=None)
  pl = sub.add_parser("plot")
  pl.add_argument("results", nargs="+", help="JSON files written by `predict --out`")
  pl.add_argument("--png", default="quest_predict.png")
  args = p.parse_args()
  if args.part == "plot":
    plot_results(args)
    return
  res = bench_predict(args) if args.part == "predict" else bench_rake(args)
  if args.out:
    with open(args.out, "w") as f:
      json.dump(res, f, indent=2)


if __name__ == "__main__":
  main()
