"""RAKE keyword extraction (Rose et al. 2010), in-project, with NLTK's English stopwords bundled.

Scoring follows csurfer/rake-nltk with its default metric, degree / frequency (specs/quest.md §3):
within one text unit, `freq(w)` counts w over all candidate phrases (repeats included),
`deg(w)` adds the word count of the phrase for every occurrence of w, and a phrase scores
`sum(deg(w) / freq(w) for w in phrase)`. A phrase of n distinct words seen once scores n**2.

Tokenization: lowercase; sentences end at `.`, `!` or `?` followed by whitespace; tokens are
runs of word characters or runs of other non-space characters (NLTK's `wordpunct_tokenize`).
Candidate phrases are maximal runs of tokens that are neither stopwords nor punctuation. We
break on any all-punctuation token (rake-nltk: single-character ones only), as the spec allows.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from importlib import resources

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]+")
_WORDLIKE = re.compile(r"\w")

STOPWORDS_FILE = "stopwords_en.txt"


@functools.cache
def stopwords() -> frozenset[str]:
  """NLTK's 179 English stopwords, read from the bundled data file."""
  return frozenset(_data_lines(STOPWORDS_FILE))


def stopwords_sha256() -> str:
  """Hash of the bundled stopword file, recorded in the Quest manifest."""
  return hashlib.sha256(resources.files(__package__).joinpath("data", STOPWORDS_FILE)
                        .read_bytes()).hexdigest()


def _data_lines(name: str) -> list[str]:
  text = resources.files(__package__).joinpath("data", name).read_text(encoding="utf-8")
  return [line.strip() for line in text.splitlines() if line.strip()]


def tokenize(text: str) -> list[list[str]]:
  """Lowercased sentences of word/punctuation tokens."""
  return [_TOKEN.findall(s) for s in _SENTENCE_END.split(text.lower()) if s.strip()]


def candidate_phrases(text: str) -> list[tuple[str, ...]]:
  """Maximal runs of non-stopword, non-punctuation tokens, in order, repeats kept."""
  stop = stopwords()
  phrases = []
  for sentence in tokenize(text):
    run: list[str] = []
    for tok in sentence:
      if tok in stop or not _WORDLIKE.search(tok):
        if run:
          phrases.append(tuple(run))
        run = []
      else:
        run.append(tok)
    if run:
      phrases.append(tuple(run))
  return phrases


def score_phrases(text: str) -> dict[str, float]:
  """Unique candidate phrases of one text unit -> RAKE score (degree / frequency)."""
  phrases = candidate_phrases(text)
  freq: Counter[str] = Counter()
  deg: Counter[str] = Counter()
  for phrase in phrases:
    for w in phrase:
      freq[w] += 1
      deg[w] += len(phrase)
  return {" ".join(p): float(sum(deg[w] / freq[w] for w in p)) for p in set(phrases)}


def normalize(keyword: str) -> str:
  """Lowercase, collapse whitespace, strip."""
  return " ".join(keyword.lower().split())


def keywords(text: str, *, min_score: float = 3.0) -> list[str]:
  """Normalised phrases of one text unit scoring >= `min_score`, sorted."""
  return sorted({normalize(p) for p, s in score_phrases(text).items() if s >= min_score})
