"""ScaNN retrieval against the exact reference; settings by size; save/load; neighbour lists."""

import subprocess
import sys

import numpy as np
import pytest

from longjax import io
from longjax.synth.retrieval import (Index, IndexConfig, brute_force_search, build_index,
                                     index_config, merge_top_k, neighbour_lists, recall_at_k,
                                     write_lists)


def _clustered(n, d, seed=0, clusters=200):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((clusters, d)).astype(np.float32)
  x = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_brute_force_matches_full_sort():
  db, q = _clustered(500, 16), _clustered(37, 16, seed=1)
  ids, scores = brute_force_search(db, q, 9, batch_size=10)
  sims = q @ db.T
  ref = np.argsort(-sims, axis=1, kind="stable")[:, :9]
  np.testing.assert_array_equal(ids, ref)
  np.testing.assert_allclose(scores, np.take_along_axis(sims, ref, 1), rtol=1e-6)
  assert brute_force_search(db[:5], q, 9)[0].shape == (37, 5)  # k clipped to n


def test_ties_go_to_smaller_id():
  db = np.asarray([[1, 0], [0, 1], [1, 0], [1, 0]], np.float32)
  ids, _ = brute_force_search(db, db[:1], 3)
  assert ids.tolist() == [[0, 2, 3]]


def test_settings_by_size():
  assert index_config(19_999).kind == "brute_force"
  assert index_config(50_000).kind == "ah"
  c = index_config(1_000_000)
  assert (c.kind, c.num_leaves) == ("tree_ah", 1000) and c.reorder >= 100
  with pytest.raises(ValueError, match="num_leaves_to_search"):
    IndexConfig("tree_ah", num_leaves=10, num_leaves_to_search=11, reorder=10)


def test_small_index_is_exact_and_round_trips(tmp_path):
  x = _clustered(2000, 24)
  index = build_index(x, k=10, out_dir=tmp_path / "idx")
  assert index.config.kind == "brute_force"
  assert index.manifest["counts"]["recall@10"] == pytest.approx(1.0)
  ids, scores = index.search(x[:50], 10)
  ref_ids, ref_scores = brute_force_search(x, x[:50], 10)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  assert recall_at_k(ids, ref_ids) > 0.999
  loaded = Index.load(tmp_path / "idx")
  np.testing.assert_array_equal(loaded.search(x[:50], 10)[0], ids)


@pytest.mark.parametrize("kind", ["ah", "tree_ah"])
def test_approximate_index_recall(tmp_path, kind):
  x = _clustered(20_000, 32)
  config = IndexConfig(kind, num_leaves=140 if kind == "tree_ah" else 0,
                       num_leaves_to_search=30 if kind == "tree_ah" else 0,
                       training_sample_size=20_000, reorder=100)
  index = build_index(x, config=config, k=10, out_dir=tmp_path / kind, recall_queries=300)
  recall = index.manifest["counts"]["recall@10"]
  # Independent check on database rows other than the sample the search was chosen on (the
  # neighbour-list workload the index is tuned for).
  q = x[np.random.default_rng(5).choice(len(x), 300, replace=False)]
  found, _ = Index.load(tmp_path / kind).search(q, 10)
  exact, _ = brute_force_search(x, q, 10)
  assert recall >= 0.95 and recall_at_k(found, exact) >= 0.93


def test_neighbour_lists(tmp_path):
  x = _clustered(3000, 16)
  index = build_index(x, k=10)
  ids, scores = neighbour_lists(index, x, 20, batch_size=700, out_dir=tmp_path / "nn")
  assert ids.shape == (3000, 20)
  assert (ids[:, 0] == np.arange(3000)).mean() > 0.99  # self first (exact search; rare ties)
  assert np.all(np.diff(scores, axis=1) <= 1e-6)
  np.testing.assert_array_equal(np.load(tmp_path / "nn" / "neighbours.npy"), ids)
  again, _ = neighbour_lists(index, x, 20, out_dir=tmp_path / "nn")
  np.testing.assert_array_equal(again, ids)


