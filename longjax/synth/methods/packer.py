"""The packer shared by the baseline methods: an ordered document stream cut every L tokens.

Each document contributes its tokens followed by one EOS (specs/baselines.md §0). The stream is
cut every `length` tokens. Where a cut falls inside a document:

* `overflow="carry"`: the tail of that document opens the next context;
* `overflow="truncate"`: the tail is dropped and the next context opens with the next document.

A trailing context shorter than `length` is never emitted (samples are exactly L tokens).

Provenance is a list of spans `(doc_id, tok_start, tok_end)`, half-open, indexing the document's
tokens *with its EOS appended* (so `tok_end == n_tokens + 1` means the EOS is included). The
span-level `pack` works on token counts alone, so build-time planners (KNN, ICLM) can fix context
boundaries without holding tokens; `pack_tokens` runs the same cutter over real tokens.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

Span = tuple[int, int, int]
OVERFLOW_MODES = ("carry", "truncate")


def _check(length: int, overflow: str) -> None:
  if length < 1:
    raise ValueError(f"length ({length}) must be >= 1")
  if overflow not in OVERFLOW_MODES:
    raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")


def pack(docs: Iterable[tuple[int, int]], length: int, *,
         overflow: str = "carry") -> Iterator[list[Span]]:
  """Cuts a stream of `(doc_id, n_tokens_with_eos)` into contexts of exactly `length` tokens.

  Yields one list of spans per full context, in stream order.
  """
  _check(length, overflow)
  spans: list[Span] = []
  filled = 0
  for doc_id, n in docs:
    if n < 1:
      raise ValueError(f"document {doc_id}: n_tokens_with_eos ({n}) must be >= 1")
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
  """Concatenates the spans' tokens; `tokens_of(doc_id)` returns the document's tokens + EOS."""
  return np.concatenate([tokens_of(d)[s:e] for d, s, e in spans]).astype(np.int32)


def with_eos(tokens: Sequence[int], eos_id: int) -> np.ndarray:
  """A document's tokens followed by one EOS, as int32."""
  out = np.empty(len(tokens) + 1, np.int32)
  out[:-1] = tokens
  out[-1] = eos_id
  return out


def pack_tokens(docs: Iterable[tuple[int, Sequence[int]]], length: int, *, eos_id: int,
                overflow: str = "carry") -> Iterator[tuple[np.ndarray, list[Span]]]:
  """`pack` over real tokens: yields `(np.int32[length], spans)` per full context.

  Holds only the documents of the context being filled, so memory stays O(length + one document).
  """
  held: dict[int, np.ndarray] = {}

  def counts() -> Iterator[tuple[int, int]]:
    for doc_id, tokens in docs:
      if int(doc_id) in held:
        raise ValueError(f"document {doc_id} appears twice within one context window")
      held[int(doc_id)] = with_eos(tokens, eos_id)
      yield int(doc_id), len(tokens) + 1

  for spans in pack(counts(), length, overflow=overflow):
    out = assemble(spans, held.__getitem__)
    keep = spans[-1][0] if overflow == "carry" else None
    for d in [d for d in held if d != keep]:
      del held[d]
    yield out, spans
