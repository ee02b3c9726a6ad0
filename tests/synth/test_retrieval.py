"""ScaNN retrieval against the exact reference; settings by size; save/load; neighbour lists."""

import subprocess
import sys

import numpy as np
import pytest

from longjax.synth.retrieval import (Index, IndexConfig, brute_force_search, build_index,
                                     index_config, neighbour_lists, recall_at_k)


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
  # Independent check on fresh queries near the data (perturbed database points).
  rng = np.random.default_rng(5)
  q = x[rng.choice(len(x), 200)] + 0.2 * rng.standard_normal((200, 32)).astype(np.float32)
  q /= np.linalg.norm(q, axis=1, keepdims=True)
  found, _ = Index.load(tmp_path / kind).search(q, 10)
  exact, _ = brute_force_search(x, q, 10)
  assert recall >= 0.9 and recall_at_k(found, exact) >= 0.9


def test_low_recall_widens_search_until_target(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((20_000, 32)).astype(np.float32)  # no structure: a hard case
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  config = IndexConfig("tree_ah", num_leaves=100, num_leaves_to_search=2,
                       training_sample_size=20_000, reorder=20)
  index = build_index(x, config=config, k=10, out_dir=tmp_path / "idx", recall_queries=200)
  counts = index.manifest["counts"]
  assert counts["recall@10_default_search"] < 0.9 <= 0.95 <= counts["recall@10"]
  assert index.leaves_to_search > 2
  loaded = Index.load(tmp_path / "idx")  # the widened settings travel with the index
  assert (loaded.leaves_to_search, loaded.reorder) == (index.leaves_to_search, index.reorder)
  q = x[:300]
  assert recall_at_k(loaded.search(q, 10)[0], brute_force_search(x, q, 10)[0]) >= 0.93


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
