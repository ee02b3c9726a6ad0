"""KNN grouping: hand-computed groups, rank order within a group, one use per document."""

import numpy as np

from longjax.synth.methods.knn import knn_groups


class FixedOrder:
  """Stands in for a numpy Generator whose permutation is known."""

  def __init__(self, order):
    self.order = np.asarray(order)

  def permutation(self, n):
    assert n == len(self.order)
    return self.order


def test_hand_computed_groups_and_leftover():
  nbrs = np.array([[1, 2, 3, 4], [0, 2, 3, 4], [1, 0, 3, 4], [4, 2, 1, 0], [3, 2, 1, 0]])
  groups, leftover = knn_groups(nbrs, np.full(5, 4), 8, FixedOrder([2, 0, 3, 1, 4]))
  # seed 2 takes its first neighbour 1; seed 0 skips used 1 and 2 and takes 3; seed 4 finds
  # every neighbour used and no unused seed is left, so it stays below L.
  assert groups == [[2, 1], [0, 3]]
  assert leftover == [4]


def test_next_seed_joins_when_the_list_runs_out():
  nbrs = np.array([[1], [0], [3], [2], [5], [4]])
  groups, leftover = knn_groups(nbrs, np.full(6, 4), 12, FixedOrder([0, 2, 4, 1, 3, 5]))
  assert groups == [[0, 1, 2], [4, 5, 3]]
  assert leftover == []


def test_padding_and_self_are_ignored():
  nbrs = np.array([[0, -1, 1], [1, 0, -1]])
  groups, leftover = knn_groups(nbrs, np.array([3, 3]), 6, FixedOrder([0, 1]))
  assert groups == [[0, 1]] and leftover == []


def test_properties_on_random_neighbour_lists():
  rng = np.random.default_rng(0)
  n, k, length = 300, 16, 200
  vecs = rng.normal(size=(n, 8))
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  sims = vecs @ vecs.T
  np.fill_diagonal(sims, -np.inf)
  nbrs = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # brute force, self excluded
  counts = rng.integers(5, 80, size=n)
  groups, leftover = knn_groups(nbrs, counts, length, np.random.default_rng(1))
  flat = [d for g in groups for d in g] + leftover
  assert sorted(flat) == list(range(n))  # every document exactly once
  for g in groups:
    total = counts[g].sum()
    assert total >= length and total - counts[g[-1]] < length  # stops as soon as >= L
    # The members pulled in by the seed follow the seed's neighbour ranks.
    rank = {int(d): r for r, d in enumerate(nbrs[g[0]])}
    from_seed = [rank[d] for d in g[1:] if d in rank]
    assert from_seed == sorted(from_seed)
  assert counts[leftover].sum() < length
  # Same seed, same grouping; another seed, another grouping.
  assert knn_groups(nbrs, counts, length, np.random.default_rng(1))[0] == groups
  assert knn_groups(nbrs, counts, length, np.random.default_rng(2))[0] != groups
