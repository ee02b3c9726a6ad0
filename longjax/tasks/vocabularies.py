"""SeqIO vocabularies for longjax Tasks, and SentencePiece training for scaled-down runs.

Two kinds, both usable as `seqio.Feature(vocabulary=...)`:

* `seqio.SentencePieceVocabulary` for `.model` files. Models trained by `train_sentencepiece`
  reserve PAD=0, EOS=1, UNK=2 (seqio's convention) and BOS=3, so every method can add the
  specials it needs.
* `HFVocabulary`, a `seqio.Vocabulary` over a Hugging Face tokenizer (SmolLM2's and Llama 3's
  byte-level BPE kind) through `longjax.models.tokenizer`, addressed by the same tokenizer spec
  that `python -m longjax.synth build --tokenizer` takes (`smollm2`, an HF dir, a .gguf file).

Specials. `encode` never adds boundary tokens (the synthesis methods wrap every document in
`Tokenizer.boundaries`), so Feature `add_eos` must stay False for these Tasks.

Id 0. seqio pads with 0 and its packing treats every 0 as padding: an example holding a 0 loses
its tail and the 0s lose their segment. In SentencePiece models trained here 0 is PAD, but in
Hugging Face vocabularies it is often a real token: SmolLM2's document separator
`<|endoftext|>` (which every SmolLM2 sample holds, one per document) or Llama 3's "!". So inside
the SeqIO layer an `HFVocabulary` with `id_offset` 1 carries every id shifted up by one
(`MethodSource` adds it, `_encode`/`_decode` apply it), which leaves 0 free for padding, and
`longjax.tasks.input.SeqioBatches` shifts the packed batches back before the model sees them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import seqio
import tensorflow as tf

from longjax.models.tokenizer import Tokenizer, load_tokenizer, load_tokenizer_spec

SPM_PAD, SPM_EOS, SPM_UNK, SPM_BOS = 0, 1, 2, 3


class HFVocabulary(seqio.Vocabulary):
  """A `seqio.Vocabulary` over a Hugging Face tokenizer, loaded lazily (picklable for Beam)."""

  def __init__(self, spec: str | os.PathLike, extra_ids: int = 0):
    self._spec = str(spec)
    self._tokenizer: Tokenizer | None = None
    super().__init__(extra_ids=extra_ids)

  @property
  def spec(self) -> str:
    return self._spec

  @property
  def tokenizer(self) -> Tokenizer:
    if self._tokenizer is None:
      tok = load_tokenizer_spec(self._spec)
      if tok._kind != "hf":  # pylint: disable=protected-access
        raise ValueError(f"{self._spec}: not a Hugging Face tokenizer; use "
                         "seqio.SentencePieceVocabulary for .model files")
      self._tokenizer = tok
    return self._tokenizer

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state["_tokenizer"] = None
    return state

  @property
  def bos_id(self) -> Optional[int]:
    return self.tokenizer.bos_id

  @property
  def eos_id(self) -> Optional[int]:
    return self.tokenizer.eos_id

  @property
  def unk_id(self) -> Optional[int]:
    return self.tokenizer._impl.unk_token_id  # pylint: disable=protected-access

  @property
  def pad_id(self) -> int:
    return 0

  @property
  def id_offset(self) -> int:
    """1 when the tokenizer's id 0 can occur in data (module docstring), else 0."""
    impl = self.tokenizer._impl  # pylint: disable=protected-access
    return int(impl.pad_token_id != 0 or 0 in self.tokenizer.boundaries.ids)

  @property
  def _base_vocab_size(self) -> int:
    return self.tokenizer.vocab_size + self.id_offset

  def _encode(self, s: str) -> Sequence[int]:
    return [i + self.id_offset for i in self.tokenizer.encode(s)]

  def _decode(self, ids: Iterable[int]) -> str:
    return self.tokenizer.decode([int(i) - self.id_offset for i in ids
                                  if self.id_offset <= int(i) < self._base_vocab_size])

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    def enc(x):
      return tf.constant(self._encode(x.numpy().decode("utf-8")), tf.int32)
    out = tf.py_function(enc, [s], tf.int32)
    out.set_shape([None])
    return out

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    def dec(x):
      x = x.numpy()
      if x.ndim == 1:
        return tf.constant(self._decode(x[x != 0]))
      return tf.constant([self._decode(row[row != 0]) for row in x])
    out = tf.py_function(dec, [ids], tf.string)
    out.set_shape(ids.shape[:-1])
    return out

  def _fingerprint(self) -> str:
    """Content hash of the tokenizer (its vocabulary and merges), not of the spec string."""
    impl = self.tokenizer._impl  # pylint: disable=protected-access
    data = impl.backend_tokenizer.to_str() if hasattr(impl, "backend_tokenizer") else str(
        sorted(impl.get_vocab().items()))
    return hashlib.sha256(data.encode("utf-8")).hexdigest()

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, HFVocabulary):
      return False
    if self._spec == other._spec and self.extra_ids == other.extra_ids:
      return True
    return (self.extra_ids == other.extra_ids and self.bos_id == other.bos_id and
            self.eos_id == other.eos_id and self._fingerprint() == other._fingerprint())

  def __hash__(self) -> int:
    return hash(("HFVocabulary", self.tokenizer.vocab_size, self.extra_ids))

  def __str__(self) -> str:
    return f"HFVocabulary(spec={self._spec}, vocab_size={self.vocab_size})"


