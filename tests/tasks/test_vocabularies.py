"""Vocabularies: HF wrapper against the tokenizer itself, SentencePiece training and ids."""

import pickle

import numpy as np
import pytest
import seqio
import tensorflow as tf

from longjax.models.tokenizer import load_tokenizer
from longjax.tasks import train_spm
from longjax.tasks.vocabularies import HFVocabulary, make_vocabulary, tokenizer_of

TEXT = "The river bank, not the bank of England: 42 boats\nand a café."


def test_hf_vocabulary_matches_its_tokenizer(byte_tokenizer_dir):
  vocab = make_vocabulary(byte_tokenizer_dir)
  assert isinstance(vocab, HFVocabulary)
  tok = load_tokenizer(byte_tokenizer_dir)
  ids = vocab.encode(TEXT)
  assert ids == tok.encode(TEXT) and len(ids) == len(TEXT.encode("utf-8"))  # one per byte
  assert vocab.decode(ids) == TEXT
  assert vocab.encode_tf(tf.constant(TEXT)).numpy().tolist() == ids
  assert vocab.decode_tf(tf.constant(ids)).numpy().decode() == TEXT
  two = vocab.decode_tf(tf.constant([ids[:5], ids[5:10]])).numpy()
  assert [t.decode() for t in two] == [TEXT[:5], TEXT[5:10]]
  assert (vocab.bos_id, vocab.eos_id, vocab.pad_id) == (1, 2, 0)
  assert vocab.vocab_size == tok.vocab_size == 259
  assert vocab.id_offset == 0  # id 0 is <pad> here: ids travel through seqio unshifted
  # decode stops at the first EOS, as every seqio vocabulary does
  assert vocab.decode(ids[:3] + [vocab.eos_id] + ids[3:]) == TEXT[:3]


def test_hf_vocabulary_equality_and_pickling(byte_tokenizer_dir, tmp_path):
  a, b = HFVocabulary(byte_tokenizer_dir), HFVocabulary(str(byte_tokenizer_dir))
  assert a == b
  copy_dir = tmp_path / "copy"
  impl = load_tokenizer(byte_tokenizer_dir)._impl  # pylint: disable=protected-access
  impl.save_pretrained(copy_dir)
  assert HFVocabulary(copy_dir) == a  # same content under another path
  assert HFVocabulary(byte_tokenizer_dir, extra_ids=2) != a
  restored = pickle.loads(pickle.dumps(a))
  assert restored == a and restored.encode("abc") == a.encode("abc")


def test_smollm2_specials():
  """SmolLM2's tokenizer (Llama-style BPE): the specials its config names."""
  vocab = make_vocabulary("smollm2")
  impl = vocab.tokenizer._impl  # pylint: disable=protected-access
  assert vocab.bos_id == impl.convert_tokens_to_ids(impl.bos_token)
  assert vocab.eos_id == impl.convert_tokens_to_ids(impl.eos_token)
  assert vocab.eos_id is not None and vocab.bos_id is not None and vocab.bos_id != vocab.eos_id
  # id 0 is <|endoftext|>, the document separator every SmolLM2 sample holds: shifted by one in
  # seqio, so that seqio's padding (0) never meets it.
  assert vocab.pad_id == 0 and vocab.id_offset == 1
  assert vocab.encode(TEXT) == [i + 1 for i in vocab.tokenizer.encode(TEXT)]
  assert vocab.decode(vocab.encode(TEXT)) == TEXT
  assert vocab.vocab_size == vocab.tokenizer.vocab_size + 1


def test_train_sentencepiece_cli_and_vocabulary(corpus_file, tmp_path, capsys):
  out = tmp_path / "toy.model"
  assert train_spm.main(["--corpus", str(corpus_file), "--out", str(out),
                         "--vocab-size", "300"]) == 0
  assert out.is_file() and out.with_suffix(".vocab").is_file()
  vocab = make_vocabulary(out)
  assert isinstance(vocab, seqio.SentencePieceVocabulary)
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id, vocab.bos_id) == (0, 1, 2, 3)
  tok = tokenizer_of(vocab)
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 3)
  text = "river boat water fish"
  assert vocab.encode(text) == tok.encode(text)
  assert vocab.decode(vocab.encode(text)) == text
  assert np.all(np.asarray(vocab.encode("日本")) < vocab.vocab_size)  # byte fallback
  assert train_spm.main(["--corpus", str(tmp_path / "missing"), "--out", str(out)]) == 2
  assert "no such file" in capsys.readouterr().err


def test_make_vocabulary_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="SentencePiece model not found"):
    make_vocabulary(tmp_path / "nope.model")
  with pytest.raises(TypeError, match="no longjax tokenizer"):
    tokenizer_of(seqio.PassThroughVocabulary(5))
