"""Random keys, values and word pools for the synthetic long-context tasks.

Every draw goes through a `random.Random` that the caller seeds, so an example is a pure function
of its seed. The word lists come from packages (`wonderwords`, `english-words`), read once.
"""

from __future__ import annotations

import functools
import hashlib
import random
import string
import uuid
from importlib import resources

NUMBER_RANGE = (10 ** 6, 10 ** 7 - 1)  # 7-digit needle values (RULER)


def derive_seed(*parts: object) -> int:
  """A 63-bit seed from any parts (base seed, task, length, index), stable across processes.

  Python's `hash` is salted per process, so we hash the parts' text with sha256.
  """
  text = "/".join(str(p) for p in parts)
  return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def _wonderwords(filename: str) -> list[str]:
  text = resources.files("wonderwords.assets").joinpath(filename).read_text(encoding="utf-8")
  return [w.strip() for w in text.splitlines() if w.strip()]


@functools.cache
def nouns() -> tuple[str, ...]:
  return tuple(_wonderwords("nounlist.txt"))


@functools.cache
def adjectives() -> tuple[str, ...]:
  return tuple(_wonderwords("adjectivelist.txt"))


@functools.cache
def verbs() -> tuple[str, ...]:
  return tuple(_wonderwords("verblist.txt"))


@functools.cache
def _common_words(seed: int) -> tuple[str, ...]:
  words = sorted(set(nouns()) | set(adjectives()) | set(verbs()))
  random.Random(seed).shuffle(words)
  return tuple(words)


@functools.cache
def _web2_words(seed: int) -> tuple[str, ...]:
  from english_words import get_english_words_set
  seen = set(_common_words(seed))
  rest = sorted(w for w in get_english_words_set(["web2"], lower=True) if w not in seen)
  random.Random(seed + 1).shuffle(rest)
  return tuple(rest)


def common_words_vocab(seed: int, size: int) -> tuple[str, ...]:
  """The CWE vocabulary for `size` distinct words: the wonderwords nouns+adjectives+verbs
  (8,166 unique, seed-shuffled), extended by the lower-case `english-words` web2 list (sorted,
  seed-shuffled) only when `size` exceeds them, as RULER extends its list."""
  first = _common_words(seed)
  if size <= len(first):
    return first
  return first + _web2_words(seed)[:size - len(first)]


def random_number(rng: random.Random) -> str:
  return str(rng.randint(*NUMBER_RANGE))


def random_word_key(rng: random.Random) -> str:
  """An `adjective-noun` key (912 x 6,782 combinations)."""
  return f"{rng.choice(adjectives())}-{rng.choice(nouns())}"


def random_uuid(rng: random.Random) -> str:
  """A version-4 UUID built from 128 bits of `rng` (uuid.uuid4 would read os.urandom)."""
  return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_letters(rng: random.Random, k: int, alphabet: str = string.ascii_uppercase) -> str:
  return "".join(rng.choices(alphabet, k=k))


_MAKERS = {"numbers": random_number, "words": random_word_key, "uuids": random_uuid}


def random_value(kind: str, rng: random.Random) -> str:
  """A fresh needle key or value of `kind` (numbers, words, uuids)."""
  try:
    return _MAKERS[kind](rng)
  except KeyError:
    raise ValueError(f"needle type {kind!r}: expected one of {sorted(_MAKERS)}") from None


def distinct(maker, n: int, rng: random.Random, exclude: frozenset[str] = frozenset()) -> list[str]:
  """`n` distinct values from `maker(rng)`, none of them in `exclude`."""
  out: list[str] = []
  seen = set(exclude)
  while len(out) < n:
    v = maker(rng)
    if v not in seen:
      seen.add(v)
      out.append(v)
  return out
