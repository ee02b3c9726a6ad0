"""How much the exports of one arm's seeds share: rows in common, and rows repeated within one.

An export's seed drives seqio's shuffle buffer over the Task's stream, whose synthesis seed is
part of the Task (0 for every wiki16k arm); so two seeds of an arm may train on nearly the same
synthesized rows in another order. This counts, for every pair of seeds of each arm under a
data directory, the rows (whole token sequences) both hold, and per export its distinct rows.

  python experiments/compare_methods/seed_rows.py runs/wiki16k/data \\
      --out experiments/compare_methods/results/wiki16k/seed_rows.json
"""

import argparse
import hashlib
import itertools
from pathlib import Path
from typing import Sequence

from longjax.io import write_json
from row_context import arm_rows, export_rows


def row_digests(data_dir: Path) -> list[str]:
  """A digest of every row's tokens, in the export's order."""
  return [hashlib.blake2b(tokens.tobytes(), digest_size=16).hexdigest()
          for tokens, _ in export_rows(data_dir)]


def compare(a: Sequence[str], b: Sequence[str]) -> dict[str, int]:
  """Rows of two exports: how many each holds, distinct, shared and at the same position."""
  return {"rows_a": len(a), "rows_b": len(b), "distinct_a": len(set(a)),
          "distinct_b": len(set(b)), "shared_distinct": len(set(a) & set(b)),
          "same_position": sum(x == y for x, y in zip(a, b))}


def measure(data: Path) -> dict[str, dict[str, dict[str, int]]]:
  """{arm: {"<dir a> vs <dir b>": compare(...)}} for every pair of seeds of every arm."""
  out: dict[str, dict[str, dict[str, int]]] = {}
  for arm, dirs in arm_rows(data).items():
    digests = {d.name: row_digests(d) for d in dirs}
    out[arm] = {f"{x} vs {y}": compare(digests[x], digests[y])
                for x, y in itertools.combinations(sorted(digests), 2)}
  return out


def markdown(out: dict) -> str:
  lines = ["| exports | rows | distinct | shared | same position |", "|---|---:|---:|---:|---:|"]
  for pairs in out.values():
    for name, c in pairs.items():
      lines.append(f"| {name} | {c['rows_a']} / {c['rows_b']} | {c['distinct_a']} / "
                   f"{c['distinct_b']} | {c['shared_distinct']} | {c['same_position']} |")
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("data", type=Path, help="directory of <method>_seed<k> exports")
  p.add_argument("--out", type=Path, required=True, help="JSON to write (and .md beside it)")
  args = p.parse_args()
  out = measure(args.data)
  write_json(args.out, out)
  args.out.with_suffix(".md").write_text(markdown(out) + "\n")
  print(markdown(out))


if __name__ == "__main__":
  main()
