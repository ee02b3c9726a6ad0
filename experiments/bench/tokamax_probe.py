"""Probe for issue 15: can tokamax's Mosaic-GPU flash attention apply document masks at cuDNN speed?

Packed documents under a causal mask are exactly "each query sees keys from its document's start
up to itself", which tokamax's `Mask(k_start=..., is_causal=True)` expresses per query (no S x S
mask). This script measures, in one run on one GPU:
  - parity at 4K with 8 documents against a dense f32 reference (outputs and gradients), and
    cuDNN's own error on the unmasked causal case for scale;
  - fwd+bwd time of cuDNN causal attention (no documents) and of tokamax with 1, 8 and 64
    documents per row, as the ratio cuDNN time / tokamax time (> 1: faster than unmasked cuDNN).

    PYTHONPATH=<tokamax and its pure-Python deps> python3 experiments/bench/tokamax_probe.py 32768 131072

tokamax 0.0.17 imports `xprof` for its own benchmarking helpers; where xprof is not installed, a
stub package `xprof/cli/tools.py` defining `get_kernel_stats_tool = None` is enough. Writes
$OUT/tokamax_probe.json. Raw record: experiments/bench/results/tokamax_probe_h200.json.
"""
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tokamax._src.ops.attention import api, base

B, H, K, D = 1, 32, 8, 128
impl = api.IMPLEMENTATIONS["mosaic_gpu"]
print(jax.__version__, jax.devices()[0].device_kind, flush=True)

def inputs(S, seed=0):
  ks = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(ks[0], (B, S, H, D), jnp.bfloat16)
  k = jax.random.normal(ks[1], (B, S, K, D), jnp.bfloat16)
  v = jax.random.normal(ks[2], (B, S, K, D), jnp.bfloat16)
  do = jax.random.normal(ks[3], (B, S, H, D), jnp.bfloat16)
  return q, k, v, do

def starts(S, docs, seed=0):
  rng = np.random.default_rng(seed)
  cuts = np.sort(rng.choice(np.arange(1, S), docs - 1, replace=False)) if docs > 1 else np.array([], int)
  b = np.concatenate([[0], cuts])
  seg = np.searchsorted(b, np.arange(S), side="right") - 1
  return jnp.asarray(b[seg], jnp.int32)[None, None, :], seg

def tk(q, k, v, ks):
  mask = base.Mask(k_start=ks, is_causal=True) if ks is not None else base.Mask(is_causal=True)
  return impl(q, k, v, bias=None, mask=mask, logits_scale=D ** -0.5, precision=None,
              logits_soft_cap=None, q_sharding=None)

def cudnn(q, k, v, ks):
  return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")

def ref(q, k, v, seg):
  S = q.shape[1]
  qf, kf, vf = (x.astype(jnp.float32) for x in (q, k, v))
  kf, vf = (jnp.repeat(x, H // K, axis=2) for x in (kf, vf))
  s = jnp.einsum("bqhd,bkhd->bhqk", qf, kf) * D ** -0.5
  i = jnp.arange(S)
  m = (i[:, None] >= i[None, :]) & (seg[:, None] == seg[None, :])
  s = jnp.where(m, s, -jnp.inf)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), vf)

def fwd_bwd(f, ks):
  def loss(q, k, v, do):
    return jnp.sum(f(q, k, v, ks).astype(jnp.float32) * do.astype(jnp.float32))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))

def timeit(fn, args, n=5):
  out = fn(*args); jax.block_until_ready(out)
  t = time.perf_counter()
  for _ in range(n):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t) / n

rec = {"jax": jax.__version__, "device": jax.devices()[0].device_kind}
# correctness at 4K, 8 documents, against dense f32
S = 4096
q, k, v, do = inputs(S)
ks, seg = starts(S, 8)
segj = jnp.asarray(seg)
r = ref(q, k, v, segj)
o = tk(q, k, v, ks)
rec["parity_4k_8docs_out_maxabs"] = float(jnp.max(jnp.abs(o.astype(jnp.float32) - r)))
gl = lambda f: jax.grad(lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32) * do.astype(jnp.float32)), argnums=(0, 1, 2))(q, k, v)
g_tk = gl(lambda q, k, v: tk(q, k, v, ks))
g_ref = gl(lambda q, k, v: ref(q, k, v, segj))
rec["parity_4k_8docs_grad_maxabs"] = [float(jnp.max(jnp.abs(a.astype(jnp.float32) - b))) for a, b in zip(g_tk, g_ref)]
ks1, seg1 = starts(S, 1)
r1 = ref(q, k, v, jnp.asarray(seg1))
rec["parity_4k_cudnn_causal_out_maxabs"] = float(jnp.max(jnp.abs(cudnn(q, k, v, None).astype(jnp.float32) - r1)))
rec["parity_4k_tk_causal_out_maxabs"] = float(jnp.max(jnp.abs(tk(q, k, v, None).astype(jnp.float32) - r1)))
print(json.dumps(rec), flush=True)
for S in [int(a) for a in sys.argv[1:]] or [32768]:
  q, k, v, do = inputs(S)
  flops = 4 * B * H * D * S * S / 2 * 3.5  # causal, fwd + bwd (bwd = 2.5x fwd)
  base_t = timeit(fwd_bwd(cudnn, None), (q, k, v, do))
  rec[f"cudnn_causal_{S}"] = {"s": base_t, "tflops": flops / base_t / 1e12}
  print(S, "cudnn", rec[f"cudnn_causal_{S}"], flush=True)
  for docs in (1, 8, 64):
    ks, _ = starts(S, docs) if docs > 1 else (None, None)
    try:
      t = timeit(fwd_bwd(tk, ks), (q, k, v, do))
      rec[f"tokamax_{docs}docs_{S}"] = {"s": t, "time_vs_cudnn_unmasked": base_t / t}
    except Exception as e:
      rec[f"tokamax_{docs}docs_{S}"] = f"{type(e).__name__}: {str(e)[:300]}"
    print(S, docs, rec[f"tokamax_{docs}docs_{S}"], flush=True)
json.dump(rec, open(os.path.join(os.environ.get("OUT", "."), "tokamax_probe.json"), "w"), indent=1)
