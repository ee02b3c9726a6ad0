"""seed_rows: rows two exports share, against a hand-made case."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
import seed_rows  # pylint: disable=wrong-import-position


def test_compare_counts_shared_and_repeated_rows():
  a = ["r1", "r2", "r3", "r3"]
  b = ["r1", "r4", "r3", "r5"]
  assert seed_rows.compare(a, b) == {"rows_a": 4, "rows_b": 4, "distinct_a": 3,
                                     "distinct_b": 4, "shared_distinct": 2, "same_position": 2}
