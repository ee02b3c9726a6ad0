"""Loss by position on held-out long documents, with the truncated-context control.

For a sequence of L tokens, the full pass gives NLL(t) for every target t (predicted from tokens
0..t-1). The control scores the same targets with only the last ~w tokens of context: windows of
w tokens start every w/4 tokens, and each target takes the earliest window that holds it, so its
context is between 3w/4 and w tokens (exact for targets t < w). The gain from long context is
NLL_w - NLL_full per bucket: > 0 means tokens beyond w help.

Buckets are log-spaced over target positions (0-128, 128-256, ..., up to L) and 1K wide. Logits
are formed chunk by chunk from `model.hidden_states` and `model.unembedding()`, so [S, V] never
exists at once and an 8K sequence of a 135M model scores on CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LOSS_CHUNK = 512  # positions per logits chunk


@functools.partial(nnx.jit, static_argnames=("chunk",))
def _token_nll(model, tokens: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """tokens [B, S] -> (NLL [B, S-1] of tokens[:, 1:] (float32), argmax == token [B, S-1])."""
  h = model.hidden_states(tokens)[:, :-1]  # [B, S-1, D]
  targets = tokens[:, 1:]
  w = model.unembedding()  # [D, V]
  b, s, d = h.shape
  n = -(-s // chunk)
  pad = n * chunk - s
  h = jnp.pad(h, ((0, 0), (0, pad), (0, 0))).reshape(b, n, chunk, d).swapaxes(0, 1)
  t = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, chunk).swapaxes(0, 1)

  def one(args):
    hc, tc = args  # [B, C, D], [B, C]
    logits = jnp.einsum("bcd,dv->bcv", hc, w.astype(hc.dtype), preferred_element_type=jnp.float32)
    gold = jnp.take_along_axis(logits, tc[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - gold, jnp.argmax(logits, axis=-1) == tc

  nll, hit = jax.lax.map(one, (h, t))  # [n, B, C] each
  unchunk = lambda x: x.swapaxes(0, 1).reshape(b, n * chunk)[:, :s]
  return unchunk(nll), unchunk(hit)


def token_nll(model, tokens: np.ndarray, *, batch_size: int = 1, chunk: int = LOSS_CHUNK,
              with_hits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """tokens [B, S] int -> NLL [B, S-1] with full causal context, `batch_size` rows per call.

  With `with_hits`, also whether each target was the model's argmax prediction [B, S-1].
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  outs = [_token_nll(model, jnp.asarray(tokens[i:i + batch_size]), chunk)
          for i in range(0, len(tokens), batch_size)]
  nll = np.concatenate([np.asarray(o[0]) for o in outs], axis=0)
  if not with_hits:
    return nll
  return nll, np.concatenate([np.asarray(o[1]) for o in outs], axis=0)


def window_starts(length: int, window: int, stride: int) -> list[int]:
  """Window starts 0, stride, 2 stride, ... with a last window ending exactly at `length`."""
  if window >= length:
    return [0]
  starts = list(range(0, length - window + 1, stride))
  if starts[-1] != length - window:
    starts.append(length - window)
  return starts


