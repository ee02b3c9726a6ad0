"""Embedding elsewhere (synth/embed_table.py): the table reproduces local MiniLM vectors, and a
build that reads it writes the same neighbour lists and plans as a build that embeds itself."""

import json
import random

import numpy as np
import pytest

from longjax.synth import embed, embed_table
from longjax.synth.__main__ import main

EMBEDDER = "minilm-32"  # the real model, truncated: fast enough for a test on 2 CPU cores
TOPICS = {
    "sea": "ship harbour sailor storm wave anchor tide coast fleet captain voyage island",
    "farm": "wheat harvest barn cattle plough field tractor orchard farmer seed soil rain",
    "court": "judge jury trial verdict lawyer witness appeal sentence evidence court law",
    "space": "rocket orbit planet astronaut launch moon telescope galaxy satellite star",
}


def _corpus(root):
  """30 articles, each on one of four topics, with several paragraphs (two NExtLong chunks)."""
  rng = random.Random(0)
  d = root / "texts"
  d.mkdir()
  for i in range(30):
    words = TOPICS[list(TOPICS)[i % 4]].split()
    paragraphs = [" ".join(rng.choice(words) for _ in range(60)).capitalize() + "."
                  for _ in range(8)]
    (d / f"a{i:02d}.txt").write_text(f"Article {i}.\n" + "\n".join(paragraphs))
  return d


def _build(corpus, out, *extra):
  assert main(["build", "--corpus", str(corpus), "--out", str(out), "--methods", "knn,nextlong",
               "--embedder", EMBEDDER, "--lengths", "2048", *extra]) == 0


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
  """A local build and one through embed-inputs -> embed-table -> build --embedding-table."""
  root = tmp_path_factory.mktemp("embed_table")
  corpus = _corpus(root)
  _build(corpus, root / "local")
  assert main(["build", "--corpus", str(corpus), "--out", str(root / "remote"),
               "--methods", "none"]) == 0
  table = root / "table"
  assert main(["embed-inputs", "--index-dir", str(root / "remote"), "--embedder", EMBEDDER,
               "--out", str(table)]) == 0
  assert main(["embed-table", str(table), "--embedder", EMBEDDER]) == 0
  _build(corpus, root / "remote", "--embedding-table", str(table))
  return root


def test_table_vectors_match_the_local_embedder(builds):
  local = np.load(builds / "local" / "embeddings" / "chunks-2048" / "vectors.npy")
  remote = np.load(builds / "remote" / "embeddings" / "chunks-2048" / "vectors.npy")
  assert local.shape == remote.shape and len(local) >= 60
  assert np.abs(local - remote).max() < 2e-3  # float16 rounding of unit vectors
  assert (np.sum(local * remote, axis=1) > 0.99999).all()


def test_build_from_table_equals_local_build(builds):
  """Neighbour lists agree up to near-ties (float16: a swap only where similarities differ by
  < 2e-3); the methods' plans, which use the nearest neighbours, are identical."""
  vectors = np.load(builds / "local" / "embeddings" / "docs" / "vectors.npy")
  (lists,) = (builds / "local" / "neighbours").glob("docs-k*/neighbours.npy")
  local, remote = np.load(lists), np.load(builds / "remote" / lists.relative_to(builds / "local"))
  sims = lambda ids: np.take_along_axis(vectors @ vectors.T, ids, axis=1)
  assert np.abs(sims(local) - sims(remote)).max() < 2e-3
  np.testing.assert_array_equal(local[:, :5], remote[:, :5])
  plans = sorted(p.relative_to(builds / "local") for d in ("knn", "nextlong/plans")
                 for p in (builds / "local" / d).glob("*.npy"))
  assert len(plans) == 4  # KNN's groups (offsets, spans), NExtLong's meta-documents and counts
  for rel in plans:
    np.testing.assert_array_equal(np.load(builds / "local" / rel),
                                  np.load(builds / "remote" / rel), err_msg=str(rel))
  # the same stage fingerprints: a table-built index is a local build's twin
  local_m = json.loads((builds / "local" / "manifest.json").read_text())
  remote_m = json.loads((builds / "remote" / "manifest.json").read_text())
  assert local_m["stages"] == remote_m["stages"]
  assert remote_m["config"]["embedding_table"].endswith("table")


def test_inputs_are_the_encoders_word_pieces(builds):
  data = np.load(builds / "table" / embed_table.INPUTS)
  encoder = embed.make_embedder(EMBEDDER).encoder
  text = (builds / "texts" / "a00.txt").read_text()
  row = int(np.flatnonzero(data["keys"] == np.uint64(embed_table.text_key(text)))[0])
  ids = data["ids"][data["offsets"][row]:data["offsets"][row + 1]].tolist()
  assert ids == encoder.token_ids([text])[0] and len(ids) == 32


def test_table_errors_are_clear(builds, tmp_path):
  table = builds / "table"
  with pytest.raises(ValueError, match="not in the embedding table"):
    embed_table.TableEmbedder(table, name="minilm-l6-v2-t32", dim=384).embed(["never seen"])
  with pytest.raises(ValueError, match="holds minilm-l6-v2-t32"):
    embed_table.TableEmbedder(table, name="minilm-l6-v2", dim=384)
  with pytest.raises(ValueError, match="no embedding_table manifest"):
    embed_table.TableEmbedder(tmp_path, name="minilm-l6-v2-t32", dim=384)
  broken = tmp_path / "broken"
  broken.mkdir()
  for f in table.iterdir():
    (broken / f.name).write_bytes(f.read_bytes())
  shard = sorted(broken.glob("vectors-*.npy"))[0]
  shard.write_bytes(shard.read_bytes()[:-16])  # truncated in transit
  with pytest.raises(ValueError, match="sha256 differs"):
    embed_table.TableEmbedder(broken, name="minilm-l6-v2-t32", dim=384)
  assert main(["embed-inputs", "--index-dir", str(builds / "remote"), "--embedder", "hashing",
               "--out", str(tmp_path / "t")]) == 2