@pytest.mark.parametrize("shards", [1, 3, 4])
def test_exact_shards_give_the_lists_of_one_index(shards):
  """Brute-force shards + exact merge = one index, duplicates across shards included."""
  x = _clustered(3000, 16)
  x[1500:1600] = x[:100]  # exact ties, split across shards: the smaller id must come first
  one = build_index(x, config=IndexConfig("brute_force"), k=10)
  sharded = build_index(x, config=IndexConfig("brute_force"), k=10, shards=shards)
  assert sharded.manifest["shards"] == {"count": shards,
                                        "offsets": [s * 3000 // shards for s in range(shards + 1)]}
  ids_one, scores_one = neighbour_lists(one, x, 12, batch_size=700)
  ids, scores = neighbour_lists(sharded, x, 12, batch_size=700)
  np.testing.assert_array_equal(ids, ids_one)
  np.testing.assert_array_equal(scores, scores_one)
  ref_ids, ref_scores = brute_force_search(x, x, 12)
  np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
  assert recall_at_k(ids, ref_ids) > 0.995  # numpy and ScaNN round near-ties at the cut apart
  assert ids[:100, :2].tolist() == [[i, i + 1500] for i in range(100)]


def test_scann_shards_recall_and_round_trip(tmp_path):
  x = _clustered(24_000, 32)
  config = IndexConfig("tree_ah", num_leaves=60, num_leaves_to_search=6,
                       training_sample_size=8000, reorder=100)
  # Chosen for 0.97 on the index's sample, so that other rows clear 0.95 despite sampling
  # noise and ScaNN's build-to-build variation (docs/synthesis.md, "Reproducibility").
  index = build_index(x, config=config, k=10, out_dir=tmp_path / "idx", shards=3,
                      recall_queries=400, min_recall=0.97)
  m = index.manifest
  assert m["shards"]["count"] == 3 and m["config"]["shards"] == 3
  assert m["counts"]["recall@10_lower_95"] >= 0.97
  assert (m["search"]["leaves_to_search"], m["search"]["reorder"]) == (
      index.leaves_to_search, index.reorder)
  assert sorted(p.name for p in (tmp_path / "idx" / "scann").iterdir()) == [
      "00000-of-00003", "00001-of-00003", "00002-of-00003"]
  q = x[np.random.default_rng(5).choice(len(x), 600, replace=False)]
  loaded = Index.load(tmp_path / "idx")
  found, _ = loaded.search(q, 10)
  np.testing.assert_array_equal(found, index.search(q, 10)[0])
  assert recall_at_k(found, brute_force_search(x, q, 10)[0]) >= 0.95


def test_tree_ah_builds_are_reproducible(tmp_path):
  """Two builds of one approximate index: the same assets, search and neighbour lists.

  ScaNN's default random k-means start gave a different tree on most builds (89% of top-10
  entries differed at 5 leaves); the k-means++ start (`center_init`) does not."""
  x = _clustered(6000, 16)
  config = IndexConfig("tree_ah", num_leaves=40, num_leaves_to_search=4,
                       training_sample_size=3000, reorder=30)
  built = []
  for b in range(2):
    index = build_index(x, config=config, k=10, out_dir=tmp_path / f"idx{b}", recall_queries=200)
    neighbour_lists(index, x, 10, out_dir=tmp_path / f"nn{b}")
    assets = sorted((tmp_path / f"idx{b}" / "scann").iterdir())
    built.append(({p.name: io.file_sha256(p) for p in assets}, index.manifest["search"],
                  io.read_manifest(tmp_path / f"nn{b}")["fingerprints"]))
  assert built[0] == built[1]
  np.testing.assert_array_equal(np.load(tmp_path / "nn0" / "neighbours.npy"),
                                np.load(tmp_path / "nn1" / "neighbours.npy"))
  assert built[0][2]["neighbours"] == io.fingerprint_array(
      np.load(tmp_path / "nn0" / "neighbours.npy"))
  with pytest.raises(ValueError, match="center_init must be one of"):
    IndexConfig("tree_ah", num_leaves=4, num_leaves_to_search=1, reorder=5, center_init="pp")


def test_shards_searched_alone_merge_into_the_index_search(tmp_path):
  """What the Beam build does: search each shard loaded alone, merge the lists exactly."""
  x = _clustered(3000, 16)
  config = IndexConfig("ah", training_sample_size=3000, reorder=40)
  index = build_index(x, config=config, k=10, out_dir=tmp_path / "idx", shards=3,
                      recall_queries=100)
  parts = [Index.load(tmp_path / "idx", shard=s) for s in range(3)]
  assert [p.offsets for p in parts] == [[0, 1000], [1000, 2000], [2000, 3000]]
  found = [p.search(x[:500], 12) for p in parts]
  ids, scores = merge_top_k([i for i, _ in found], [d for _, d in found], 12)
  ref_ids, ref_scores = index.search(x[:500], 12)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_array_equal(scores, ref_scores)
  with pytest.raises(ValueError, match=r"shard must be in \[0, 3\)"):
    Index.load(tmp_path / "idx", shard=3)


def test_write_lists_refuses_blocks_out_of_order(tmp_path):
  x = _clustered(300, 8)
  index = build_index(x, k=5)
  ids, scores = index.search(x, 5)
  blocks = [(100, ids[100:], scores[100:]), (0, ids[:100], scores[:100])]
  with pytest.raises(ValueError, match="at row 100; expected row 0"):
    write_lists(tmp_path / "nn", index, 300, 5, blocks)
  with pytest.raises(ValueError, match="cover 100 of 300 rows"):
    write_lists(tmp_path / "nn", index, 300, 5, [(0, ids[:100], scores[:100])])
  assert io.read_manifest(tmp_path / "nn") is None


@pytest.mark.parametrize("shards", [0, 2.5, 501, True])
def test_bad_shard_counts_are_refused(shards):
  with pytest.raises(ValueError, match=r"shards must be an integer in \[1, n=500\]"):
    build_index(_clustered(500, 8), k=5, shards=shards)


def test_too_many_leaves_for_a_shard_is_refused():
  config = IndexConfig("tree_ah", num_leaves=200, num_leaves_to_search=20, reorder=50)
  with pytest.raises(ValueError, match="num_leaves .200. must be at most the rows"):
    build_index(_clustered(500, 8), config=config, k=5, shards=3)


def test_scann_import_keeps_tensorflow_out():
  code = ("import sys; from longjax.synth import retrieval; retrieval._scann(); "
          "import longjax.synth.corpus, longjax.synth.embed, longjax.synth.chunking; "
          "assert 'tensorflow' not in sys.modules, 'TF imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


class _Payload:
  """Unpickling this creates the file `path` (what a hostile index would do, harmlessly)."""

  def __init__(self, path):
    self.path = str(path)

  def __reduce__(self):
    return (open, (self.path, "w"))


def test_index_with_a_pickle_is_refused_not_executed(tmp_path):
  """An index from a colleague or a bucket: its scann_docids.pkl must never be unpickled."""
  import pickle  # pylint: disable=import-outside-toplevel
  x = _clustered(500, 8)
  build_index(x, k=5, out_dir=tmp_path / "idx")
  assert not [p for p in (tmp_path / "idx" / "scann").iterdir() if p.suffix == ".pkl"]
  marker = tmp_path / "pwned"
  (tmp_path / "idx" / "scann" / "scann_docids.pkl").write_bytes(pickle.dumps(_Payload(marker)))
  with pytest.raises(ValueError, match="refusing a ScaNN index that holds a pickle"):
    Index.load(tmp_path / "idx")
  with pytest.raises(ValueError, match="pickle"):  # the reuse path of build_index
    build_index(x, k=5, out_dir=tmp_path / "idx")
  assert not marker.exists()


def test_temporaries_of_a_killed_neighbour_stage_are_removed(tmp_path):
  """SIGKILL mid-stage leaves `.tmp-*.npy` (atomic_path never reached its cleanup)."""
  x = _clustered(300, 8)
  index = build_index(x, k=5)
  out = tmp_path / "neighbours"
  out.mkdir()
  litter = [out / ".tmp-0badf00d-neighbours.npy", out / ".tmp-0badf00d-scores.npy"]
  for path in litter:
    path.write_bytes(b"half written")
  neighbour_lists(index, x, 5, out_dir=out)
  assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "neighbours.npy",
                                                   "scores.npy"]
