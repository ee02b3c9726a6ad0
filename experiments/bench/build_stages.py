"""Per-document rates of the build's stages, one process, on the first N Wikipedia articles.

    .venv/bin/python experiments/bench/build_stages.py --docs 2000 \
        --out experiments/bench/results/build_stages_wiki_cpu2.json

Times the functions a Beam worker runs (synth/pipeline/) on one core: validate + hash,
NExtLong chunking, the hashing embedder over documents and over chunks, smollm2 token counts,
the extractive query predictor and RAKE; and the serialized size per vector of a ScaNN index
(`retrieval.build_index`, AH settings) over random 384-d vectors. MiniLM is not timed here
(see docs/scale.md: its rate comes from the H200 record). Expect thousands of documents/s for hashing and chunking, hundreds
for the tokenizer and the hashing embedder on a loaded 2-core machine.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import time
from pathlib import Path

WIKI = "../shared/corpora/wiki_en_2019-00-of-04.jsonl.gz"


def _timed(fn, n: int) -> dict[str, float]:
  t0 = time.perf_counter()
  fn()
  seconds = time.perf_counter() - t0
  return {"seconds": round(seconds, 3), "items": n, "per_s": round(n / seconds, 1)}


def _scann_footprint(n: int, dim: int = 384) -> dict[str, float]:
  """Bytes per vector of a serialized index over `n` random unit vectors (index_config(n))."""
  import tempfile  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from longjax.synth import retrieval  # pylint: disable=import-outside-toplevel
  v = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
  v /= np.linalg.norm(v, axis=1, keepdims=True)
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    index = retrieval.build_index(v, out_dir=d, recall_queries=200)
    seconds = time.perf_counter() - t0
    files = {p.name: p.stat().st_size for p in (Path(d) / "scann").iterdir()}
  return {"vectors": n, "dim": dim, "config": index.manifest["config"]["kind"],
          "build_seconds": round(seconds, 1), "files": files,
          "bytes_per_vector": round(sum(files.values()) / n, 1)}


def main() -> None:
  from longjax.documents import RawDocument  # pylint: disable=import-outside-toplevel
  from longjax.models.tokenizer import load_tokenizer_spec  # pylint: disable=import-outside-toplevel
  from longjax.synth import chunking, corpus  # pylint: disable=import-outside-toplevel
  from longjax.synth.embed import HashingEmbedder  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.quest import keywords  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.quest.predict import make_predictor  # pylint: disable=import-outside-toplevel

  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--docs", type=int, default=2000)
  parser.add_argument("--corpus", default=WIKI)
  parser.add_argument("--out", type=Path, required=True)
  parser.add_argument("--scann-vectors", type=int, default=30000)
  args = parser.parse_args()
  with gzip.open(args.corpus, "rt", encoding="utf-8") as f:
    texts = [json.loads(line)["text"] for line in itertools.islice(f, args.docs)]
  n = len(texts)
  chunks = [c for t in texts for c in chunking.document_chunks(t)[0]]
  tokenizer = load_tokenizer_spec("smollm2")
  predictor = make_predictor("extractive", max_phrase_words=2, phrases_per_query=12,
                             window_words=120)
  queries = predictor.predict(list(enumerate(texts[:200])), seed=0)
  embedder = HashingEmbedder()
  stages = {
      "check_document": _timed(lambda: [corpus.check_document(RawDocument("x", t), 10**6)
                                        for t in texts], n),
      "chunking": _timed(lambda: [chunking.document_chunks(t) for t in texts], n),
      "hashing_embed_docs": _timed(lambda: embedder.embed(texts), n),
      "hashing_embed_chunks": _timed(lambda: embedder.embed(chunks), len(chunks)),
      "token_counts_smollm2": _timed(lambda: tokenizer.encode_batch(texts), n),
      "extractive_queries": _timed(lambda: predictor.predict(list(enumerate(texts)), seed=0), n),
      "rake_candidates_200": _timed(lambda: [keywords.doc_candidates(q) for q in queries], 200),
  }
  record = {"scann": _scann_footprint(args.scann_vectors), "docs": n,
            "chars": sum(map(len, texts)), "chunks": len(chunks),
            "corpus": args.corpus, "cpu_count": os.cpu_count(),
            "load_avg": list(os.getloadavg()), "stages": stages}
  args.out.write_text(json.dumps(record, indent=1) + "\n")
  print(json.dumps(record, indent=1))


if __name__ == "__main__":
  main()
