"""`python -m longjax.synth {build,preview,inspect,embed-inputs,embed-table}`: build an index;
preview; diagnose the data; embed on another machine (synth/embed_table.py).

    python -m longjax.synth build --corpus default --out /tmp/idx --embedder minilm \
        --methods standard,knn,iclm,nextlong --lengths 8k
    python -m longjax.synth build --corpus my.jsonl.gz --out idx --methods standard
    python -m longjax.synth preview longjax_default_nextlong_8k --index-dir /tmp/idx
    python -m longjax.synth inspect --index-dir /tmp/idx --length 8k --samples 4 --out insp

Bad input (missing corpus, malformed records, unknown method or embedder) prints one clear
`error:` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence


def _methods_arg(text: str) -> tuple[str, ...]:
  names = tuple(n.strip() for n in text.split(",") if n.strip())
  if not names:
    raise argparse.ArgumentTypeError("expected a comma-separated list of methods")
  return names


def _lengths_arg(text: str) -> tuple[int, ...]:
  from longjax.io import parse_length  # pylint: disable=import-outside-toplevel
  try:
    return tuple(parse_length(t) for t in text.split(",") if t.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _length_arg(text: str) -> int:
  lengths = _lengths_arg(text)
  if len(lengths) != 1:
    raise argparse.ArgumentTypeError(f"expected one length like 2048 or 2k, got {text!r}")
  return lengths[0]


def _ints_arg(text: str) -> tuple[int, ...]:
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


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
  b.add_argument("--embedding-table", type=Path, default=None, metavar="DIR",
                 help="read the --embedder's vectors from a table computed elsewhere "
                 "(embed-inputs, then embed-table on an accelerator)")
  b.add_argument("--shards", type=int, default=1,
                 help="ScaNN searchers per nearest-neighbour index, each over a contiguous "
                 "range of rows; queries search every shard and the lists are merged exactly "
                 "(with --runner, one Beam task per shard and span of queries). Exact shards "
                 "give the lists of one index (default 1)")
  b.add_argument("--runner", default=None,
                 help="run the per-document, per-keyword and per-shard stages as Apache Beam "
                 "pipelines on this runner "
                 "(DirectRunner, DataflowRunner, FlinkRunner, SparkRunner); any further "
                 "--option is passed to Beam, e.g. --direct_num_workers=2 "
                 "--direct_running_mode=multi_processing (default: no Beam, one process)")
  e = sub.add_parser("embed-inputs", help="word-piece ids of every text a build embeds",
                     description="Write the exact embedder inputs (documents and NExtLong "
                     "chunks) of an index whose corpus store exists (`build --methods none`), "
                     "for `embed-table` on another machine.")
  e.add_argument("--index-dir", type=Path, required=True)
  e.add_argument("--embedder", required=True, help="minilm or minilm-<max tokens>")
  e.add_argument("--chunk-sizes", type=_ints_arg, default=(2048,),
                 help="NExtLong chunk sizes in characters to include (default 2048; '' for none)")
  e.add_argument("--out", type=Path, required=True, help="table directory to write")
  t = sub.add_parser("embed-table", help="compute the vectors of embed-inputs' output",
                     description="On an accelerator: embed DIR/inputs.npz into float16 shards "
                     "(each under 16 MiB) that `build --embedding-table DIR` reads.")
  t.add_argument("table", type=Path, help="the directory embed-inputs wrote")
  t.add_argument("--embedder", required=True, help="as for embed-inputs")
  t.add_argument("--model-path", type=Path, default=None,
                 help="the embedder's checkpoint directory (default: the installed package)")
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
  i = sub.add_parser("inspect", help="per-method data diagnostics before training",
                     description="On the first samples of each built method: tokens, documents "
                     "and boundary tokens per sample, adjacent-document similarity and the "
                     "long-range dependency score (NLL of the last quarter with only the last c "
                     "tokens of context minus with the full context, under a reference LM), each "
                     "with a 95% bootstrap interval. Writes OUT/inspect.json and inspect.png.")
  i.add_argument("--index-dir", type=Path, help="directory `build --out` wrote")
  i.add_argument("--length", type=_length_arg,
                 help="sample length, one the index was built for (e.g. 2048 or 2k)")
  i.add_argument("--select-only", action="store_true",
                 help="pick the samples and their structure, write OUT/selection.json and "
                 "OUT/samples.npz, and stop (score them with --score where the model fits)")
  i.add_argument("--score", type=Path, default=None, metavar="DIR",
                 help="score the samples a --select-only run wrote to DIR (no index needed)")
  i.add_argument("--model", default=None,
                 help="reference LM: smollm2 (bundled SmolLM2-135M) or an HF Llama checkpoint "
                 "directory with its tokenizer (default: smollm2; with --score, the selection's, "
                 "or another model with the same tokenizer)")
  i.add_argument("--samples", type=int, default=None,
                 help="samples per method (default 3: ~35 s per method at 2k on 2 idle CPU cores)")
  i.add_argument("--contexts", type=_ints_arg, default=None,
                 help="truncated context lengths c in tokens (default 512,1024)")
  i.add_argument("--methods", type=_methods_arg, default=None,
                 help="comma-separated methods (default: every method the index built)")
  i.add_argument("--seed", type=int, default=0)
  i.add_argument("--prefix", type=_length_arg, default=None,
                 help="score only each sample's first PREFIX tokens (e.g. 8k: samples longer "
                 "than the reference model's window; the structure columns stay whole-sample)")
  i.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                 help="the reference model's dtype (bfloat16 on a GPU: fused attention)")
  i.add_argument("--out", type=Path, default=None,
                 help="output directory (default: inspect_<length>)")
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
      text_field=args.text_field, config=args.config, embedding_table=args.embedding_table,
      runner=args.runner, pipeline_options=args.pipeline_options, shards=args.shards)
  manifest = build.run_build(opts)
  c, done = manifest["counts"]["corpus"], manifest["counts"]["methods_done"]
  print(f"built {args.out}: {c['kept']} documents ({c['read']} read, skipped "
        f"{c['skipped'] or 'none'}); methods: {', '.join(done) or '-'}")
  return 0


def _minilm(name: str, model_path: Path | None = None):
  from longjax.synth.embed import MiniLMEmbedder, make_embedder  # pylint: disable=import-outside-toplevel,line-too-long
  embedder = make_embedder(name, model_path=model_path)
  if not isinstance(embedder, MiniLMEmbedder):
    raise ValueError(f"--embedder {name}: only MiniLM embedders run elsewhere (others are cheap "
                     "enough to run in the build)")
  return embedder


def _embed_inputs(args: argparse.Namespace) -> int:
  from longjax.progress import console  # pylint: disable=import-outside-toplevel
  from longjax.synth import embed_table  # pylint: disable=import-outside-toplevel
  texts = embed_table.index_texts(args.index_dir, args.chunk_sizes, progress=console)
  counts = embed_table.write_inputs(texts, _minilm(args.embedder), args.out, progress=console)
  print(f"wrote {args.out / embed_table.INPUTS}: {counts['texts']} texts, "
        f"{counts['word_pieces']} word pieces")
  return 0


def _embed_table(args: argparse.Namespace) -> int:
  from longjax.progress import console  # pylint: disable=import-outside-toplevel
  from longjax.synth import embed_table  # pylint: disable=import-outside-toplevel
  counts = embed_table.compute_table(args.table, _minilm(args.embedder, args.model_path),
                                     progress=console)
  print(f"wrote {counts['shards']} shards of {counts['texts']} vectors under {args.table}")
  return 0


def _preview(args: argparse.Namespace) -> int:
  from longjax.models.tokenizer import load_tokenizer_spec  # pylint: disable=import-outside-toplevel,line-too-long
  from longjax.synth import preview  # pylint: disable=import-outside-toplevel
  tokenizer = load_tokenizer_spec(args.tokenizer)
  print(preview.preview(args.task, index_dir=args.index_dir, tokenizer=tokenizer,
                        seed=args.seed, num=args.num, shard=args.shard,
                        num_shards=args.num_shards))
  return 0


def _inspect(args: argparse.Namespace, argv: Sequence[str]) -> int:
  from longjax.progress import console  # pylint: disable=import-outside-toplevel
  from longjax.synth import build, inspect  # pylint: disable=import-outside-toplevel
  from longjax.io import format_length  # pylint: disable=import-outside-toplevel
  build.default_log_setup()
  if args.score is None and (args.index_dir is None or args.length is None):
    raise ValueError("inspect needs --index-dir and --length (or --score DIR)")
  if args.select_only and args.prefix is not None:
    raise ValueError("--prefix cuts the samples when they are scored; pass it with --score, "
                     "not with --select-only")
  if args.score is not None:
    result, tokens = inspect.read_selection(args.score)
    if args.model is not None:
      inspect.score_under(result, args.model)
  else:
    result, tokens = inspect.select_samples(
        args.index_dir, length=args.length, model=args.model or "smollm2",
        samples=inspect.DEFAULT_SAMPLES if args.samples is None else args.samples,
        methods=args.methods, seed=args.seed)
  out = args.out or args.score or Path(f"inspect_{format_length(result['length'])}")
  if args.select_only:
    inspect.write_selection(result, tokens, out)
    print(inspect.markdown_table(result))
    print(f"\nwrote {out / 'selection.json'} and {out / 'samples.npz'}; score them with "
          f"`python -m longjax.synth inspect --score {out}`")
    return 0
  result = inspect.score_samples(
      result, tokens, contexts=inspect.DEFAULT_CONTEXTS if args.contexts is None else args.contexts,
      dtype=args.dtype, prefix=args.prefix, progress=console)
  result["command"] = "python -m longjax.synth " + shlex.join(argv)
  out = inspect.write_outputs(result, out)
  print(inspect.markdown_table(result))
  print(f"\nwrote {out / 'inspect.json'} and {out / 'inspect.png'} "
        f"({result['seconds']['total']:.0f} s)")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  parser = make_parser()
  args, beam_options = parser.parse_known_args(argv)
  if beam_options and getattr(args, "runner", None) is None:
    parser.error(f"unrecognized arguments: {' '.join(beam_options)} (Beam pipeline options "
                 "are accepted only by `build --runner ...`)")
  args.pipeline_options = tuple(beam_options)
  from longjax.documents import CorpusError  # pylint: disable=import-outside-toplevel
  commands = {"build": _build, "preview": _preview, "embed-inputs": _embed_inputs,
              "embed-table": _embed_table,
              "inspect": lambda a: _inspect(a, argv)}
  try:
    return commands[args.command](args)
  except (CorpusError, OSError, ValueError) as e:  # OSError: names the path (--out a file...)
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
