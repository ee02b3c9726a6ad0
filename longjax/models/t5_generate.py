"""Jit-compiled T5 decoding with a KV cache: greedy and top-p sampling, per-row RNG keys.

Each row carries its own PRNG key (for Quest: derived from (seed, doc_id, segment)), folded with
the step index, so a row's tokens do not depend on which batch it was decoded in or where.
The whole loop is one `lax.while_loop` that stops when every row has emitted EOS; the cache is
updated in place (`dynamic_update_slice` on loop-carried buffers).

Axis letters: B batch, S encoder sequence, T decoder steps, N heads, H head dim, D model, V vocab.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longjax.models.t5 import T5, _NEG_INF, padding_bias


@dataclasses.dataclass(frozen=True)
class DecodeConfig:
  """How to pick tokens: greedy, or nucleus (top-p) sampling at a temperature."""
  max_new_tokens: int = 64
  greedy: bool = False
  top_p: float = 0.95
  temperature: float = 1.0

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens ({self.max_new_tokens}) must be >= 1")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p ({self.top_p}) must be in (0, 1]")
    if self.temperature <= 0.0:
      raise ValueError(f"temperature ({self.temperature}) must be > 0; use greedy=True instead")


def row_keys(seed: int, doc_ids: np.ndarray, segments: np.ndarray) -> jax.Array:
  """One PRNG key per row from (seed, doc_id, segment); 64-bit doc ids fold in as two halves."""
  doc_ids = np.asarray(doc_ids, np.int64).astype(np.uint64)
  hi = jnp.asarray((doc_ids >> np.uint64(32)).astype(np.uint32))
  lo = jnp.asarray((doc_ids & np.uint64(0xFFFFFFFF)).astype(np.uint32))
  seg = jnp.asarray(np.asarray(segments, np.uint32))
  return _fold_keys(jax.random.key(seed), hi, lo, seg)


@jax.jit
def _fold_keys(base, hi, lo, seg):
  fold = jax.random.fold_in
  return jax.vmap(lambda h, l, s: fold(fold(fold(base, h), l), s))(hi, lo, seg)


def top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
  """Sets logits outside the smallest set of top tokens with probability mass >= top_p to -inf.

  logits [B,V] float32. The most likely token is always kept.
  """
  desc = -jnp.sort(-logits, axis=-1)
  probs = jax.nn.softmax(desc, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  threshold = jnp.min(jnp.where(mass_before < top_p, desc, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def _pick(logits: jax.Array, keys: jax.Array, step: jax.Array, cfg: DecodeConfig) -> jax.Array:
  if cfg.greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / cfg.temperature
  if cfg.top_p < 1.0:
    logits = top_p_filter(logits, cfg.top_p)
  step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, step)
  return jax.vmap(jax.random.categorical)(step_keys, logits).astype(jnp.int32)


def _decode_step(model: T5, token, t, self_k, self_v, cross_k, cross_v, cross_bias):
  """One decoder position for every row. token [B] at position t -> logits [B,V], new caches."""
  max_t = self_k[0].shape[2]
  k_pos = jnp.arange(max_t)
  bias = (model.position_bias(t[None], k_pos, decoder=True)
          + jnp.where(k_pos <= t, 0.0, _NEG_INF)[None, None, None, :])  # [1,N,1,T]
  x = model.embed[...].astype(model.dtype)[token][:, None, :]  # B1D
  new_k, new_v = [], []
  for i, layer in enumerate(model.decoder):
    h = layer.self_norm(x)
    k, v = layer.self_attn.project_kv(h)
    ck = jax.lax.dynamic_update_slice(self_k[i], k.astype(self_k[i].dtype), (0, 0, t, 0))
    cv = jax.lax.dynamic_update_slice(self_v[i], v.astype(self_v[i].dtype), (0, 0, t, 0))
    new_k.append(ck)
    new_v.append(cv)
    x = x + layer.self_attn.attend(h, ck, cv, bias)
    x = x + layer.cross_attn.attend(layer.cross_norm(x), cross_k[i], cross_v[i], cross_bias)
    x = x + layer.mlp(layer.mlp_norm(x))
  return model.logits(model.dec_norm(x))[:, 0], new_k, new_v


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"))
def _generate(graphdef, state, input_ids, attention_mask, keys, *, cfg: DecodeConfig):
  model = nnx.merge(graphdef, state)
  mc = model.config
  b = input_ids.shape[0]
  encoded = model.encode(input_ids, attention_mask)
  cross = [layer.cross_attn.project_kv(encoded) for layer in model.decoder]
  cross_k = [k for k, _ in cross]
  cross_v = [v for _, v in cross]
  cross_bias = padding_bias(attention_mask)
  cache_shape = (b, mc.num_heads, cfg.max_new_tokens, mc.d_kv)  # BNTH
  zeros = [jnp.zeros(cache_shape, model.dtype) for _ in model.decoder]
  out = jnp.full((b, cfg.max_new_tokens), mc.pad_token_id, jnp.int32)
  start = jnp.full((b,), mc.decoder_start_token_id, jnp.int32)
  init = (jnp.int32(0), start, out, jnp.zeros((b,), bool), zeros, list(zeros))

  def cond(state):
    t, _, _, done, _, _ = state
    return (t < cfg.max_new_tokens) & ~jnp.all(done)

  def body(state):
    t, token, out, done, sk, sv = state
    logits, sk, sv = _decode_step(model, token, t, sk, sv, cross_k, cross_v, cross_bias)
    nxt = jnp.where(done, mc.pad_token_id, _pick(logits, keys, t, cfg))
    out = jax.lax.dynamic_update_slice(out, nxt[:, None], (0, t))
    return t + 1, nxt, out, done | (nxt == mc.eos_token_id), sk, sv

  return jax.lax.while_loop(cond, body, init)[2]


def generate(model: T5, input_ids: jax.Array, attention_mask: jax.Array, keys: jax.Array | None,
             cfg: DecodeConfig = DecodeConfig()) -> jax.Array:
  """Decodes up to `cfg.max_new_tokens` per row -> ids [B, max_new_tokens], pad after EOS.

  The decoder-start token is not included; EOS is. `keys` [B] (see `row_keys`) is required
  for sampling and ignored for greedy decoding.
  """
  if input_ids.shape != attention_mask.shape:
    raise ValueError(f"input_ids {input_ids.shape} and attention_mask {attention_mask.shape} "
                     "must have the same shape")
  if keys is None:
    if not cfg.greedy:
      raise ValueError("sampling needs one PRNG key per row (see row_keys)")
    keys = row_keys(0, np.zeros(input_ids.shape[0]), np.zeros(input_ids.shape[0]))
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, jnp.asarray(input_ids, jnp.int32),
                   jnp.asarray(attention_mask, jnp.int32), keys, cfg=cfg)
