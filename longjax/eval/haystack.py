"""Haystacks for the needle tasks: the noise line, and sentences of held-out documents.

RULER's `essay` haystack is Paul Graham's essays; ours is the held-out evaluation corpus (text
that never enters training synthesis), whitespace-normalised, cut to its first n words and split
into sentences with `pysbd` (pinned in requirements, since the split decides needle positions).

Splitting once per length would cost seconds per search step, so documents are split once each
and "the first n words" is the prefix of that sentence stream, the last sentence cut at word n
(the result equals splitting the n-word prefix except, at most, for the final sentence).
"""

from __future__ import annotations

import bisect
import functools
import re
from typing import Sequence

NOISE_LINE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
              "There and back again.")

_WS = re.compile(r"\s+")


def normalise_whitespace(text: str) -> str:
  return _WS.sub(" ", text).strip()


@functools.cache
def _segmenter():
  import pysbd
  return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
  """Sentences of whitespace-normalised `text` (pysbd, English, no cleaning)."""
  sents = (s.strip() for s in _segmenter().segment(normalise_whitespace(text)))
  return [s for s in sents if s]


class TextHaystack:
  """The held-out documents as one endless stream of sentences (the corpus repeats if short).

  Documents are split lazily, in order, as longer prefixes are asked for.
  """

  def __init__(self, documents: Sequence[str], name: str = "heldout"):
    self.documents = [d for d in documents if d.strip()]
    if not self.documents:
      raise ValueError(f"haystack {name!r}: no non-empty documents")
    self.name = name
    self._sents: list[str] = []
    self._cum_words: list[int] = []  # words in sentences [0, i]
    self._next_doc = 0

  def _extend(self) -> None:
    doc = self.documents[self._next_doc % len(self.documents)]
    self._next_doc += 1
    total = self._cum_words[-1] if self._cum_words else 0
    for s in split_sentences(doc):
      total += len(s.split())
      self._sents.append(s)
      self._cum_words.append(total)

  def sentences(self, num_words: int) -> list[str]:
    """The sentences holding the first `num_words` words, the last one cut to fit."""
    if num_words <= 0:
      return []
    while not self._cum_words or self._cum_words[-1] < num_words:
      self._extend()
    i = bisect.bisect_left(self._cum_words, num_words)
    out = self._sents[:i + 1]
    before = self._cum_words[i - 1] if i else 0
    words = out[-1].split()
    out[-1] = " ".join(words[:num_words - before])
    return out


def insert_at_sentences(sentences: Sequence[str], needles: Sequence[str],
                        indices: Sequence[int]) -> tuple[str, list[int]]:
  """Joins sentences with spaces, putting needle j before sentence `indices[j]` (sorted order).

  RULER's layout: the text is the space-join of [sentence run, needle, sentence run, needle, ...,
  sentence run], each run possibly empty, so a needle at index 0 follows a space and two
  needles at one index are two spaces apart (as RULER's prompts are).

  Returns the text and each needle's character offset in it (in the order of `needles`).
  """
  order = sorted(range(len(needles)), key=lambda j: indices[j])
  parts: list[str] = []
  offsets = [0] * len(needles)
  pos = 0
  prev = 0
  for j in order:
    run = " ".join(sentences[prev:indices[j]])
    parts.append(run)
    pos += len(run) + 1
    offsets[j] = pos
    parts.append(needles[j])
    pos += len(needles[j]) + 1
    prev = indices[j]
  parts.append(" ".join(sentences[prev:]))
  return " ".join(parts), offsets


def insert_lines(lines: Sequence[str], needles: Sequence[str],
                 indices: Sequence[int]) -> tuple[str, list[int]]:
  """Joins lines with newlines, putting needle j before line `indices[j]`.

  Returns the text and each needle's character offset in it (in the order of `needles`).
  """
  at: dict[int, list[int]] = {}
  for j, i in enumerate(indices):
    at.setdefault(i, []).append(j)
  out: list[str] = []
  offsets = [0] * len(needles)
  pos = 0
  for i in range(len(lines) + 1):
    for j in at.get(i, ()):
      offsets[j] = pos
      out.append(needles[j])
      pos += len(needles[j]) + 1
    if i < len(lines):
      out.append(lines[i])
      pos += len(lines[i]) + 1
  return "\n".join(out), offsets
