"""Does ScaNN build the same index twice from the same data? (It decides whether approximate
neighbour lists can be reproduced for a fixed seed.)

Run (seconds on 2 cores):
  PYTHONPATH=. .venv/bin/python experiments/bench/scann_determinism.py
Builds each variant `--builds` times on the same clustered vectors and prints, per build, the
fraction of top-10 entries (3,000 database rows as queries) that differ from the first build's.
Seen with scann 1.4.2, one run (`results/scann_determinism_cpu2.log`, docs/synthesis.md): tree +
brute force and tree + AH without residual quantization repeat exactly; tree + AH with residual
quantization (ScaNN's default, and ours) does not, with one training thread or all: about 89%
of entries differ at 5 leaves without reorder, 0.2% after reordering 100 candidates.
"""

import argparse

import numpy as np

from longjax.synth import retrieval


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
  """float32 [n, dim] unit rows around 200 random centres."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((200, dim)).astype(np.float32)
  x = centres[rng.integers(0, 200, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def variants(x: np.ndarray) -> dict:
  """name -> a function building one searcher on `x` (10 neighbours, dot product)."""
  tree = lambda: retrieval._scann().builder(x, 10, "dot_product").tree(  # pylint: disable=protected-access
      num_leaves=140, num_leaves_to_search=5, training_sample_size=len(x))
  ah = lambda b, **kw: b.score_ah(2, anisotropic_quantization_threshold=0.2, **kw)
  return {
      "tree + brute force": lambda: tree().score_brute_force().build(),
      "tree + AH, no residual": lambda: ah(tree(), residual_quantization=False).build(),
      "tree + AH (residual)": lambda: ah(tree()).build(),
      "tree + AH (residual), 1 training thread": lambda: ah(tree()).set_n_training_threads(
          1).build(),
      "tree + AH (residual) + reorder 100": lambda: ah(tree()).reorder(100).build(),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--n", type=int, default=20_000)
  p.add_argument("--dim", type=int, default=32)
  p.add_argument("--builds", type=int, default=4)
  args = p.parse_args()
  x = clustered(args.n, args.dim, seed=0)
  for name, build in variants(x).items():
    ids = [build().search_batched(x[:3000], final_num_neighbors=10)[0]
           for _ in range(args.builds)]
    print(f"{name:<42} differs from build 1: "
          + " ".join(f"{float((i != ids[0]).mean()):.3f}" for i in ids[1:]), flush=True)


if __name__ == "__main__":
  main()
