"""Standard: shuffle the documents and concatenate them (specs/baselines.md §1).

The seeded permutation of all document ids is made at stream time from the example seed, so
`build` only counts tokens for the manifest's budget. Shard `i` of `n` takes a contiguous range
of the permutation and streams it through the `carry` packer (a document longer than L flows
over several contexts, as in every method); the trailing partial context of each shard
(< L tokens) is dropped.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from longjax import io
from longjax.models.tokenizer import Tokenizer
from longjax.synth import chunking, corpus
from longjax.synth.methods import contexts, packer
from longjax.synth.methods.base import BuildContext, DocStore, shard_range
from longjax.synth.methods.options import MethodOptions


@dataclasses.dataclass(frozen=True)
class StandardOptions(MethodOptions):
  """Standard takes no options: its order comes from the example seed, its packing is `carry`."""


def standard_order(doc_ids: np.ndarray, seed: int) -> np.ndarray:
  """The seeded permutation of all document ids."""
  return np.random.default_rng(seed).permutation(np.asarray(doc_ids, np.int64))


def stream_standard(store: DocStore, *, length: int, tokenizer: Tokenizer, shard: int,
                    num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
  """Standard examples for one shard of `store` (see module docstring)."""
  order = standard_order(store.doc_ids(), seed)
  mine = order[shard_range(len(order), shard, num_shards)]
  docs = ((int(d), tokenizer.encode(store.text(int(d)))) for d in mine)
  for i, (tokens, spans) in enumerate(packer.pack_tokens(
      docs, length, boundaries=tokenizer.boundaries, overflow="carry")):
    provenance = {"method": "standard", "context": i, "seed": seed, "shard": shard,
                  "num_shards": num_shards, "spans": [list(s) for s in spans]}
    yield {"targets": tokens, "provenance": json.dumps(provenance)}


class StandardMethod:
  """The Standard baseline (`longjax_<corpus>_standard_<length>`)."""
  name = "standard"
  options_type = StandardOptions

  def build(self, ctx: BuildContext) -> None:
    ctx.options(self)  # none to use; an unknown one is an error, not ignored
    doc_ids = np.asarray(ctx.store.doc_ids(), np.int64)
    counts = contexts.store_token_counts(ctx)
    total = int(counts.sum())
    budgets = {f"L{n}": contexts.budget(samples=total // n, length=n, documents_used=len(doc_ids),
                                        source_tokens=total, source_tokens_dropped=total % n)
               for n in ctx.lengths}
    io.write_manifest(
        ctx.method_dir(self.name), kind=self.name,
        config={"overflow": "carry", "tokenizer": contexts.tokenizer_signature(ctx.tokenizer)},
        inputs={"store": chunking.store_fingerprint(ctx.store)},
        counts={"documents": len(doc_ids), "budget": budgets},
        extra={"note": "every document is streamed; the permutation comes from the example seed "
                       "and each shard drops its trailing partial context (< L tokens); the "
                       "budget is for one shard"})
    ctx.log(f"standard: {len(doc_ids)} documents; {budgets}")

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    return stream_standard(corpus.open_store(Path(index_dir)), length=length,
                           tokenizer=tokenizer, shard=shard, num_shards=num_shards, seed=seed)
