"""Choosing the query-time search: the frontier walk against exhaustive search, and the chosen
settings of real indexes against brute force (narrower when recall is comfortably above the
target, wider when below)."""

import numpy as np
import pytest

from longjax.synth import search_settings
from longjax.synth.retrieval import (Index, IndexConfig, brute_force_search, build_index,
                                     recall_at_k)


def _clustered(n, d, seed=0, clusters=200):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((clusters, d)).astype(np.float32)
  x = centres[rng.integers(0, clusters, n)] + 0.4 * rng.standard_normal((n, d)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _heldout_recall(index, x, rows=400, seed=5):
  """Recall@10 of the index's chosen search on database rows sampled apart from its own."""
  q = x[np.random.default_rng(seed).choice(len(x), rows, replace=False)]
  return recall_at_k(index.search(q, 10)[0], brute_force_search(x, q, 10)[0])


def test_ladder():
  assert search_settings.ladder(10, 10) == [10]
  steps = search_settings.ladder(1, 1000)
  assert steps[0] == 1 and steps[-1] == 1000 and steps == sorted(set(steps))
  assert max(b / a for a, b in zip(steps, steps[1:])) <= 2
  with pytest.raises(ValueError, match="low <= high"):
    search_settings.ladder(5, 4)


@pytest.mark.parametrize("leaf_need", [3, 17, 60])
def test_walk_finds_the_cheapest_grid_point(leaf_need):
  """A recall surface rising in leaves and reorder: the walk's choice = exhaustive minimum."""
  def measure(leaves, reorder):
    recall = min(1.0, 0.5 + 0.3 * min(1, leaves / leaf_need) + 0.2 * min(1, reorder / 90))
    return np.full(50, recall)

  num_leaves, points, k = 100, 10_000, 10
  best, trials = search_settings.choose(measure, num_leaves=num_leaves, points=points, k=k,
                                        max_reorder=400, min_recall=0.95)
  grid = [(search_settings.cost(L, R, points_per_leaf=points / num_leaves, points=points), L, R)
          for L in search_settings.ladder(1, num_leaves)
          for R in search_settings.ladder(k, 400) if measure(L, R)[0] >= 0.95]
  assert (best.cost, best.leaves, best.reorder) == min(grid)
  grid_size = len(search_settings.ladder(1, num_leaves)) * len(search_settings.ladder(k, 400))
  assert len(trials) < grid_size / 3  # it walked the frontier, not the grid


def test_narrows_an_over_generous_search_on_clustered_data(tmp_path):
  x = _clustered(20_000, 32)
  config = IndexConfig("tree_ah", num_leaves=140, num_leaves_to_search=70,
                       training_sample_size=20_000, reorder=400)
  index = build_index(x, config=config, k=10, out_dir=tmp_path / "idx", recall_queries=400)
  counts = index.manifest["counts"]
  assert counts["recall@10_default_search"] >= 0.99  # comfortably above the 0.95 target
  assert index.leaves_to_search < 70 and index.reorder <= 400
  assert counts["recall@10_lower_95"] >= 0.95
  assert _heldout_recall(index, x) >= 0.93
  chosen = [t for t in index.manifest["search"]["trials"]
            if (t["leaves"], t["reorder"]) == (index.leaves_to_search, index.reorder)]
  cheaper = [t for t in index.manifest["search"]["trials"] if t["cost"] < chosen[0]["cost"]]
  assert all(t["recall_lower"] < 0.95 for t in cheaper)


def test_narrows_the_reorder_of_an_ah_index():
  x = _clustered(20_000, 32)
  index = build_index(x, config=IndexConfig("ah", training_sample_size=20_000, reorder=400),
                      k=10, recall_queries=400)
  assert index.manifest["counts"]["recall@10_default_search"] >= 0.99
  assert index.leaves_to_search is None and index.reorder < 400
  assert _heldout_recall(index, x) >= 0.93


def test_widens_a_search_that_misses_the_target(tmp_path):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((20_000, 32)).astype(np.float32)  # no structure: a hard case
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  config = IndexConfig("tree_ah", num_leaves=100, num_leaves_to_search=2,
                       training_sample_size=20_000, reorder=20)
  build_index(x, config=config, k=10, out_dir=tmp_path / "idx", recall_queries=300)
  index = Index.load(tmp_path / "idx")  # the chosen settings travel with the index
  counts = index.manifest["counts"]
  assert counts["recall@10_default_search"] < 0.9 <= 0.95 <= counts["recall@10"]
  assert index.leaves_to_search > 2
  assert _heldout_recall(index, x) >= 0.93
