"""Prompt building of the eval suite: CPU seconds per (task, length) piece, and how long the
prompts come out against the length's budget; no model.

Building a piece's prompts (fitting the haystack to the tokenizer, tokenizing) is CPU work that
`python -m longjax.eval` either does before each piece's generation (`--prompt-workers 0`) or
overlaps with it in worker processes. This measures it in one process, piece by piece:
  PYTHONPATH=. .venv/bin/python experiments/bench/eval_prompts.py --tokenizer smollm2 \
      --heldout runs/wiki16k/heldout/eltec_eng_novels_200k.jsonl.gz --lengths 4k,8k,16k \
      --tasks ruler,json_kv --samples 100 --out experiments/bench/results/eval_prompts_cpu2.json
Prints the fit (units search) seconds, each piece's seconds and the sum per length, and per
piece the prompts' tokens (mean, min) against the budget (length - tokens to generate), the
share of prompts under 90% of it and of examples that gave up haystack units to fit (RULER's
back-off by a fixed step); writes them as JSON with --out.
"""

import argparse
import json
import time

import numpy as np

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
            "pieces": {}, "prompt_tokens": {}}
  for n in lengths:
    for name in names:
      t = time.perf_counter()
      examples, prompts = generator.build(tasks[name], n, args.samples)
      key = f"{name}@{n}"
      result["pieces"][key] = round(time.perf_counter() - t, 2)
      result["prompt_tokens"][key] = _lengths(examples, prompts, generator.units(tasks[name], n),
                                              n - tasks[name].tokens_to_generate)
      p = result["prompt_tokens"][key]
      print(f"{key}: {result['pieces'][key]:.2f} s; prompt tokens mean {p['mean']:.0f} min "
            f"{p['min']} of budget {p['budget']}, {p['under_90pct']:.0%} under 90% of it, "
            f"{p['backed_off']:.0%} backed off", flush=True)
  result["seconds_by_length"] = {
      n: round(sum(v for k, v in result["pieces"].items() if k.endswith(f"@{n}")), 1)
      for n in lengths}
  result["seconds"] = round(sum(result["pieces"].values()), 1)
  print(json.dumps({k: result[k] for k in ("fit_seconds", "seconds_by_length", "seconds")}))
  if args.out:
    write_json(args.out, result)


def _lengths(examples, prompts, searched_units: int, budget: int) -> dict:
  """Prompt token counts of one piece against its budget."""
  tokens = np.array([len(p) for p in prompts])
  return {"budget": budget, "mean": float(tokens.mean()), "min": int(tokens.min()),
          "max": int(tokens.max()), "under_90pct": float(np.mean(tokens < 0.9 * budget)),
          "backed_off": float(np.mean([e.num_units < searched_units for e in examples]))}


if __name__ == "__main__":
  main()