def make_vocabulary(spec: str | os.PathLike) -> seqio.Vocabulary:
  """A SentencePiece vocabulary for `.model` files, else an `HFVocabulary`."""
  spec = str(spec)
  if spec.endswith(".model"):
    if not Path(spec).is_file():
      raise FileNotFoundError(f"SentencePiece model not found: {spec}")
    return seqio.SentencePieceVocabulary(spec)
  return HFVocabulary(spec)


def id_offset(vocabulary: seqio.Vocabulary) -> int:
  """How far token ids are shifted inside the SeqIO layer (0 for SentencePiece; see above)."""
  return getattr(vocabulary, "id_offset", 0)


def tokenizer_of(vocabulary: seqio.Vocabulary) -> Tokenizer:
  """The longjax Tokenizer behind a vocabulary (what the synthesis methods tokenize with)."""
  if isinstance(vocabulary, HFVocabulary):
    return vocabulary.tokenizer
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return load_tokenizer(vocabulary.sentencepiece_model_file)
  raise TypeError(f"no longjax tokenizer for {type(vocabulary).__name__}; use a "
                  "SentencePieceVocabulary or an HFVocabulary")


def train_sentencepiece(texts: Iterable[str], out: str | os.PathLike, *, vocab_size: int = 8000,
                        model_type: str = "bpe", character_coverage: float = 0.9995,
                        max_sentences: int = 2_000_000) -> Path:
  """Trains a SentencePiece model with PAD=0, EOS=1, UNK=2, BOS=3 and byte fallback.

  `texts` are split into lines (SentencePiece trains on sentences); at most `max_sentences`
  lines are used. Writes `<out>` (a `.model` path) and `<out without .model>.vocab` atomically.
  """
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  from longjax.io import write_bytes  # pylint: disable=import-outside-toplevel

  out = Path(out)
  if out.suffix != ".model":
    raise ValueError(f"output {out}: expected a path ending in .model")
  if vocab_size < 300:
    raise ValueError(f"vocab_size ({vocab_size}) must be >= 300 (256 byte pieces + specials)")

  def lines():
    n = 0
    for text in texts:
      for line in text.split("\n"):
        if line.strip():
          yield line
          n += 1
          if n >= max_sentences:
            return

  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=out.parent, prefix=".tmp-spm-") as tmp:
    spm.SentencePieceTrainer.train(
        sentence_iterator=lines(), model_prefix=str(Path(tmp) / "spm"), vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage, byte_fallback=True,
        pad_id=SPM_PAD, eos_id=SPM_EOS, unk_id=SPM_UNK, bos_id=SPM_BOS,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", bos_piece="<s>",
        input_sentence_size=max_sentences, shuffle_input_sentence=True, minloglevel=2)
    write_bytes(out.with_suffix(".vocab"), (Path(tmp) / "spm.vocab").read_bytes())
    write_bytes(out, (Path(tmp) / "spm.model").read_bytes())
  return out
