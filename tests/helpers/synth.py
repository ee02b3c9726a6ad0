"""Helpers for the synthesis-method tests: a byte-level tokenizer and small on-disk stores.

The byte tokenizer maps every UTF-8 byte to one token (a BPE with no merges), so token counts
of ASCII text equal character counts and expected contexts can be computed by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from longjax.documents import RawDocument
from longjax.models.tokenizer import Tokenizer
from longjax.synth import corpus

PAD, BOS, EOS = 0, 1, 2


def byte_tokenizer() -> Tokenizer:
  from tokenizers import Tokenizer as RawTokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast

  alphabet = pre_tokenizers.ByteLevel.alphabet()
  vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS}
  vocab.update({ch: i + 3 for i, ch in enumerate(sorted(alphabet))})
  raw = RawTokenizer(models.BPE(vocab=vocab, merges=[]))
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  raw.decoder = decoders.ByteLevel()
  fast = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>")
  return Tokenizer("bytes", fast, "hf", BOS, EOS, PAD)


def make_store(index_dir: Path, texts: Sequence[str]) -> corpus.DocumentStore:
  """A corpus store under `index_dir` (as `build` lays it out) holding `texts` in order."""
  raws = [RawDocument(f"test:{i}", t, key=f"d{i}") for i, t in enumerate(texts)]
  store = corpus.build_store(raws, Path(index_dir) / corpus.STORE_DIRNAME)
  assert len(store) == len(texts), "test texts must be distinct and non-blank"
  return store
