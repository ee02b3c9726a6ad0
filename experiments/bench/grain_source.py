"""Grain source throughput: rows/s and tokens/s of `ArrayRecordSource` on this host's CPUs.

Run (2 CPU cores; writes a synthetic export of random rows first, ~100 MB at the defaults):
  PYTHONPATH=. .venv/bin/python experiments/bench/grain_source.py --length 64k --rows 256 \
      --out /tmp/grain_bench
  # or read an existing export: --data-dir DIR (skips writing)
Expect: far above the trainer's need. The 1B model at 64K on one H200 takes ~3.5 s per 64K-token
step, ~18.7K tokens/s; the goal is >= 10x that (187K tokens/s) with the host's share of CPUs.

Measured per configuration: `source` (Grain read + zstd + decode: what `batches` yields) and
`trainer host work` (the same plus `complete` and the zigzag for 4 sequence shards, as the
trainer's `_host_batches` does before the device transfer). Rows are read with a global shuffle
(random access), one host, the given batch size. A JSON line per configuration.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np

from longjax.io import parse_length
from longjax.train.arrayrecord import ArrayRecordSource, RowFormat
from longjax.train.data import complete, zigzag_batch


def write_synthetic(out: Path, length: int, rows: int, vocab: int, shards: int) -> None:
  """An export of random documents (2-8 per row, last one padded), via the exporter's writer."""
  from longjax.tasks import export  # pylint: disable=import-outside-toplevel  (TF side)
  fmt = RowFormat.make(length, vocab)
  rng = np.random.default_rng(0)

  def rows_of(n):
    for _ in range(n):
      cuts = np.sort(rng.choice(np.arange(1, length), rng.integers(1, 8), replace=False))
      seg = np.searchsorted(cuts, np.arange(length), side="right") + 1
      seg[-rng.integers(0, length // 16):] = 0
      starts = np.r_[0, cuts]
      pos = np.arange(length) - starts[np.maximum(seg, 1) - 1]
      row = {"targets": np.where(seg > 0, rng.integers(3, vocab, length), 0),
             "segment_ids": seg, "positions": np.where(seg > 0, pos, 0)}
      yield row, [{"synthetic": True}] * int(seg.max())
  options = export.ExportOptions("synthetic", length=length, tokens=rows * length, out=out,
                                 shards=shards)
  config = {"task": "synthetic", "length": length, "tokens": rows * length, "rows": rows,
            "seed": 0, "shards": shards, "pack": True, "tokenizer": "random", "vocab_size": vocab}
  plan = export.Plan(options, fmt, shards, config, inputs={})
  for i, name in enumerate(plan.files):
    export.write_shard(out / name, rows_of(export.shard_rows(i, rows, shards)), fmt)
  export.finish_export(plan)


def measure(source: ArrayRecordSource, batch: int, batches: int, host_work: bool) -> dict:
  it = source.batches(start=0, rows=slice(0, batch), global_batch=batch)
  next(it)  # opening the shards and starting the threads are not part of the rate
  t0 = time.perf_counter()
  for _, b in zip(range(batches), it):
    if host_work:
      zigzag_batch(complete(b), 4)
  dt = time.perf_counter() - t0
  rows = batches * batch
  tokens = rows * source.format.length
  return {"rows_per_s": round(rows / dt, 1), "tokens_per_s": round(tokens / dt),
          "seconds": round(dt, 2), "rows": rows}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data-dir", type=Path, help="an existing export (else one is written)")
  parser.add_argument("--out", type=Path, default=Path("/tmp/grain_bench"))
  parser.add_argument("--length", type=parse_length, default=65536)
  parser.add_argument("--rows", type=int, default=256)
  parser.add_argument("--vocab", type=int, default=49152, help="SmolLM2's vocabulary")
  parser.add_argument("--shards", type=int, default=4)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--batches", type=int, default=48)
  parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
  args = parser.parse_args()
  data = args.data_dir
  if data is None:
    data = args.out / f"synthetic_{args.length}"
    if not (data / "manifest.json").exists():
      t0 = time.perf_counter()
      write_synthetic(data, args.length, args.rows, args.vocab, args.shards)
      print(json.dumps({"wrote": str(data), "seconds": round(time.perf_counter() - t0, 1)}))
  t0 = time.perf_counter()
  ArrayRecordSource(data)
  print(json.dumps({"validate_sha256_s": round(time.perf_counter() - t0, 2),
                    "bytes": sum(p.stat().st_size for p in data.glob("*.arrayrecord"))}))
  for threads in args.threads:
    source = ArrayRecordSource(data, verify=False, read_threads=threads, prefetch=max(4, threads))
    for host_work in (False, True):
      result = measure(source, args.batch, args.batches, host_work)
      print(json.dumps({"threads": threads, "trainer_host_work": host_work, **result}),
            flush=True)


if __name__ == "__main__":
  main()
