"""Host-side input: completing features like seqio's LM converter, zigzag, sources, resume."""

import jax
import numpy as np
import pytest

from longjax.ops.zigzag import unzigzag
from longjax.train.data import IterableSource, SyntheticSource, complete, zigzag_batch


def test_complete_packed_features_by_hand():
  targets = np.array([[5, 6, 7, 8, 9, 0]])
  seg = np.array([[1, 1, 1, 2, 2, 0]])
  out = complete({"decoder_target_tokens": targets, "decoder_segment_ids": seg})
  np.testing.assert_array_equal(out["decoder_positions"], [[0, 1, 2, 0, 1, 0]])
  np.testing.assert_array_equal(out["decoder_input_tokens"], [[0, 5, 6, 0, 8, 0]])
  np.testing.assert_array_equal(out["decoder_loss_weights"], [[1, 1, 1, 1, 1, 0]])


def test_complete_rejects_bad_batches():
  with pytest.raises(ValueError, match="needs 'decoder_target_tokens'"):
    complete({"targets": np.zeros((1, 4))})
  with pytest.raises(ValueError, match="decoder_positions has shape"):
    complete({"decoder_target_tokens": np.ones((2, 4)), "decoder_positions": np.ones((2, 3))})


def test_zigzag_keeps_features_aligned():
  b = complete({"decoder_target_tokens": np.arange(1, 17).reshape(1, 16)})
  with jax.transfer_guard("disallow"):  # host batches never visit a device
    z = zigzag_batch(b, 4)
  assert all(type(v) is np.ndarray for v in z.values())
  for k in b:
    np.testing.assert_array_equal(np.asarray(unzigzag(z[k], 4, axis=1)), b[k])
  # Shard 0 of 4 holds chunks 0 and 7 (of 8): tokens 1-2 and 15-16.
  np.testing.assert_array_equal(z["decoder_target_tokens"][0, :4], [1, 2, 15, 16])
  # The label of every position is still the next token of its input.
  np.testing.assert_array_equal(z["decoder_input_tokens"][0, :4], [0, 1, 14, 15])


def test_sources_resume_exactly():
  syn = SyntheticSource(vocab_size=50, seq_len=8, seed=3)
  full = [b for _, b in zip(range(5), syn.batches(start=0, rows=slice(0, 4), global_batch=4))]
  later = next(syn.batches(start=3, rows=slice(2, 4), global_batch=4))
  np.testing.assert_array_equal(later["decoder_target_tokens"],
                                full[3]["decoder_target_tokens"][2:])
  src = IterableSource(lambda: ({"decoder_target_tokens": np.full((2, 4), i)} for i in range(9)))
  got = [b["decoder_target_tokens"][0, 0] for b in src.batches(start=6, rows=slice(1, 2),
                                                                 global_batch=2)]
  assert got == [6, 7, 8]
