"""Tests for the shared packer: hand-computed cuts and the stream-prefix property."""

import numpy as np
import pytest

from longjax.models.tokenizer import Boundaries
from longjax.synth.methods import packer


def test_carry_hand_computed():
  # doc 7: 5 tokens + EOS = 6, doc 8: 2 + EOS = 3, doc 9: 6 + EOS = 7; total 16, L = 4.
  out = list(packer.pack([(7, 6), (8, 3), (9, 7)], 4, overflow="carry"))
  assert out == [
      [(7, 0, 4)],
      [(7, 4, 6), (8, 0, 2)],
      [(8, 2, 3), (9, 0, 3)],
      [(9, 3, 7)],
  ]


def test_truncate_hand_computed():
  out = list(packer.pack([(7, 6), (8, 3), (9, 2), (10, 1), (11, 5)], 4, overflow="truncate"))
  # ctx 0 cuts doc 7 at 4 (tail of 2 dropped); ctx 1: doc 8 (3) + doc 9's first token;
  # ctx 2: doc 10 (1) + 3 tokens of doc 11; nothing left for a full context.
  assert out == [[(7, 0, 4)], [(8, 0, 3), (9, 0, 1)], [(10, 0, 1), (11, 0, 3)]]


def test_partial_tail_is_not_emitted():
  assert list(packer.pack([(0, 3)], 4)) == []
  assert list(packer.pack([(0, 4)], 4)) == [[(0, 0, 4)]]


EOS_ONLY = Boundaries((), (1,), "test: EOS after each document")


@pytest.mark.parametrize("boundaries", [EOS_ONLY, Boundaries((3,), (1,), "test: BOS + EOS")])
def test_pack_tokens_carry_is_a_prefix_of_the_wrapped_stream(boundaries):
  rng = np.random.default_rng(0)
  docs = [(i, rng.integers(10, 100, size=rng.integers(0, 30)).tolist()) for i in range(50)]
  stream = np.concatenate([[*boundaries.start, *t, *boundaries.end] for _, t in docs])
  out = list(packer.pack_tokens(docs, 16, boundaries=boundaries, overflow="carry"))
  assert len(out) == len(stream) // 16
  got = np.concatenate([t for t, _ in out])
  np.testing.assert_array_equal(got, stream[:len(got)])
  for tokens, spans in out:
    assert tokens.dtype == np.int32 and tokens.shape == (16,)
    assert sum(e - s for _, s, e in spans) == 16


def test_pack_tokens_truncate_restarts_at_next_document():
  docs = [(0, [5] * 6), (1, [6] * 2), (2, [7] * 9)]
  out = list(packer.pack_tokens(docs, 4, boundaries=EOS_ONLY, overflow="truncate"))
  assert [t.tolist() for t, _ in out] == [[5, 5, 5, 5], [6, 6, 1, 7]]


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="overflow"):
    list(packer.pack([(0, 3)], 4, overflow="wrap"))
  with pytest.raises(ValueError, match="length"):
    list(packer.pack([(0, 3)], 0))
  with pytest.raises(ValueError, match="document 3"):
    list(packer.pack([(3, 0)], 4))
