"""`python -m longjax.synth {build,preview}`: build a synthesis index; preview a Task's samples.

    python -m longjax.synth build --corpus default --out /tmp/idx --embedder minilm \
        --methods standard,knn,iclm,nextlong --lengths 8k
    python -m longjax.synth build --corpus my.jsonl.gz --out idx --methods standard
    python -m longjax.synth preview longjax_default_nextlong_8k --index-dir /tmp/idx

Bad input (missing corpus, malformed records, unknown method or embedder) prints one clear
`error:` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence


def _methods_arg(text: str) -> tuple[str, ...]:
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  if not names:
    raise argparse.ArgumentTypeError("expected a comma-separated list of methods")
  return names


def _lengths_arg(text: str) -> tuple[int, ...]:
  from longjax.synth.methods.base import parse_length  # pylint: disable=import-outside-toplevel
  try:
    return tuple(parse_length(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _config_arg(text: str) -> dict[str, Any]:
  """JSON object `{method: {option: value}}`, inline or `@file.json`."""
  try:
    raw = Path(text[1:]).read_text() if text.startswith("@") else text
    value = json.loads(raw)
  except (OSError, json.JSONDecodeError) as e:
    raise argparse.ArgumentTypeError(f"--config {text!r}: {e}") from None
  if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
    raise argparse.ArgumentTypeError("--config must be a JSON object {method: {option: value}}")
  return value


def make_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m longjax.synth",
      description="Long-context data synthesis: build the corpus-wide index, preview samples.")
  sub = parser.add_subparsers(dest="command", required=True)
  b = sub.add_parser("build", help="ingest a corpus and build each method's index",
                     description="Ingest a corpus into the document store (dedup, skips with "
                     "reasons in corpus/manifest.json), then run each method's corpus-wide build. "
                     "Resumable: finished stages are skipped.")
  b.add_argument("--corpus", required=True,
                 help="'default' (bundled BBC news), a .jsonl(.gz)/.parquet/.arrow file, or a "
                 "directory (dataset dump or plain text files)")
  b.add_argument("--out", required=True, type=Path, help="index directory to write")
  b.add_argument("--methods", type=_methods_arg, default=None,
                 help="comma-separated methods to build (default: every registered method; "
                 "pass 'none' for the corpus store only)")
  b.add_argument("--embedder", default=None,
                 help="minilm (all-MiniLM-L6-v2 in JAX) or hashing[-DIM] (tests only); required "
                 "by knn, iclm and nextlong, never defaulted")
  b.add_argument("--tokenizer", default="smollm2",
                 help="smollm2 (bundled), an HF tokenizer dir, a .gguf or a SentencePiece .model "
                 "(default: smollm2)")
  b.add_argument("--lengths", type=_lengths_arg, default=(8192,),
                 help="target sample lengths for length-dependent plans, e.g. 8k,64k (default 8k)")
  b.add_argument("--max-chars", type=int, default=None,
                 help="skip documents longer than this many characters (default 1,000,000)")
  b.add_argument("--text-field", default="text", help="text field/column name (default: text)")
  b.add_argument("--config", type=_config_arg, default={},
                 help="per-method options as JSON {method: {option: value}} or @file.json")
  p = sub.add_parser("preview", help="print the structure of a Task's samples",
                     description="Show which documents/chunks make a sample and where the "
                     "boundaries fall.")
  p.add_argument("task", help="task name, e.g. longjax_default_nextlong_8k")
  p.add_argument("--index-dir", type=Path, required=True, help="directory `build --out` wrote")
  p.add_argument("--tokenizer", default="smollm2", help="as for build (default: smollm2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--num", type=int, default=1, help="number of samples to show")
  p.add_argument("--shard", type=int, default=0)
  p.add_argument("--num-shards", type=int, default=1)
  return parser


def _build(args: argparse.Namespace) -> int:
  from longjax.synth import build  # pylint: disable=import-outside-toplevel
  from longjax.synth.corpus import DEFAULT_MAX_CHARS  # pylint: disable=import-outside-toplevel
  if args.methods is None:
    from longjax.synth.methods import METHODS  # pylint: disable=import-outside-toplevel
    methods = tuple(METHODS)
  else:
    methods = () if args.methods == ("none",) else args.methods
  build.default_log_setup()
  opts = build.BuildOptions(
      corpus=args.corpus, out=args.out, methods=methods, embedder=args.embedder,
      tokenizer=args.tokenizer, lengths=args.lengths,
      max_chars=DEFAULT_MAX_CHARS if args.max_chars is None else args.max_chars,
      text_field=args.text_field, config=args.config)
  manifest = build.run_build(opts)
  c, done = manifest["counts"]["corpus"], manifest["counts"]["methods_done"]
  print(f"built {args.out}: {c['kept']} documents ({c['read']} read, skipped "
        f"{c['skipped'] or 'none'}); methods: {', '.join(done) or '-'}")
  return 0


def _preview(args: argparse.Namespace) -> int:
  from longjax.models.tokenizer import load_tokenizer_spec  # pylint: disable=import-outside-toplevel,line-too-long
  from longjax.synth import preview  # pylint: disable=import-outside-toplevel
  tokenizer = load_tokenizer_spec(args.tokenizer)
  print(preview.preview(args.task, index_dir=args.index_dir, tokenizer=tokenizer,
                        seed=args.seed, num=args.num, shard=args.shard,
                        num_shards=args.num_shards))
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  args = make_parser().parse_args(argv)
  from longjax.synth.corpus import CorpusError  # pylint: disable=import-outside-toplevel
  try:
    return _build(args) if args.command == "build" else _preview(args)
  except (CorpusError, OSError, ValueError) as e:  # OSError: names the path (--out a file...)
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
