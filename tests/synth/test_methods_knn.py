"""KNN grouping: hand-computed groups, rank order within a group, one use per document."""

import numpy as np

from longjax.synth.methods.knn import knn_contexts, knn_groups


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


def test_a_group_counts_the_tokens_carried_into_its_first_context():
  """Documents of 6 tokens, L = 8, neighbour pairs (0 1), (2 3), (4 5), seeds in order 0 2 4 1
  3 5. Group [0, 1] ends 4 tokens into a second context, so seed 2 fills that context alone;
  it carries 4 + 6 - 8 = 2 tokens into the next, which seed 4 fills; 3 and 5 then share one.
  Every context holds at most one document's tail from outside its group: with groups counted
  from 0 (before), 2 and its neighbour 3 straddled a context that began inside 1."""
  nbrs = np.array([[1], [0], [3], [2], [5], [4]])
  order = FixedOrder([0, 2, 4, 1, 3, 5])
  groups, leftover = knn_groups(nbrs, np.full(6, 6), 8, order)
  assert groups == [[0, 1], [2], [4], [3, 5]] and leftover == []
  ctxs = knn_contexts(groups, np.arange(6), np.full(6, 6), 8, "carry")
  assert ctxs == [[(0, 0, 6), (1, 0, 2)], [(1, 2, 6), (2, 0, 4)], [(2, 4, 6), (4, 0, 6)],
                  [(3, 0, 6), (5, 0, 2)]]  # the stream's last 4 tokens fill no context
  # each group alone fills its context when the groups are truncated, not carried
  assert knn_groups(nbrs, np.full(6, 6), 8, order, carry=False)[0] == [[0, 1], [2, 3], [4, 5]]


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
  carried = 0
  for g in groups:
    total = carried + counts[g].sum()  # what the previous group carried into its context
    assert total >= length and total - counts[g[-1]] < length  # stops as soon as it is full
    carried = total % length
    # The members pulled in by the seed follow the seed's neighbour ranks.
    rank = {int(d): r for r, d in enumerate(nbrs[g[0]])}
    from_seed = [rank[d] for d in g[1:] if d in rank]
    assert from_seed == sorted(from_seed)
  assert carried + counts[leftover].sum() < length
  # Packed as one stream, every context holds at most one document from outside its group,
  # the tail that opens it.
  group_of = {d: i for i, g in enumerate(groups) for d in g}
  for c in knn_contexts(groups, np.arange(n), counts, length, "carry"):
    owners = [group_of[d] for d, _, _ in c]
    assert len(set(owners[1:])) <= 1 and (owners[0] == owners[-1] or c[0][1] > 0)
  # Same seed, same grouping; another seed, another grouping.
  assert knn_groups(nbrs, counts, length, np.random.default_rng(1))[0] == groups
  assert knn_groups(nbrs, counts, length, np.random.default_rng(2))[0] != groups
