"""`python -m longjax.tasks export NAME --length L --tokens N --out DIR`: materialize a Task.

    LONGJAX_INDEX_DIRS=/tmp/idx python -m longjax.tasks export longjax_default_knn_8k_mix \
        --length 8k --tokens 16m --out /tmp/knn_8k
    python -m longjax.tasks export longjax_toy_standard_128 --index-dir /tmp/idx \
        --length 128 --tokens 64k --out /tmp/std

Tasks come from the index directories in $LONGJAX_INDEX_DIRS (as for training) and from each
`--index-dir`. `--runner DirectRunner` (or DataflowRunner, ...) writes the shards with Apache
Beam, one shard per element, for large runs. Sizes take k/m/g suffixes (powers of 2).
Re-running a command resumes an interrupted export; a finished one is verified and left as is.
Train on the result with `--gin_file=gin/data/arrayrecord.gin --gin.DATA_DIR="'DIR'"`
(docs/training.md). Bad input prints one `error:` line and exits with status 2.
"""

import argparse
import json
import sys
from pathlib import Path

from longjax.io import parse_length


def _size(text: str) -> int:
  """'64k' -> 65536, '1g' -> 2**30 (parse_length's k/m, plus g for token counts)."""
  t = text.strip().lower()
  try:
    return parse_length(t[:-1] + "m") * 1024 if t.endswith("g") else parse_length(t)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="python -m longjax.tasks", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  exp = sub.add_parser("export", help="write ArrayRecord shards of training rows + manifest")
  exp.add_argument("name", help="registered SeqIO Task or Mixture")
  exp.add_argument("--length", type=_size, required=True, help="row length L, e.g. 8k")
  exp.add_argument("--tokens", type=_size, required=True, help="tokens to export (whole rows)")
  exp.add_argument("--out", type=Path, required=True, help="output directory")
  exp.add_argument("--seed", type=int, default=0, help="seqio shuffle/mixing seed (as training)")
  exp.add_argument("--shards", type=int, default=None, help="output shards (default: ~256 MiB)")
  exp.add_argument("--runner", default=None,
                   help="write the shards with Apache Beam on this runner (e.g. DirectRunner, "
                        "DataflowRunner); default: in this process")
  exp.add_argument("--beam-option", action="append", default=[],
                   help="a Beam pipeline option, e.g. --beam-option=--direct_num_workers=4")
  exp.add_argument("--index-dir", action="append", default=[], type=Path,
                   help="register the Tasks of this index directory too (repeatable)")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    import longjax.tasks  # pylint: disable=import-outside-toplevel  (registers $LONGJAX_INDEX_DIRS)
    from longjax.tasks import export  # pylint: disable=import-outside-toplevel
    for index_dir in args.index_dir:
      longjax.tasks.register(index_dir)
    options = export.ExportOptions(name=args.name, length=args.length, tokens=args.tokens,
                                   out=args.out, seed=args.seed, shards=args.shards)
    if args.runner:
      manifest = export.export_beam(options, [f"--runner={args.runner}", *args.beam_option])
    else:
      manifest = export.export(options)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(json.dumps({"out": str(args.out), **manifest["counts"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
