"""Export throughput per method: rows/s and tokens/s of `python -m longjax.tasks export` (CPU).

Run on a built index (e.g. `python -m longjax.synth build --corpus default --out /tmp/idx8k
--embedder hashing-64 --methods standard,knn,iclm,nextlong --lengths 8k`, ~2 min):
  PYTHONPATH=. .venv/bin/python experiments/bench/export_methods.py --index-dir /tmp/idx8k \
      --length 8k --tokens 1m --out /tmp/export_bench
Prints one JSON line per Task: the export's wall time (synthesis + seqio packing + writing +
the manifest pass), rows/s, tokens/s, bytes on disk. Single process, one shard per Task.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import longjax.tasks
from longjax.io import parse_length
from longjax.synth.methods.task_names import IndexInfo, task_name
from longjax.tasks import export


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--index-dir", type=Path, required=True)
  parser.add_argument("--length", type=parse_length, default=8192)
  parser.add_argument("--tokens", type=parse_length, default=1 << 20)
  parser.add_argument("--methods", default="standard,knn,iclm,nextlong")
  parser.add_argument("--mix", action="store_true", help="export the _mix Mixtures instead")
  parser.add_argument("--out", type=Path, default=Path("/tmp/export_bench"))
  args = parser.parse_args()
  longjax.tasks.register(args.index_dir)
  corpus = IndexInfo.read(args.index_dir).corpus
  for method in args.methods.split(","):
    name = task_name(corpus, method, args.length) + ("_mix" if args.mix else "")
    out = args.out / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = export.export(export.ExportOptions(name, length=args.length, tokens=args.tokens,
                                                  out=out, shards=1),
                             progress=lambda rows, **_: rows)
    dt = time.perf_counter() - t0
    counts = manifest["counts"]
    print(json.dumps({"task": name, "seconds": round(dt, 1),
                      "rows_per_s": round(counts["rows"] / dt, 2),
                      "tokens_per_s": round(counts["tokens"] / dt),
                      "bytes": sum(s["bytes"] for s in manifest["shards"]),
                      "unique_documents": counts["unique_documents"]}), flush=True)


if __name__ == "__main__":
  main()
