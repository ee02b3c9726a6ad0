"""Greedy generation benchmark: chunked-prefill time and decode tokens/s of `longjax.models.generate`.

Prefill and decode are separated by timing, after compilation, one call with max_new_tokens=1
(prefill + the first token) and one with --new tokens (EOS disabled): decode rate =
(new - 1) / (t_new - t_1).

On CPU with the real SmolLM2 (converted once by smollm2_checkpoint):
  PYTHONPATH=. .venv/bin/python experiments/bench/generate.py --model smollm2 --lengths 1024,4096
On one GPU through the device tool (no checkpoint there: random weights of the same shape):
  PYTHONPATH=. python3 experiments/bench/generate.py --model smollm2-135m --lengths 4096,32768
"""

import argparse
import time

import jax
import numpy as np
from flax import nnx

from longjax.models import Llama, LlamaConfig, generate, load_hf, smollm2_checkpoint


def _time(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2",
                      help="'smollm2' (the converted checkpoint) or a preset name (random init)")
  parser.add_argument("--lengths", default="1024,4096", help="comma-separated prompt lengths")
  parser.add_argument("--chunk", type=int, default=512, help="prefill chunk")
  parser.add_argument("--new", type=int, default=32, help="new tokens for the decode timing")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--dtype", default="float32" if jax.default_backend() == "cpu"
                      else "bfloat16")
  args = parser.parse_args()

  if args.model == "smollm2":
    model = load_hf(smollm2_checkpoint(), dtype=args.dtype)
  else:
    model = Llama(LlamaConfig.preset(args.model, dtype=args.dtype), rngs=nnx.Rngs(0))
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; model {args.model} "
        f"({model.config.num_params() / 1e6:.0f}M params), dtype {args.dtype}, "
        f"chunk {args.chunk}, batch {args.batch}", flush=True)
  rng = np.random.RandomState(0)
  for length in map(int, args.lengths.split(",")):
    prompts = rng.randint(3, model.config.vocab_size, (args.batch, length)).tolist()
    run = lambda n: generate(model, prompts, n, prefill_chunk=args.chunk, eos_id=())
    compile_s = _time(lambda: run(1)) + _time(lambda: run(args.new))
    t1 = min(_time(lambda: run(1)) for _ in range(2))
    tn = _time(lambda: run(args.new))
    decode = (args.new - 1) * args.batch / max(tn - t1, 1e-9)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use", 0) / 2**30
    print(f"prompt {length:>7}: prefill {t1:7.2f} s ({length * args.batch / t1:8.0f} tok/s), "
          f"decode {decode:7.1f} tok/s, first calls incl. compile {compile_s:6.1f} s"
          + (f", peak {peak:.2f} GiB" if peak else ""), flush=True)


if __name__ == "__main__":
  main()
