"""ICLM ordering: path rules checked on a replayed trace, hand-computed merges, dedup."""

import string

import numpy as np

from longjax.synth.methods.iclm import iclm_dedup, iclm_merge, iclm_path, trigram_jaccard


def _window(n, w, seed):
  rng = np.random.default_rng(seed)
  vecs = rng.normal(size=(n, 6))
  sims = vecs @ vecs.T
  np.fill_diagonal(sims, -np.inf)
  return np.argsort(-sims, axis=1, kind="stable")[:, :w]


def test_path_follows_first_unvisited_neighbour_and_caps_clusters():
  window = _window(200, 9, 0)
  clusters = iclm_path(window, np.random.default_rng(3), cluster_size=21)
  assert sorted(d for c in clusters for d in c) == list(range(200))  # each visited once
  visited = np.zeros(200, bool)
  for cluster in clusters:
    assert 1 <= len(cluster) <= 21
    assert not visited[cluster[0]]
    visited[cluster[0]] = True
    for prev, nxt in zip(cluster, cluster[1:]):
      free = [d for d in window[prev] if not visited[d]]
      assert free and nxt == free[0]  # the first unvisited neighbour among positions 1-9
      visited[nxt] = True
    if len(cluster) < 21:  # a short cluster ends only when no neighbour is unvisited
      assert all(visited[d] for d in window[cluster[-1]])
  assert max(len(c) for c in clusters) == 21
  again = iclm_path(window, np.random.default_rng(3), cluster_size=21)
  assert again == clusters


def test_merge_hand_computed():
  # cluster_size 3: A = [0, 1, 2] stays; B = [3, 4] and C = [5] are dissolved; E = [9] has no
  # neighbour in another cluster and goes to the leftover; D = [6, 7, 8] stays.
  window = np.full((10, 3), -1)
  window[3] = [4, 1, 8]  # 4 is in its own (dissolving) cluster -> before 1 in A
  window[4] = [3, 5, 8]  # 3 has just moved into A -> before 3 in A
  window[5] = [4, 6, -1]  # -> before 4 in A
  window[9] = [-1, -1, -1]
  clusters = [[0, 1, 2], [3, 4], [5], [6, 7, 8], [9]]
  merged, leftover = iclm_merge(clusters, window, 3)
  assert merged == [[0, 5, 4, 3, 1, 2], [], [], [6, 7, 8], []]
  assert leftover == [9]


def test_merge_moves_a_document_again_when_its_new_cluster_is_dissolved():
  window = np.full((6, 2), -1)
  window[0] = [2, 5]  # first into B (small); when B dissolves, 2 is B itself -> before 5 in C
  window[1] = [3, -1]
  window[2] = [4, -1]
  merged, leftover = iclm_merge([[0, 1], [2], [3, 4, 5]], window, 3)
  assert merged == [[], [], [1, 3, 2, 4, 0, 5]]
  assert leftover == []


def test_trigram_jaccard_hand_computed():
  assert trigram_jaccard("abcd", "abce") == 1 / 3  # {abc, bcd} vs {abc, bce}
  assert trigram_jaccard("abc", "abc") == 1.0
  assert trigram_jaccard("ab", "ab") == 0.0  # no 3-grams: cannot be called duplicates


def test_dedup_compares_with_previous_kept_document_over_first_100_chars():
  rng = np.random.default_rng(0)
  letters = np.array(list(string.ascii_lowercase))
  x = "".join(rng.choice(letters, 100))
  y = x[:94] + "ZZZZZZ"  # near x
  z = "QQQQQQ" + y[6:]  # near y, not near x
  far = "".join(rng.choice(letters, 100))
  assert trigram_jaccard(x, y) > 0.85 and trigram_jaccard(y, z) > 0.85 >= trigram_jaccard(x, z)
  tail_only = x + " a very different ending that lies beyond the first hundred characters"
  texts = {0: x, 1: y, 2: z, 3: far, 4: tail_only}
  kept, dropped = iclm_dedup([0, 1, 2, 3, 4], texts.__getitem__, 100, 0.85)
  # y is dropped against x; z is compared with x (the previous *kept* one) and kept;
  # tail_only equals x in its first 100 characters but follows `far`, so it is kept.
  assert kept == [0, 2, 3, 4]
  assert [(d, p) for d, p, _ in dropped] == [(1, 0)]
  kept, dropped = iclm_dedup([0, 4, 3], texts.__getitem__, 100, 0.85)
  assert kept == [0, 3] and dropped[0][:2] == (4, 0) and dropped[0][2] == 1.0