def windowed_nll(model, tokens: np.ndarray, window: int, *, stride: int | None = None,
                 batch_size: int = 4, chunk: int = LOSS_CHUNK) -> np.ndarray:
  """tokens [B, S] -> NLL [B, S-1] where target t sees only tokens (t - c, t], c ~ window.

  Each target is scored in the earliest window that contains it (the longest context <= w).
  """
  tokens = np.asarray(tokens, dtype=np.int32)
  b, s = tokens.shape
  if window >= s:
    return token_nll(model, tokens, batch_size=1, chunk=chunk)
  stride = stride or max(1, window // 4)
  starts = window_starts(s, window, stride)
  windows = np.stack([tokens[:, a:a + window] for a in starts], axis=1).reshape(-1, window)
  nll = token_nll(model, windows, batch_size=batch_size, chunk=chunk)
  nll = nll.reshape(b, len(starts), window - 1)
  out = np.full((b, s - 1), np.nan, np.float32)
  for j in reversed(range(len(starts))):  # earlier windows overwrite: longer context wins
    a = starts[j]
    out[:, a:a + window - 1] = nll[:, j]
  return out


def log_buckets(length: int, first: int = 128) -> list[tuple[int, int]]:
  """[(0, 128), (128, 256), ...] covering target positions 1 .. length-1."""
  edges = [0, first]
  while edges[-1] < length:
    edges.append(edges[-1] * 2)
  edges[-1] = length
  return list(zip(edges[:-1], edges[1:]))


def linear_buckets(length: int, width: int = 1024) -> list[tuple[int, int]]:
  return [(a, min(a + width, length)) for a in range(0, length, width)]


def bucket_means(nll: np.ndarray, buckets: Sequence[tuple[int, int]]) -> list[float]:
  """Mean NLL over all rows of targets at positions [lo, hi) (position t = index t-1 of nll)."""
  out = []
  for lo, hi in buckets:
    part = nll[:, max(lo, 1) - 1:hi - 1]
    out.append(float(part.mean()) if part.size else math.nan)
  return out


@dataclasses.dataclass(frozen=True)
class LossSequence:
  """One scored sequence: `length` tokens of one document or of consecutive ones, each document
  wrapped in the tokenizer's boundary tokens (`Tokenizer.boundaries`), as in training data."""
  source: str
  keys: tuple[str, ...]
  tokens: np.ndarray

  @property
  def concatenated(self) -> bool:
    return len(self.keys) > 1


def heldout_sequences(documents: Iterable, tokenizer, length: int, per_source: int,
                      sources: Sequence[str] = ("sotu", "shakespeare"), *,
                      concatenate: bool = True) -> list[LossSequence]:
  """`per_source` sequences of `length` tokens from each source, documents in natural order.

  Every document is laid out as in training data, `boundaries.wrap(tokens)` (for SmolLM2: the
  document then `<|endoftext|>`; never the chat BOS). Documents whose wrapped form has at least
  `length` tokens come first (their first tokens); if a source has too few and `concatenate` is
  True, consecutive other documents are concatenated, each wrapped (`concatenated` is then
  True). `documents` are objects with `key` ("<source>/<name>") and `text`, as
  `heldout_documents()` returns. Documents are tokenized only until enough are found (a novel
  is ~10^5 tokens). Raises ValueError when a source yields fewer than `per_source`.
  """
  by_source: dict[str, list] = {s: [] for s in sources}
  for d in documents:
    src = d.key.split("/", 1)[0]
    if src in by_source:
      by_source[src].append(d)
  out: list[LossSequence] = []
  for src, docs in by_source.items():
    if not docs:
      raise ValueError(f"held-out source {src!r} has no documents")
    picked, short = _single_document_sequences(src, docs, tokenizer, length, per_source)
    if concatenate:
      picked += _concatenated_sequences(src, short, length, per_source - len(picked))
    if len(picked) < per_source:
      raise ValueError(f"held-out source {src!r}: only {len(picked)} sequences of {length} "
                       f"tokens, {per_source} asked for")
    out += picked
  return out


def _single_document_sequences(src: str, docs: Sequence, tokenizer, length: int,
                               num: int) -> tuple[list[LossSequence], list[tuple[str, list]]]:
  """The first `num` documents with >= `length` wrapped tokens, and the shorter ones passed on
  the way (all of them when fewer than `num` are long enough), as (key, wrapped ids)."""
  picked: list[LossSequence] = []
  short: list[tuple[str, list]] = []
  for d in docs:
    if len(picked) == num:
      break
    ids = tokenizer.boundaries.wrap(tokenizer.encode(d.text))
    if len(ids) >= length:
      picked.append(LossSequence(src, (d.key,), np.asarray(ids[:length], np.int32)))
    else:
      short.append((d.key, ids))
  return picked, short


def _concatenated_sequences(src: str, short: Sequence[tuple[str, list]], length: int,
                            num: int) -> list[LossSequence]:
  """Up to `num` sequences of consecutive short documents, each wrapped, cut at `length`."""
  out: list[LossSequence] = []
  i = 0
  while len(out) < num and i < len(short):
    keys, ids = [], []
    while len(ids) < length and i < len(short):
      keys.append(short[i][0])
      ids += short[i][1]
      i += 1
    if len(ids) >= length and len(keys) > 1:
      out.append(LossSequence(src, tuple(keys), np.asarray(ids[:length], np.int32)))
  return out


def loss_by_position(model, sequences: Sequence[LossSequence], windows: Sequence[int], *,
                     progress: Callable[[Iterable], Iterable] = lambda x: x) -> dict:
  """NLL by position bucket with the full context and with each truncated window.

  Returns a JSON-ready dict: per bucket set (`log`, `1k`) the bucket edges, `nll_full`,
  `nll_w<w>` and `gain_w<w>` = NLL_w - NLL_full (means over all sequences), and per scored
  sequence (`sequences[i]`) its identity with the same tables over that sequence alone, so that
  statistics over sequences (bootstrap intervals) need no second pass.
  """
  length = len(sequences[0].tokens)
  if any(len(s.tokens) != length for s in sequences):
    raise ValueError("loss_by_position: all sequences must have the same length")
  windows = sorted(w for w in set(windows) if w < length)
  full, trunc = [], {w: [] for w in windows}
  for seq in progress(sequences):
    toks = seq.tokens[None]
    full.append(token_nll(model, toks))
    for w in windows:
      trunc[w].append(windowed_nll(model, toks, w))
  bucket_sets = {"log": log_buckets(length), "1k": linear_buckets(length)}

  def tables(rows: slice) -> dict:
    """Per bucket set: NLL_full, NLL_w and the gain, averaged over the sequences in `rows`."""
    out = {}
    for name, buckets in bucket_sets.items():
      table = {"nll_full": bucket_means(np.concatenate(full[rows]), buckets)}
      for w in windows:
        table[f"nll_w{w}"] = bucket_means(np.concatenate(trunc[w][rows]), buckets)
        table[f"gain_w{w}"] = [a - b for a, b in zip(table[f"nll_w{w}"], table["nll_full"])]
      out[name] = table
    return out

  per_sequence = []
  for i, s in enumerate(sequences):
    per_sequence.append({"source": s.source, "keys": list(s.keys),
                         "concatenated": s.concatenated,
                         "mean_nll_full": float(full[i].mean()), **tables(slice(i, i + 1))})
  result = {"length": length, "windows": windows, "sequences": per_sequence,
            "mean_nll_full": float(np.concatenate(full).mean())}
  for name, table in tables(slice(None)).items():
    result[name] = {"buckets": bucket_sets[name], **table}
  return result
