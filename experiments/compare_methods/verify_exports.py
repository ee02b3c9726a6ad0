"""Checks that the arms exported under RUN/data are the ones the comparison already trained on.

One comparison spans several GPU loans and fresh checkouts, so its exports get rebuilt; an arm
may only join the table if its rows are byte-identical to the export its earlier seeds and
sibling arms were trained against, tokenized by the same tokenizer. Compares the tokenizer
fingerprint of RUN/data/synthesis.json with the committed RESULTS/synthesis.json; the vectors
of RUN/embedding_table (computed on a GPU, where KNN, ICLM and NExtLong get their neighbours)
with the committed RESULTS/index_manifests/embedding_table.json, shard by shard; and for every
RUN/data/<arm> whose `export_<arm>.json` is committed under RESULTS, the shards' sha256. Prints
one line each and exits 1 on a mismatch. An embedding table or arm without a committed
manifest is new: its manifest is copied to RESULTS (to be committed with the rest of the
comparison's records).

    python experiments/compare_methods/verify_exports.py runs/wiki16k \
        experiments/compare_methods/results/wiki16k
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from longjax import io


def shard_hashes(manifest: dict) -> list[tuple[str, str]]:
  return [(s["file"], s["sha256"]) for s in manifest["shards"]]


def check_embedding(run: Path, results: Path) -> bool:
  """Whether RUN's embedding table (if any) holds every shard its manifest names, intact, with
  the committed table's vectors; the first table a comparison embeds becomes the committed
  one."""
  fresh_path = run / "embedding_table" / "manifest.json"
  if not fresh_path.exists():
    return True
  committed_path = results / "index_manifests" / "embedding_table.json"
  fresh = json.loads(fresh_path.read_text())["inputs"]["shards"]
  corrupt = [f for f, sha in fresh.items()
             if not (fresh_path.parent / f).exists() or io.file_sha256(fresh_path.parent / f) != sha]
  if corrupt:  # a piece lost or damaged on its way back from the accelerator
    print(f"embedding table: {len(corrupt)} shards missing or not matching their manifest "
          f"({', '.join(corrupt[:3])})")
    return False
  if not committed_path.exists():
    committed_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fresh_path, committed_path)
    print(f"embedding table: new, manifest written to {committed_path}")
    return True
  committed = json.loads(committed_path.read_text())["inputs"]["shards"]
  differ = sorted(f for f in set(fresh) | set(committed) if fresh.get(f) != committed.get(f))
  print(f"embedding table: {len(fresh)} shards, " + (
      f"identical to {committed_path}" if not differ else
      f"DIFFERS from {committed_path} in {len(differ)} ({', '.join(differ[:3])}"
      f"{', ...' if len(differ) > 3 else ''})"))
  return not differ


def main(argv: list[str]) -> int:
  if len(argv) != 2:
    print(__doc__, file=sys.stderr)
    return 2
  run, results = Path(argv[0]), Path(argv[1])
  bad = int(not check_embedding(run, results))
  committed_synthesis = results / "synthesis.json"
  if committed_synthesis.exists() and (run / "data" / "synthesis.json").exists():
    fresh, committed = (json.loads(p.read_text())["tokenizer"]["sha256"]
                        for p in (run / "data" / "synthesis.json", committed_synthesis))
    bad += fresh != committed
    print(f"tokenizer: {fresh[:12]} {'==' if fresh == committed else '!='} {committed[:12]} "
          f"committed in {committed_synthesis}")
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
