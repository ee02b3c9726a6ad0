"""The packer shared by the methods: an ordered document stream cut every L tokens.

Each document contributes its tokens wrapped in the tokenizer's boundary tokens
(`Tokenizer.boundaries`: for most tokenizers one end-of-document token, the same convention in
every method, the replay data and the eval prompts; specs/baselines.md §0). The stream is cut
every `length` tokens. Where a cut falls inside a document:

* `overflow="carry"`: the tail of that document opens the next context;
* `overflow="truncate"`: the tail is dropped and the next context opens with the next document.

A trailing context shorter than `length` is never emitted (samples are exactly L tokens).

Provenance is a list of spans `(doc_id, tok_start, tok_end)`, half-open, indexing the document's
tokens *with its boundary tokens* (with an end token only, `tok_end == n_tokens + 1` means the end
token is included). The
span-level `pack` works on token counts alone, so build-time planners (KNN, ICLM) can fix context
boundaries without holding tokens; `pack_tokens` runs the same cutter over real tokens.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from longjax.models.tokenizer import Boundaries

Span = tuple[int, int, int]
OVERFLOW_MODES = ("carry", "truncate")


def _check(length: int, overflow: str) -> None:
  if length < 1:
    raise ValueError(f"length ({length}) must be >= 1")
  if overflow not in OVERFLOW_MODES:
    raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")


def pack(docs: Iterable[tuple[int, int]], length: int, *,
         overflow: str = "carry") -> Iterator[list[Span]]:
  """Cuts a stream of `(doc_id, n_tokens_with_boundaries)` into contexts of exactly `length` tokens.

  Yields one list of spans per full context, in stream order.
  """
  _check(length, overflow)
  spans: list[Span] = []
  filled = 0
  for doc_id, n in docs:
    if n < 1:
      raise ValueError(f"document {doc_id}: n_tokens_with_boundaries ({n}) must be >= 1")
    start = 0
    while start < n:
      take = min(n - start, length - filled)
      spans.append((int(doc_id), start, start + take))
      filled += take
      start += take
      if filled == length:
        yield spans
        spans, filled = [], 0
        if overflow == "truncate":
          break


def assemble(spans: Sequence[Span], tokens_of: Callable[[int], np.ndarray]) -> np.ndarray:
  """Concatenates the spans' tokens; `tokens_of(doc_id)` returns the wrapped document."""
  return np.concatenate([tokens_of(d)[s:e] for d, s, e in spans]).astype(np.int32)


def document(tokens: Sequence[int], boundaries: Boundaries) -> np.ndarray:
  """A document's tokens wrapped in the boundary tokens, as int32."""
  return np.asarray(boundaries.wrap(tokens), np.int32)


def pack_tokens(docs: Iterable[tuple[int, Sequence[int]]], length: int, *,
                boundaries: Boundaries,
                overflow: str = "carry") -> Iterator[tuple[np.ndarray, list[Span]]]:
  """`pack` over real tokens: yields `(np.int32[length], spans)` per full context.

  Holds only the documents of the context being filled, so memory stays O(length + one document).
  """
  held: dict[int, np.ndarray] = {}

  def counts() -> Iterator[tuple[int, int]]:
    for doc_id, tokens in docs:
      if int(doc_id) in held:
        raise ValueError(f"document {doc_id} appears twice within one context window")
      held[int(doc_id)] = document(tokens, boundaries)
      yield int(doc_id), len(held[int(doc_id)])

  for spans in pack(counts(), length, overflow=overflow):
    out = assemble(spans, held.__getitem__)
    keep = spans[-1][0] if overflow == "carry" else None
    for d in [d for d in held if d != keep]:
      del held[d]
    yield out, spans
