"""Build-time context plans: fixed context boundaries stored per length, streamed at example time.

KNN and ICLM decide their grouping globally and sequentially at build time (specs/baselines.md
§2, §3.2); ICLM also fixes its context boundaries there. Both end as a list of contexts, each a
list of spans `(doc_id, tok_start, tok_end)` from the packer. This module stores such a plan
(`L<length>.spans.npy` int64 [M, 3] + `L<length>.offsets.npy` int64 [C + 1]) and turns it back
into examples: the context order is shuffled with the example seed, each shard takes a contiguous
range of the shuffled ids, and every context is re-tokenized and assembled.

Token counts are computed at build time with the build tokenizer; the manifest records that
tokenizer (`tokenizer_signature`) and streaming checks that the caller's tokenizer matches.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from longjax import io
from longjax.models.tokenizer import Tokenizer
from longjax.synth import artifacts, chunking, corpus
from longjax.synth.methods import packer
from longjax.synth.methods.base import BuildContext, DocStore, shard_range
from longjax.synth.methods.options import MethodOptions

_BATCH = 256


def tokenizer_signature(tokenizer: Tokenizer) -> dict[str, Any]:
  """What identifies a tokenizer for token-count purposes (recorded in manifests)."""
  return {"name": tokenizer.name, "vocab_size": int(tokenizer.vocab_size),
          "bos_id": tokenizer.bos_id, "eos_id": tokenizer.eos_id,
          "boundaries": tokenizer.boundaries.signature()}


def check_tokenizer(manifest: Mapping[str, Any], tokenizer: Tokenizer, where: Path) -> None:
  """Raises if `tokenizer` is not the one the plan in `where` was built with."""
  built = manifest["config"]["tokenizer"]
  have = tokenizer_signature(tokenizer)
  if built != have:
    raise ValueError(f"{where}: built with tokenizer {built}, but streaming with {have}; "
                     "context boundaries depend on token counts, so rebuild with this tokenizer")


def document_tokens(tokenizer: Tokenizer, text: str) -> np.ndarray:
  """One document as every method streams it: its tokens wrapped in the boundary tokens."""
  return packer.document(tokenizer.encode(text), tokenizer.boundaries)


def count_tokens(store: DocStore, doc_ids: np.ndarray, tokenizer: Tokenizer,
                 progress: Callable[..., Iterable[Any]], *,
                 with_boundaries: bool = True) -> np.ndarray:
  """Tokens per text of `store` (documents, or NExtLong's chunks), int64 aligned with
  `doc_ids`; documents count their boundary tokens."""
  b = tokenizer.boundaries
  extra = len(b.start) + len(b.end) if with_boundaries else 0
  counts = np.empty(len(doc_ids), np.int64)
  starts = range(0, len(doc_ids), _BATCH)
  for start in progress(starts, desc="count tokens", total=len(starts)):
    batch = doc_ids[start:start + _BATCH]
    encoded = tokenizer.encode_batch([store.text(int(d)) for d in batch])
    counts[start:start + len(batch)] = [len(t) + extra for t in encoded]
  return counts


def token_counts_path(index_dir: Path, store: DocStore, tokenizer: Tokenizer) -> Path:
  """Where `store_token_counts` keeps the counts (the Beam build writes the same file)."""
  key = io.fingerprint_json({"store": chunking.store_fingerprint(store),
                             "tokenizer": tokenizer_signature(tokenizer)})
  return Path(index_dir) / "token_counts" / f"{key[:16]}.npy"


def store_token_counts(ctx: BuildContext) -> np.ndarray:
  """`count_tokens` over the whole store (store order), computed once per index and tokenizer.

  Several methods need the same counts (Standard's and KNN's budgets, ICLM's and Quest's plans);
  the first one to ask writes `<index>/token_counts/<fingerprint>.npy`, keyed by the store's
  fingerprint and the tokenizer's signature.
  """
  path = token_counts_path(ctx.index_dir, ctx.store, ctx.tokenizer)
  if path.exists():
    return np.load(path)
  counts = count_tokens(ctx.store, np.asarray(ctx.store.doc_ids(), np.int64), ctx.tokenizer,
                        ctx.progress)
  io.write_npy(path, counts)
  return counts


def budget(*, samples: int, length: int, documents_used: int, source_tokens: int,
           source_tokens_dropped: int) -> dict[str, Any]:
  """The per-length budget record every method's manifest carries (`counts["budget"]`).

  `source_tokens`: tokens (with boundaries) of the documents the method read; of those,
  `source_tokens_dropped` appear in no sample of one pass. `sample_tokens` = samples x L.
  """
  return {"samples": int(samples), "sample_tokens": int(samples) * int(length),
          "documents_used": int(documents_used), "source_tokens": int(source_tokens),
          "source_tokens_dropped": int(source_tokens_dropped),
          "dropped_share": round(source_tokens_dropped / source_tokens, 6) if source_tokens
                           else 0.0}


def write_plan(directory: Path, length: int, contexts: Iterable[list[packer.Span]]) -> int:
  """Stores a list of contexts for `length`; returns the number of contexts."""
  spans: list[packer.Span] = []
  offsets = [0]
  for ctx in contexts:
    spans.extend(ctx)
    offsets.append(len(spans))
  io.write_npy(directory / f"L{length}.spans.npy",
               np.asarray(spans, np.int64).reshape(-1, 3))
  io.write_npy(directory / f"L{length}.offsets.npy", np.asarray(offsets, np.int64))
  return len(offsets) - 1


class Plan:
  """Random access to the contexts a method planned for one length."""

  def __init__(self, directory: Path, length: int):
    spans_path = directory / f"L{length}.spans.npy"
    if not spans_path.exists():
      built = sorted(int(p.name[1:].split(".")[0]) for p in directory.glob("L*.offsets.npy"))
      raise FileNotFoundError(
          f"{directory}: no context plan for length {length} (built lengths: {built}); rebuild "
          f"the index with this length, e.g. `python -m longjax.synth build --lengths {length}`")
    self.spans = np.load(spans_path, mmap_mode="r")
    self.offsets = np.load(directory / f"L{length}.offsets.npy")

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def context(self, i: int) -> list[packer.Span]:
    rows = self.spans[self.offsets[i]:self.offsets[i + 1]]
    return [(int(d), int(s), int(e)) for d, s, e in rows]


def stream_plan(directory: Path, *, method: str, store: DocStore, length: int,
                tokenizer: Tokenizer, shard: int, num_shards: int,
                seed: int) -> Iterator[dict[str, Any]]:
  """Examples for `shard` from the plan in `directory`: shuffled context ids, contiguous ranges."""
  manifest = artifacts.require_built(directory, method=method)
  check_tokenizer(manifest, tokenizer, directory)
  plan = Plan(directory, length)
  ids = np.random.default_rng(seed).permutation(len(plan))
  for pos in shard_range(len(ids), shard, num_shards):
    spans = plan.context(int(ids[pos]))
    tokens = packer.assemble(spans, lambda d: document_tokens(tokenizer, store.text(d)))
    if len(tokens) != length:
      raise ValueError(f"{directory}: context {int(ids[pos])} assembled to {len(tokens)} tokens, "
                       f"expected {length}; the corpus store changed since the build")
    provenance = {"method": method, "context": int(ids[pos]), "seed": seed, "shard": shard,
                  "num_shards": num_shards, "spans": [list(s) for s in spans]}
    yield {"targets": tokens, "provenance": json.dumps(provenance)}



class PlannedMethod:
  """The half shared by methods whose contexts are fixed at build time (KNN, ICLM): the
  manifest over their per-length plans, and streaming a shard of a plan."""
  name: str

  def write_plan_manifest(self, out: Path, ctx: BuildContext, cfg: MethodOptions,
                          stats: Mapping[str, Any], skipped: list, retrieval_info: Any) -> None:
    io.write_manifest(
        out, kind=self.name,
        config={**dataclasses.asdict(cfg), "lengths": list(ctx.lengths),
                "tokenizer": tokenizer_signature(ctx.tokenizer)},
        inputs={"store": chunking.store_fingerprint(ctx.store)},
        counts=stats, skipped=skipped, extra={"retrieval": retrieval_info})

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    index_dir = Path(index_dir)
    return stream_plan(index_dir / self.name, method=self.name, store=corpus.open_store(index_dir),
                       length=length, tokenizer=tokenizer, shard=shard, num_shards=num_shards,
                       seed=seed)
