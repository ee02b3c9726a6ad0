"""How KNN's and NExtLong's plans are laid out on a real corpus, before and after the 2026-12-03
fixes: estimates from token counts alone (no embedding, no index).

  KNN: documents from another group per context, when groups count from 0 (before) or count
    the tokens carried into their first context (after); random neighbour lists stand in for
    real ones (where the cuts fall depends on the token counts only), tokens = characters / 4.3.
  NExtLong: the uniform k of each meta-document (the largest k for blocks 1..p-1 that keeps
    m_p inside L), with meta-documents of up to L (before) or L/2 tokens (after), taking every
    negative at the corpus's mean chunk length (SmolLM2 tokens).

    PYTHONPATH=. .venv/bin/python experiments/bench/plan_structure.py \\
        ../shared/corpora/wiki_en_2019-00-of-04.jsonl.gz --docs 3000 --length 16384
"""

import argparse
import gzip
import json

import numpy as np

from longjax.models.tokenizer import load_tokenizer_spec
from longjax.synth.chunking import document_chunks
from longjax.synth.methods import knn
from longjax.synth.methods import nextlong as nl


def foreign_per_context(groups, counts, length):
  """Per carry-packed context: its documents from a group other than the one it ends in."""
  owner = {d: g for g, grp in enumerate(groups) for d in grp}
  ctxs = knn.knn_contexts(groups, np.arange(len(counts)), counts, length, "carry")
  return np.array([sum(owner[d] != owner[c[-1][0]] for d, _, _ in c) for c in ctxs])


def uniform_k(tokens, cap, length, sep, neg):
  """Per meta-document of several chunks: the uniform k its blocks 1..p-1 can hold."""
  ks = []
  for _, f, e in nl.split_document(0, range(len(tokens)), tokens, length=cap, start_tokens=0,
                                   sep_tokens=sep):
    p = e - f
    if p > 1:
      meta = tokens[f:e].sum() + sep * (p - 1)
      ks.append(max(0, int((length - meta) // ((p - 1) * (neg + sep)))))
  return ks


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("corpus", help=".jsonl.gz with a `text` field")
  parser.add_argument("--docs", type=int, default=3000)
  parser.add_argument("--length", type=int, default=16384)
  args = parser.parse_args()
  texts = []
  with gzip.open(args.corpus, "rt") as f:
    for line in f:
      texts.append(json.loads(line)["text"])
      if len(texts) == args.docs:
        break
  length = args.length

  counts = np.array([len(t) // 4.3 + 1 for t in texts], np.int64)
  rng = np.random.default_rng(1)
  nbrs = np.stack([rng.choice(len(texts), 256, replace=False) for _ in texts])
  for name, carry in (("before (groups count from 0)", False), ("after", True)):
    groups, _ = knn.knn_groups(nbrs, counts, length, np.random.default_rng(0), carry=carry)
    f = foreign_per_context(groups, counts, length)
    print(f"KNN {name}: {len(f)} contexts, documents from another group per context "
          f"{f.mean():.2f}, contexts with more than one {np.mean(f > 1):.1%}")

  tok = load_tokenizer_spec("smollm2")
  docs = [c for c in (document_chunks(t)[0] for t in texts) if c]
  n_tok = [np.array([len(x) for x in tok.encode_batch(d)]) for d in docs]
  neg = float(np.concatenate(n_tok).mean())
  sep = len(tok.encode("\n\n"))
  print(f"NExtLong: {sum(map(len, docs))} chunks, mean {neg:.0f} SmolLM2 tokens")
  for name, cap in (("before (meta-documents up to L)", length),
                    ("after (up to L/2)", nl.meta_tokens(length, nl.NExtLongOptions()))):
    ks = np.array([k for n in n_tok for k in uniform_k(n, cap, length, sep, neg)])
    print(f"NExtLong {name}: {len(ks)} meta-documents of 2+ chunks, k = 0 (nothing between "
          f"meta-chunks) {np.mean(ks == 0):.1%}, k <= 1 {np.mean(ks <= 1):.1%}")


if __name__ == "__main__":
  main()
