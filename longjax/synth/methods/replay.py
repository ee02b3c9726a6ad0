"""The short-document replay stream that the `..._mix` Mixtures add to each long-context arm.

Replay examples are the corpus documents themselves, one per example (wrapped in the same
boundary tokens as in every method), in a seeded random order; a document longer than L is split
into L-token pieces.
The trainer's packing feature converter packs them with segment ids, so short-context ability is
trained on short documents. Shards are contiguous ranges of the permutation. TF-free like the
methods; `longjax.tasks` registers it as `longjax_<corpus>_replay_<length>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from longjax.models.tokenizer import Tokenizer
from longjax.synth import corpus
from longjax.synth.methods import contexts
from longjax.synth.methods.base import shard_range

NAME = "replay"


def replay_examples(index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
                    num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
  """`{"targets": int32[<= length], "provenance": json}` per document (or L-token piece)."""
  store = corpus.open_store(index_dir)
  # A stream of its own: never the same order as Standard under the same seed.
  order = np.random.default_rng([seed, 0x5EED]).permutation(store.doc_ids())
  for pos in shard_range(len(order), shard, num_shards):
    doc = int(order[pos])
    tokens = contexts.document_tokens(tokenizer, store.text(doc))
    for start in range(0, len(tokens), length):
      piece = tokens[start:start + length]
      provenance = {"method": NAME, "seed": seed, "shard": shard, "num_shards": num_shards,
                    "spans": [[doc, start, start + len(piece)]]}
      yield {"targets": piece, "provenance": json.dumps(provenance)}


def mean_tokens(index_dir: str | Path, tokenizer: Tokenizer, length: int, *,
                sample: int = 512, seed: int = 0) -> float:
  """Mean tokens per replay example, estimated on a seeded sample of documents."""
  store = corpus.open_store(index_dir)
  ids = np.random.default_rng(seed).permutation(store.doc_ids())[:sample]
  sizes = []
  for d in ids:
    n = len(contexts.document_tokens(tokenizer, store.text(int(d))))
    sizes += [length] * (n // length) + ([n % length] if n % length else [])
  return float(np.mean(sizes)) if sizes else float(length)
