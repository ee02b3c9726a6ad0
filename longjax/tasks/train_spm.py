"""`python -m longjax.tasks.train_spm`: train a SentencePiece model on a corpus for small runs.

    python -m longjax.tasks.train_spm --index-dir /tmp/idx --out /tmp/spm8k.model --vocab-size 8000
    python -m longjax.tasks.train_spm --corpus docs.jsonl.gz --out spm.model

The model reserves PAD=0, EOS=1, UNK=2, BOS=3 (see `vocabularies.train_sentencepiece`), so it
serves as `--tokenizer spm.model` for `python -m longjax.synth build` and as a
`seqio.SentencePieceVocabulary` for the Tasks.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator, Sequence


def _texts(args: argparse.Namespace) -> Iterator[str]:
  from longjax.documents import iter_raw_documents  # pylint: disable=import-outside-toplevel
  from longjax.progress import console  # pylint: disable=import-outside-toplevel
  from longjax.synth import corpus  # pylint: disable=import-outside-toplevel

  if args.index_dir is not None:
    store = corpus.open_store(args.index_dir)
    yield from (d.text for d in console(store, total=len(store), desc="documents"))
    return
  for raw in console(iter_raw_documents(args.corpus), desc="documents"):
    text = raw.text
    if isinstance(text, bytes):
      try:
        text = text.decode("utf-8")
      except UnicodeDecodeError:
        continue  # the corpus store records these as not_utf8; nothing to learn from here
    if text:
      yield text


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m longjax.tasks.train_spm",
                                   description=__doc__.split("\n")[0])
  src = parser.add_mutually_exclusive_group(required=True)
  src.add_argument("--index-dir", type=Path, help="an index dir from `synth build` (its corpus)")
  src.add_argument("--corpus", type=Path, help="a corpus file or directory (jsonl/parquet/text)")
  parser.add_argument("--out", type=Path, required=True, help="output .model path")
  parser.add_argument("--vocab-size", type=int, default=8000)
  parser.add_argument("--model-type", choices=("bpe", "unigram"), default="bpe")
  parser.add_argument("--max-sentences", type=int, default=2_000_000,
                      help="lines sampled for training (default 2,000,000)")
  args = parser.parse_args(argv)
  from longjax.documents import CorpusError  # pylint: disable=import-outside-toplevel
  from longjax.tasks import vocabularies  # pylint: disable=import-outside-toplevel
  try:
    out = vocabularies.train_sentencepiece(
        _texts(args), args.out, vocab_size=args.vocab_size, model_type=args.model_type,
        max_sentences=args.max_sentences)
  except (CorpusError, FileNotFoundError, ValueError, RuntimeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out} and {out.with_suffix('.vocab')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
