"""Synthesis-method throughput: build time per method and streaming tokens/s per Task (CPU).

Run (default corpus, SmolLM2 tokenizer, MiniLM embeddings; ~15-30 min on 2 busy cores, mostly
MiniLM embedding, which the later methods reuse):
  PYTHONPATH=. .venv/bin/python experiments/bench/synthesis_methods.py --index-dir /tmp/bench_idx \
      --corpus default --embedder minilm --length 8k
  # streaming only, on an index built earlier, plus NExtLong's discard rate on shard 0 of 6:
  PYTHONPATH=. .venv/bin/python experiments/bench/synthesis_methods.py --index-dir /tmp/idx \
      --length 8k --no-build --discard-shards 6
Writes `<out>/synthesis_methods.json` and `<out>/synthesis_methods.png`.

Build: each method is built on its own (`synth build --methods <m>`), in order, into the same
index dir, so the first embedding method pays for the document embeddings and the others reuse
them; NExtLong additionally embeds its chunks. Streaming: `examples(...)` of shard 0/1, seed 0,
for up to `--samples` samples (the numpy side of a SeqIO Task, without TensorFlow), with
NExtLong's discard rate and mean k, p.
"""

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from longjax.io import parse_length, read_manifest, versions, write_json
from longjax.models.tokenizer import load_tokenizer_spec
from longjax.synth import build
from longjax.synth.methods import METHODS


def time_builds(args, methods: list[str]) -> dict:
  out = {}
  for method in methods:
    opts = build.BuildOptions(corpus=args.corpus, out=args.index_dir, methods=(method,),
                              embedder=args.embedder if method != "standard" else None,
                              tokenizer=args.tokenizer, lengths=(args.length,))
    t0 = time.perf_counter()
    build.run_build(opts, log_fn=logging.getLogger("bench").info)
    out[method] = round(time.perf_counter() - t0, 2)
    print(f"build {method}: {out[method]:.1f} s", flush=True)
  return out


def time_stream(args, methods: list[str]) -> dict:
  tok = load_tokenizer_spec(args.tokenizer)
  out = {}
  for method in methods:
    t0 = time.perf_counter()
    n = 0
    ks, ps, complete = [], [], []
    for ex in METHODS[method].examples(args.index_dir, length=args.length, tokenizer=tok,
                                       shard=0, num_shards=1, seed=0):
      assert len(ex["targets"]) == args.length
      if method == "nextlong":
        prov = json.loads(ex["provenance"])
        ks.append(prov["k"])
        ps.append(prov["p"])
        complete.append(prov["meta_chunks_complete"] / prov["p"])
      n += 1
      if n == args.samples:
        break
    dt = time.perf_counter() - t0
    row = {"samples": n, "seconds": round(dt, 2), "tokens_per_s": round(n * args.length / dt)}
    if method == "nextlong":
      tried = len(np.load(_meta_docs(args)))
      row.update(mean_k=float(np.mean(ks)), mean_p=float(np.mean(ps)),
                 meta_chunks_complete_fraction=float(np.mean(complete)),
                 meta_documents=tried)
    out[method] = row
    print(f"stream {method}: {row}", flush=True)
  return out


def _meta_docs(args) -> Path:
  """NExtLong's meta-documents at `--length` (`nextlong.PLANS`)."""
  return args.index_dir / "nextlong" / "plans" / f"L{args.length}.meta_docs.npy"


def nextlong_discards(args) -> dict:
  """Runs shard 0 of `--discard-shards` to the end: discard rate and surviving meta-chunks."""
  tok = load_tokenizer_spec(args.tokenizer)
  meta_docs = len(np.load(_meta_docs(args)))
  tried = meta_docs // args.discard_shards  # shard_range(n, 0, N) holds n // N items
  complete = []
  for ex in METHODS["nextlong"].examples(args.index_dir, length=args.length, tokenizer=tok,
                                         shard=0, num_shards=args.discard_shards, seed=0):
    prov = json.loads(ex["provenance"])
    complete.append(prov["meta_chunks_complete"] == prov["p"])
  config = read_manifest(args.index_dir / "nextlong")["config"]
  row = {"meta_documents": tried, "samples": len(complete),
         "discarded_fraction": round(1 - len(complete) / tried, 4),
         "all_meta_chunks_inside_T": round(float(np.mean(complete)), 4),
         "overgen": config["overgen"], "exact_budget": config["exact_budget"]}
  print(f"nextlong discards: {row}", flush=True)
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--index-dir", type=Path, required=True)
  parser.add_argument("--corpus", default="default")
  parser.add_argument("--embedder", default="minilm")
  parser.add_argument("--tokenizer", default="smollm2")
  parser.add_argument("--length", default="8k")
  parser.add_argument("--methods", default="standard,knn,iclm,nextlong")
  parser.add_argument("--samples", type=int, default=50)
  parser.add_argument("--no-build", action="store_true")
  parser.add_argument("--discard-shards", type=int, default=0,
                      help="also run NExtLong shard 0 of N to the end for its discard rate")
  parser.add_argument("--out", type=Path, default=Path("experiments/bench/results"))
  args = parser.parse_args()
  args.length = parse_length(args.length)
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  methods = args.methods.split(",")
  result = {"length": args.length, "tokenizer": args.tokenizer, "corpus": args.corpus,
            "embedder": args.embedder, "versions": versions()}
  if not args.no_build:
    result["build_seconds"] = time_builds(args, methods)
  docs = read_manifest(args.index_dir / "corpus")["counts"]["kept"]
  result["documents"] = docs
  result["stream"] = time_stream(args, methods)
  if args.discard_shards:
    result["nextlong_discards"] = nextlong_discards(args)
  args.out.mkdir(parents=True, exist_ok=True)
  write_json(args.out / "synthesis_methods.json", result)

  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  panels = 2 if "build_seconds" in result else 1
  fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.5), squeeze=False)
  axes[0][0].bar(methods, [result["stream"][m]["tokens_per_s"] for m in methods])
  axes[0][0].set_title(f"streaming tokens/s (L={args.length}, 1 process)")
  if panels == 2:
    axes[0][1].bar(methods, [docs / result["build_seconds"][m] for m in methods])
    axes[0][1].set_title(f"build documents/s ({docs} docs)")
    axes[0][1].set_yscale("log")
  fig.tight_layout()
  fig.savefig(args.out / "synthesis_methods.png", dpi=120)
  print(f"wrote {args.out / 'synthesis_methods.json'} and .png")


if __name__ == "__main__":
  main()
