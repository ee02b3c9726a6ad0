"""A PNG a person looks at after a Quest build: index sizes and how often documents are used.

Left: how many keywords have 1, 2, 4... documents (the split ratio's short indexes are the
left end). Right, per build length: how many documents the sampler's dry run uses 0, 1, 2...
times (heavy reuse of short-index documents is the spec's suspected cause of the decline at
large split ratios).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from longjax import io


def plot_index_stats(path: Path, n_docs_per_keyword: np.ndarray, short: np.ndarray,
                     dry_runs: Mapping[str, Mapping]) -> Path:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  sizes = np.asarray(n_docs_per_keyword)
  if len(sizes):
    bins = np.unique(np.geomspace(1, max(int(sizes.max()), 1) + 1, 30).astype(int))
    bins = bins if len(bins) > 1 else np.array([1, 2])
    left.hist([sizes[~short], sizes[short]], bins=bins, stacked=True,
              label=["long indexes", "short indexes"])
    left.set_xscale("log")
    left.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    left.xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    left.legend()
  left.set_xlabel("documents per keyword")
  left.set_ylabel("keywords")
  left.set_title(f"inverted index: {len(sizes)} keywords")
  for length, run in dry_runs.items():
    uses = {int(k): v for k, v in run["docs_by_use_count"].items()}
    xs = sorted(uses)
    right.plot(xs, [uses[x] for x in xs], marker="o",
               label=f"L={length}: {run['samples']} samples, short share "
                     f"{run['short_token_share']:.2f}")
  right.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  right.set_xlabel("samples a document appears in (dry run, shard 0/1)")
  right.set_ylabel("documents")
  right.set_title("document reuse")
  if dry_runs:
    right.legend(fontsize=8)
  fig.tight_layout()
  with io.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=100)
  plt.close(fig)
  return path
