"""`synth preview`: the printed structure matches the sample's provenance."""

import json

import numpy as np
import pytest

from longjax.synth import embed, preview
from longjax.synth.methods import METHODS
from longjax.synth.methods.base import BuildContext
from tests.helpers.synth import byte_tokenizer, make_store


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  index_dir = tmp_path_factory.mktemp("preview")
  rng = np.random.default_rng(1)
  texts = [f"doc {i}: " + "\n".join(" ".join(rng.choice(["ab", "cd", "ef", "gh"], 5))
                                    for _ in range(3)) + "\nend" for i in range(30)]
  store = make_store(index_dir, texts)
  ctx = BuildContext(store, byte_tokenizer(), embed.HashingEmbedder(32),
                     {"nextlong": {"chunk_size": 40, "chars_per_token": 1.0}}, index_dir,
                     lengths=(96,))
  for name in ("standard", "nextlong"):
    METHODS[name].build(ctx)
  return index_dir


def test_preview_lists_every_piece_with_its_boundaries(built):
  tok = byte_tokenizer()
  text = preview.preview("longjax_toy_standard_96", index_dir=built, tokenizer=tok, num=2)
  first = next(METHODS["standard"].examples(built, length=96, tokenizer=tok, shard=0,
                                            num_shards=1, seed=0))
  spans = json.loads(first["provenance"])["spans"]
  pos = 0
  for doc, start, end in spans:  # every piece appears with its sample and document ranges
    assert f"{pos}-{pos + end - start}" in text and f"{start}-{end}/" in text
    pos += end - start
  assert text.count("\nsample ") == 2 and "(cut tail)" in text


def test_preview_nextlong_blocks_and_errors(built):
  tok = byte_tokenizer()
  text = preview.preview("longjax_toy_nextlong_96_mix", index_dir=built, tokenizer=tok)
  assert "block 1: META chunk" in text and "neg   1" in text and "a Mixture" in text
  with pytest.raises(ValueError, match="unknown method 'bogus'"):
    preview.preview("longjax_toy_bogus_96", index_dir=built, tokenizer=tok)
