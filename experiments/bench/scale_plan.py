"""docs/scale.md's figures for 229M documents / 2B chunks, derived from the measured records.

    python experiments/bench/scale_plan.py > experiments/bench/results/scale_plan.txt

Every input is read from a committed record (path printed beside each figure); the only
assumptions are the target corpus (229M documents, 2B chunks: Quest's and NExtLong's scale) and
the worker shapes named below. Text sizes scale by characters, using the Wikipedia pool's
characters per chunk to turn 2B chunks into characters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

R = Path("experiments/bench/results")
WIKI16K = Path("experiments/compare_methods/results/wiki16k")
DOCS, CHUNKS = 229e6, 2e9
DIM = 384
CPU_WORKER_VCPUS = 16  # e.g. n2-standard-16 Dataflow workers
CPU_WORKERS = 100
GPUS = 32


def _load(path: Path) -> dict:
  return json.loads(path.read_text())


def main() -> None:
  stages = _load(R / "build_stages_wiki_cpu2.json")
  nextlong = _load(WIKI16K / "index_manifests/nextlong.json")["counts"]
  w1 = _load(R / "beam_build_wiki_w1.json")
  wiki_chars = w1["corpus"]["chars"]
  chars_per_chunk = wiki_chars / nextlong["chunks"]
  chars = CHUNKS * chars_per_chunk
  print(f"wiki pool: {w1['corpus']['kept']} docs, {wiki_chars / 1e6:.1f}M chars, "
        f"{nextlong['chunks']} chunks -> {chars_per_chunk:.0f} chars/chunk "
        f"({WIKI16K}/index_manifests/nextlong.json, {R}/beam_build_wiki_w1.json)")
  print(f"target: {DOCS / 1e6:.0f}M docs, {CHUNKS / 1e9:.0f}B chunks -> {chars / 1e12:.2f}T chars, "
        f"{chars / DOCS / 1e3:.1f}K chars/doc")
  sample_chars = stages["chars"]
  tok1 = _load(R / "beam_build_wiki_w1_tok1.json")["run"]["seconds"]
  print(f"\nCPU stages per core ({R}/build_stages_wiki_cpu2.json: {stages['docs']} docs, "
        f"load {stages['load_avg'][0]:.1f} on {stages['cpu_count']} cores; token counts from the "
        f"1-worker Beam build with one tokenizer thread, {R}/beam_build_wiki_w1_tok1.json):")
  rates = {  # characters per second per core
      "check_document": sample_chars / stages["stages"]["check_document"]["seconds"],
      "chunking": sample_chars / stages["stages"]["chunking"]["seconds"],
      "token_counts": wiki_chars / tok1["tokens_worker_seconds"],
  }
  cpu_core_hours = 0.0
  for name, cps in rates.items():
    hours = chars / cps / 3600
    cpu_core_hours += hours
    print(f"  {name:16s} {cps / 1e6:8.2f}M chars/s -> {hours:8,.0f} core-hours")
  rake = stages["stages"]["rake_candidates_200"]["per_s"]
  cpu_core_hours += DOCS / rake / 3600
  print(f"  {'rake':16s} {rake:8,.0f} docs/s    -> {DOCS / rake / 3600:8,.0f} core-hours")
  wall = cpu_core_hours / (CPU_WORKERS * CPU_WORKER_VCPUS)
  print(f"  total {cpu_core_hours:,.0f} core-hours -> {CPU_WORKERS} x {CPU_WORKER_VCPUS}-vCPU "
        f"workers: {wall:.2f} h wall")

  log = (R / "beam_build_wiki_w1_tok1.log").read_text()
  ingest = float(re.search(r"pipeline ingest: ([\d.]+)s on", log).group(1))
  store_cps = wiki_chars / (tok1["corpus"] - ingest)
  quest_dps = w1["corpus"]["kept"] / tok1["quest"]
  print(f"\nsingle-process steps ({R}/beam_build_wiki_w1_tok1.json/.log): store assembly "
        f"{store_cps / 1e6:.0f}M chars/s -> {chars / store_cps / 3600:.1f} h; (then) Quest keyword "
        f"choice + index + plan {quest_dps:,.0f} docs/s -> {DOCS / quest_dps / 3600:.1f} h")
  kw = _load(R / "beam_build_wiki_keywords_w2.json")["run"]["seconds"]
  write_dps = w1["corpus"]["kept"] / kw["assemble_corpus_wide"]
  plan_dps = w1["corpus"]["kept"] / kw["quest"]
  print(f"  since the keyword choice and index run in Beam ({R}/beam_build_wiki_keywords_w2.json): "
        f"writing the keyword stage {write_dps:,.0f} docs/s -> {DOCS / write_dps / 3600:.1f} h; "
        f"Quest's build (doc tokens, sampler dry run) {plan_dps:,.0f} docs/s -> "
        f"{DOCS / plan_dps / 3600:.1f} h")

  log = (WIKI16K / "embed_table_h200.log").read_text()
  texts = int(re.search(r"wrote \d+ shards of (\d+) vectors", log).group(1))
  seconds = 132  # the embed loop's 02:12 in that log (the 2m18 'real' includes start-up)
  rate = texts / seconds
  gpu_hours = (DOCS + CHUNKS) / rate / 3600
  print(f"\nMiniLM: {texts} texts in {seconds} s on one H200 = {rate:,.0f} texts/s "
        f"({WIKI16K}/embed_table_h200.log) -> {(DOCS + CHUNKS) / 1e9:.2f}B texts = "
        f"{gpu_hours:,.0f} H200-hours; {GPUS} H200s: {gpu_hours / GPUS:.1f} h")
  for name in ("quest_predict_h100_top_p.json", "quest_predict_h100_greedy.json"):
    best = max(_load(R / name), key=lambda r: r["docs_per_s"])
    hours = DOCS / best["docs_per_s"] / 3600
    print(f"doc2query T5-base {best['decode']} batch {best['batch']}: {best['docs_per_s']:,.0f} "
          f"segments/s on one H100 ({R}/{name}) -> 229M docs x 1 segment = {hours:,.0f} "
          f"H100-hours ({GPUS} GPUs: {hours / GPUS:.1f} h); x 8 segments: {8 * hours:,.0f}")

  scann = stages["scann"]
  per_vector = scann["bytes_per_vector"]
  print(f"\nScaNN ({scann['config']}, {scann['vectors']} x {scann['dim']}, {R}/"
        f"build_stages_wiki_cpu2.json): {per_vector:,.0f} bytes/vector serialized")
  for shard in (50e6, 100e6, 250e6):
    print(f"  shard of {shard / 1e6:.0f}M chunk vectors: {shard * per_vector / 2**30:,.0f} GiB; "
          f"{CHUNKS / shard:.0f} shards for 2B")
  retrieval = _load(R / "retrieval_10k_100k_clustered.json")["rows"][-1]
  print(f"  ScaNN tree_ah at 100K x 384 (clustered): build {retrieval['build_seconds']} s, "
        f"{retrieval['scann_qps']} queries/s at recall@10 {retrieval['recall@10']} on 2 cores "
        f"({R}/retrieval_10k_100k_clustered.json) -> neighbour lists for 2B chunks at that rate: "
        f"{CHUNKS / retrieval['scann_qps'] / 3600:,.0f} core-pair-hours (a lower bound: larger "
        "shards search more leaves)")

  store = chars  # UTF-8 bytes ~ characters for English text; JSON quoting adds a few percent
  vectors = (DOCS + CHUNKS) * DIM * 4
  queries_per_doc = _queries_bytes_per_doc()
  print(f"\nstorage: document store {store / 1e12:.1f} TB, chunk store {store / 1e12:.1f} TB, "
        f"float32 vectors {vectors / 1e12:.2f} TB, ScaNN {CHUNKS * per_vector / 1e12:.2f} TB, "
        f"neighbour lists at K=32 {CHUNKS * 32 * 6 / 1e12:.2f} TB (int32 ids + float16 scores), "
        f"Quest queries ~{DOCS * queries_per_doc / 1e9:.0f} GB "
        f"({queries_per_doc:.0f} B/doc measured on the wiki build), token counts "
        f"{DOCS * 8 / 1e9:.1f} GB")
  for name in ("single", "w1", "w2", "w1_tok1", "w2_tok1", "keywords_single", "keywords_w2"):
    run = _load(R / f"beam_build_wiki_{name}.json")["run"]["seconds"]
    print(f"wiki build {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(run.items())))


def _queries_bytes_per_doc() -> float:
  """From `du -sb` of the wiki build's directories (beam_build_wiki_sizes.txt)."""
  sizes = dict(line.split()[::-1] for line in (R / "beam_build_wiki_sizes.txt").read_text()
               .splitlines() if line.strip())
  return int(sizes["/tmp/b17/bench/wiki_w2/quest/queries"]) / 24512


if __name__ == "__main__":
  main()
