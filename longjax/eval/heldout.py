"""A held-out corpus given as a file (`python -m longjax.eval --heldout PATH`).

The file is JSON lines, optionally gzipped (`.jsonl`, `.jsonl.gz`): one object per line with a
string `text`, optional `id` and `title` (the corpus reader of `longjax.documents`, plain
json/gzip, so no TensorFlow is needed). Its source name is the file name without the suffix
(`eltec_eng_novels.jsonl.gz` -> `eltec_eng_novels`); a document's key is `<source>/<id>` (else
its title, else `line<N>`). From it come both held-out uses of evaluation:

- the text haystack of the NIAH tasks: the documents in file order, each cut at blank lines into
  paragraphs that are sentence-split one by one. pysbd's time grows faster than linearly with
  its input (200K characters of a novel took 16 s, so a 1M-character novel would take minutes)
  and it joins dialogue across paragraphs into "sentences" of thousands of characters; a
  paragraph break is a sentence break in prose anyway.
- the loss-by-position sequences: the first documents in file order whose wrapped tokens reach
  the loss length, one document per sequence, never concatenated.

`extract` writes a small copy (the first N characters of each document, cut at a word
boundary) to ship to a machine; the same documents give the same haystack and sequences as
long as the extract holds what they use.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from longjax.eval.haystack import TextHaystack
from longjax.eval.model_dir import EvalInputError
from longjax.eval.position_loss import LossSequence, heldout_sequences

SUFFIXES = (".jsonl.gz", ".jsonl")
EXPECTED = "expected JSON lines (.jsonl or .jsonl.gz), one object per line with a string `text`"
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_LAST_SPACE = re.compile(r"\s\S*$")


@dataclasses.dataclass(frozen=True)
class HeldoutDocument:
  key: str  # "<source>/<id>"
  text: str


@dataclasses.dataclass(frozen=True)
class HeldoutFile:
  """The non-empty documents of a held-out file, in file order, and the file's identity."""
  path: Path
  source: str
  sha256: str
  documents: tuple[HeldoutDocument, ...]

  def config(self) -> dict[str, Any]:
    """What results.json records, so that compared runs can assert they used the same file."""
    return {"file": self.path.name, "source": self.source, "sha256": self.sha256,
            "documents": len(self.documents)}

  def text_haystack(self) -> TextHaystack:
    """The NIAH text haystack: every paragraph of every document, in order."""
    paragraphs = [p for d in self.documents for p in _PARAGRAPH_BREAK.split(d.text)]
    return TextHaystack(paragraphs, name=self.source)

  def loss_sequences(self, tokenizer, length: int, num: int) -> list[LossSequence]:
    """`num` sequences of `length` tokens, each the start of one document (file order)."""
    try:
      return heldout_sequences(self.documents, tokenizer, length, num, (self.source,),
                               concatenate=False)
    except ValueError:
      raise EvalInputError(
          f"--heldout {self.path}: fewer than {num} documents (of {len(self.documents)}) have "
          f"{length} tokens, as --loss-sequences {num} --loss-length {length} need; lower "
          "either, or pass a file with longer documents (an extract with more --chars)") from None


def source_name(path: str | Path) -> str:
  """`eltec_eng_novels.jsonl.gz` -> `eltec_eng_novels`."""
  name = Path(path).name
  for suffix in SUFFIXES:
    if name.endswith(suffix):
      return name[:-len(suffix)]
  return name


def read_heldout(path: str | Path) -> HeldoutFile:
  """Reads a held-out file; EvalInputError names the file and what was expected."""
  from longjax.documents import CorpusError, iter_raw_documents
  path = _checked_name(path)
  if not path.is_file():
    why = "not a file" if path.exists() else "no such file"
    raise EvalInputError(f"--heldout {path}: {why} ({EXPECTED})")
  source = source_name(path)
  docs = []
  try:
    for raw in iter_raw_documents(path):
      if not isinstance(raw.text, str):
        what = "null" if raw.text is None else "not UTF-8"
        raise EvalInputError(f"--heldout {raw.source}: `text` is {what} ({EXPECTED})")
      if raw.text.strip():
        name = raw.key or raw.title or "line" + raw.source.rsplit(":", 1)[1]
        docs.append(HeldoutDocument(f"{source}/{name}", raw.text))
  except CorpusError as e:
    raise EvalInputError(f"--heldout {e}; {EXPECTED}") from None
  except (OSError, EOFError) as e:  # a damaged or truncated gzip stream
    raise EvalInputError(f"--heldout {path}: cannot read it ({e}); {EXPECTED}") from None
  if not docs:
    raise EvalInputError(f"--heldout {path}: no non-empty document ({EXPECTED})")
  return HeldoutFile(path, source, _sha256(path), tuple(docs))


def extract(src: str | Path, dst: str | Path, chars: int) -> int:
  """Writes the first `chars` characters of each document of `src` (cut back so that no word
  is split) to `dst`, every other field kept; returns the number of documents written.

  `dst` is gzipped when its name ends in `.gz`, with a fixed header (no name, mtime 0), so one
  extract of one file always has the same sha256.
  """
  from longjax.io import write_bytes
  if chars < 1:
    raise EvalInputError(f"extract-heldout: --chars must be >= 1, got {chars}")
  dst = _checked_name(dst, "extract-heldout: output")
  read_heldout(src)  # the input checks and messages of --heldout
  lines = []
  opener = gzip.open if str(src).endswith(".gz") else open
  with opener(src, "rt", encoding="utf-8") as f:
    for line in f:
      if line.strip():
        obj = json.loads(line)
        obj["text"] = cut_at_word(obj["text"], chars)
        lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
  data = "".join(lines).encode("utf-8")
  write_bytes(dst, gzip.compress(data, mtime=0) if dst.name.endswith(".gz") else data)
  return len(lines)


def cut_at_word(text: str, chars: int) -> str:
  """The longest prefix of at most `chars` characters that does not end inside a word."""
  if len(text) <= chars:
    return text
  if text[chars].isspace():
    return text[:chars].rstrip()
  head = text[:chars]
  last = _LAST_SPACE.search(head)
  return head[:last.start()].rstrip() if last else head


def _checked_name(path: str | Path, what: str = "--heldout") -> Path:
  path = Path(path)
  if not path.name.endswith(SUFFIXES):
    raise EvalInputError(f"{what} {path}: {EXPECTED}; the name ends with neither suffix")
  return path


def _sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
