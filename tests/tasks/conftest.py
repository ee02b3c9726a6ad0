"""Fixtures for the SeqIO-layer tests: a byte-level HF tokenizer dir and a small built index."""

import json

import numpy as np
import pytest

from tests.helpers.synth import byte_tokenizer

TOPICS = [["river", "boat", "water", "fish"], ["stock", "market", "price", "trade"],
          ["goal", "match", "team", "score"], ["chip", "code", "server", "data"]]


@pytest.fixture(scope="session")
def byte_tokenizer_dir(tmp_path_factory):
  """An HF tokenizer directory (tokenizer.json): one token per UTF-8 byte, BOS 1, EOS 2."""
  path = tmp_path_factory.mktemp("bytetok") / "bytes"
  byte_tokenizer()._impl.save_pretrained(path)  # pylint: disable=protected-access
  return path


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
  rng = np.random.default_rng(0)
  path = tmp_path_factory.mktemp("corpus") / "toy.jsonl"
  with open(path, "w") as f:
    for i in range(60):
      words = TOPICS[i % 4]
      lines = [" ".join(rng.choice(words, int(rng.integers(3, 10))))
               for _ in range(int(rng.integers(1, 5)))]
      f.write(json.dumps({"id": f"t{i}", "text": f"doc {i}: " + "\n".join(lines)}) + "\n")
  return path


@pytest.fixture(scope="session")
def index_dir(tmp_path_factory, corpus_file, byte_tokenizer_dir):
  """`synth build` of the toy corpus: all four methods at L = 128 with the hashing embedder."""
  from longjax.synth import build
  out = tmp_path_factory.mktemp("index") / "idx"
  build.run_build(build.BuildOptions(
      corpus=str(corpus_file), out=out, methods=("standard", "knn", "iclm", "nextlong"),
      embedder="hashing-64", tokenizer=str(byte_tokenizer_dir), lengths=(128,),
      config={"nextlong": {"chunk_size": 40, "chars_per_token": 1.0}}),
      progress=lambda x, **_: x, log_fn=lambda _: None)
  return out
