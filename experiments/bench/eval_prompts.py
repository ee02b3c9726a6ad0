"""Prompt building of the eval suite: CPU seconds per (task, length) piece, no model.

Building a piece's prompts (fitting the haystack to the tokenizer, tokenizing) is CPU work that
`python -m longjax.eval` either does before each piece's generation (`--prompt-workers 0`) or
overlaps with it in worker processes. This measures it in one process, piece by piece:
  PYTHONPATH=. .venv/bin/python experiments/bench/eval_prompts.py --tokenizer smollm2 \
      --heldout runs/wiki16k/heldout/eltec_eng_novels_200k.jsonl.gz --lengths 4k,8k,16k \
      --tasks ruler,json_kv --samples 100 --out experiments/bench/results/eval_prompts_cpu2.json
Prints the fit (units search) seconds, each piece's seconds and the sum per length; writes them
as JSON with --out.
"""

import argparse
import json
import time

from longjax.eval import suite
from longjax.eval.heldout import read_heldout
from longjax.eval.task import ExampleGenerator
from longjax.io import parse_length, write_json
from longjax.models.tokenizer import load_tokenizer_spec


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--tokenizer", default="smollm2")
  parser.add_argument("--heldout", default=None, help="held-out .jsonl(.gz) for the haystack")
  parser.add_argument("--lengths", default="4k,8k,16k")
  parser.add_argument("--tasks", default="ruler,json_kv")
  parser.add_argument("--samples", type=int, default=100)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  generator = ExampleGenerator(load_tokenizer_spec(args.tokenizer), seed=42)
  tasks = suite.make_tasks(read_heldout(args.heldout).text_haystack() if args.heldout else None)
  names = suite.expand_task_names(args.tasks)
  lengths = [parse_length(x) for x in args.lengths.split(",")]
  t0 = time.perf_counter()
  for n in lengths:
    for name in names:
      generator.units(tasks[name], n)
  result = {"fit_seconds": round(time.perf_counter() - t0, 2), "samples": args.samples,
            "pieces": {}}
  for n in lengths:
    for name in names:
      t = time.perf_counter()
      generator.build(tasks[name], n, args.samples)
      result["pieces"][f"{name}@{n}"] = round(time.perf_counter() - t, 2)
      print(f"{name}@{n}: {result['pieces'][f'{name}@{n}']:.2f} s", flush=True)
  result["seconds_by_length"] = {
      n: round(sum(v for k, v in result["pieces"].items() if k.endswith(f"@{n}")), 1)
      for n in lengths}
  result["seconds"] = round(sum(result["pieces"].values()), 1)
  print(json.dumps({k: result[k] for k in ("fit_seconds", "seconds_by_length", "seconds")}))
  if args.out:
    write_json(args.out, result)


if __name__ == "__main__":
  main()
