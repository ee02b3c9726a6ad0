"""The bundled default corpus (`--corpus default`): the training part of `longjax.bundled_texts`.

The split itself (BBC News minus the reserved items for training; SOTU, Shakespeare and the
reserved BBC items held out) is `bundled_texts`'s, shared with evaluation. Here the held-out
texts never enter the training store: the build skips any document whose text hash equals a
held-out one (reason `heldout`, which also catches BBC's duplicated articles) and then asserts
disjointness by hash. `heldout_hashes` also keeps any other corpus apart from them
(`synth.build.open_corpus`).
"""

from __future__ import annotations

import os

from longjax import io
from longjax.bundled_texts import (RESERVED_PER_CLASS, RESERVED_SEED, bbc_documents,
                                   heldout_documents, reserved_bbc_ids, source_files)
from longjax.progress import Progress, silent
from longjax.synth.corpus import DocumentStore, build_store, text_hash


def heldout_hashes() -> set[str]:
  """Text hashes of everything kept out of training: long held-out docs and reserved BBC items."""
  reserved = set(reserved_bbc_ids())
  bbc = [d for d in bbc_documents() if d.key in reserved]
  texts = [d.text for d in heldout_documents()]
  texts += [d.text.decode("utf-8", "replace") for d in bbc]
  return {text_hash(t) for t in texts}


def build_default_corpus(out_dir: str | os.PathLike, *,
                         progress: Progress = silent
                         ) -> DocumentStore:
  """Builds (or reopens) the default training store: BBC minus reserved, disjoint from held out."""
  config = {"source": "default", "reserved_per_class": RESERVED_PER_CLASS,
            "reserved_seed": RESERVED_SEED, "max_chars": 1_000_000}
  inputs = {"files": io.fingerprint_files(source_files())}
  if io.is_complete(out_dir, config=config, inputs=inputs):
    return DocumentStore(out_dir)
  held = heldout_hashes()
  # Reserved items go in too: they are skipped as `heldout`, so the manifest lists all 2,225.
  store = build_store(bbc_documents(), out_dir, max_chars=config["max_chars"], config=config,
                      inputs=inputs, heldout_hashes=held, progress=progress)
  store.assert_disjoint(held)
  return store
