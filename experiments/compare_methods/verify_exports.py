"""Checks that the arms exported under RUN/data are the ones the comparison already trained on.

One comparison spans several GPU loans and fresh checkouts, so its exports get rebuilt; an arm
may only join the table if its rows are byte-identical to the export its earlier seeds and
sibling arms were trained against. For every RUN/data/<arm> whose `export_<arm>.json` is
committed under RESULTS, compares the shards' sha256 and prints one line per arm; exits 1 on a
mismatch. Arms without a committed export are new: their manifests are copied to RESULTS.

    python experiments/compare_methods/verify_exports.py runs/wiki16k \
        experiments/compare_methods/results/wiki16k
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path


def shard_hashes(manifest: dict) -> list[tuple[str, str]]:
  return [(s["file"], s["sha256"]) for s in manifest["shards"]]


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  run, results = Path(argv[0]), Path(argv[1])
  bad = 0
  for manifest_path in sorted((run / "data").glob("*_seed*/manifest.json")):
    arm = manifest_path.parent.name
    committed = results / f"export_{arm}.json"
    new = json.loads(manifest_path.read_text())
    if not committed.exists():
      shutil.copyfile(manifest_path, committed)
      print(f"{arm}: new export, manifest written to {committed}")
      continue
    same = shard_hashes(new) == shard_hashes(json.loads(committed.read_text()))
    bad += not same
    print(f"{arm}: {'identical to' if same else 'DIFFERS from'} {committed}")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
