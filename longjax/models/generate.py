"""Greedy generation with a KV cache and chunked prefill, jit-compiled with static shapes.

Axis letters: B batch, C prefill chunk, T cache length, L layers, K kv heads, H head dim.

Shapes are bucketed so that one compiled program serves many prompts: the longest prompt is
right-padded to P = chunk x (power of two) tokens, the number of new tokens is a run-time limit
within a capacity of 128 x (power of two) (so tasks asking for 30 or 128 tokens share one
program), and the cache holds T = P + capacity slots, rounded up to a multiple of 128. Every cache slot carries a position and a segment id
(1 = filled, 0 = empty or padding), so "causal within the prompt, nothing unfilled" is the
ordinary mask `q_pos >= k_pos` within equal non-zero segments. Three attention paths:

- Whole-prompt prefill (`prefill_chunk` >= the prompt bucket, the accelerator setting): one
  `Llama.run` over [B, P] with the model's own causal attention (`longjax.ops.attention`:
  cuDNN on a GPU), writing every layer's K/V into the cache. Right padding follows every real
  token, so causality alone keeps it out of a real token's context.
- Chunked prefill (smaller `prefill_chunk`, the CPU/memory-bound setting): one [B, C] chunk at
  a time; its K/V go into the cache, then its queries attend to the T cache slots through the
  blockwise kernel's forward (`ops/kernels.py`, R2: separate key positions/segments), one
  [chunk, block] score tile per head at a time, skipping tiles with no visible slot, so a 32K
  prompt never needs S x S (or C x T) scores at once.
- Decode (one token per row): dense scores [B, N, T] against the cache, one fused einsum per
  layer; a loop over key tiles costs far more than the arithmetic at C = 1.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longjax.models.llama import Llama
from longjax.ops.attention import attention
from longjax.ops.blockwise import BLOCKWISE
from longjax.ops.kernels import BlockMask

CACHE_ALIGN = 128  # cache length multiple, so the blockwise kernel gets full-size key tiles
NEW_TOKENS_BUCKET = 128  # generation capacity multiple: one compiled program per prompt bucket


def _bucket(n: int, chunk: int) -> int:
  """Smallest chunk * 2^k >= n."""
  chunks = 1
  while chunks * chunk < n:
    chunks *= 2
  return chunks * chunk


def _write_cache(cache, layer, start, k, v):
  """Writes layer `layer`'s k/v [B, C, K, H] at slot `start` of the [L, B, T, K, H] cache (in
  place: the cache is a loop carry) -> (cache, that layer's k and v [B, T, K, H])."""
  k_cache, v_cache = cache
  at = (layer, 0, start, 0, 0)
  k_cache = jax.lax.dynamic_update_slice(k_cache, k[None].astype(k_cache.dtype), at)
  v_cache = jax.lax.dynamic_update_slice(v_cache, v[None].astype(v_cache.dtype), at)
  return ((k_cache, v_cache), jax.lax.dynamic_index_in_dim(k_cache, layer, keepdims=False),
          jax.lax.dynamic_index_in_dim(v_cache, layer, keepdims=False))


def _cache_attend(q, k, v, cache, layer, *, start, q_pos, q_seg, kv_pos, kv_seg):
  """Writes the chunk's k/v into the cache, then attends q to that layer's T slots through the
  blockwise kernel."""
  cache, k_layer, v_layer = _write_cache(cache, layer, start, k, v)
  mask = BlockMask(q_seg, kv_seg, q_pos, kv_pos, causal=True)
  out, _ = BLOCKWISE.fwd(q, k_layer, v_layer, mask, q.shape[-1] ** -0.5)
  return out.astype(q.dtype), cache


def _decode_attend(q, k, v, cache, layer, *, start, q_pos, kv_pos, kv_seg):
  """One new token per row: writes its k/v at slot `start`, then attends densely to the cache
  (scores [B, N, T], cheap at C = 1; one fused einsum instead of a loop over key tiles)."""
  cache, k_layer, v_layer = _write_cache(cache, layer, start, k, v)
  b, c, n, h = q.shape
  groups = n // k_layer.shape[2]
  qg = q.reshape(b, c, k_layer.shape[2], groups, h)
  scores = jnp.einsum("bckgh,btkh->bkgct", qg, k_layer,
                      preferred_element_type=jnp.float32) * h ** -0.5
  visible = (kv_seg[:, None, :] > 0) & (kv_pos[:, None, :] <= q_pos[:, :, None])  # [B, C, T]
  scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_layer.dtype)
  out = jnp.einsum("bkgct,btkh->bckgh", probs, v_layer, preferred_element_type=jnp.float32)
  return out.reshape(b, c, n, h).astype(q.dtype), cache


def _prefill_attend(q, k, v, cache, layer, *, implementation):
  """The whole (right-padded) prompt at once: its k/v fill cache slots [0, P), and attention is
  the model's own causal self-attention (cuDNN on a GPU); padding comes after every real token,
  so causality alone keeps it out of the real tokens' context."""
  cache, _, _ = _write_cache(cache, layer, 0, k, v)
  return attention(q, k, v, implementation=implementation), cache


def _step(model: Llama, cache, tokens, start, q_pos, q_seg, kv_pos, kv_seg):
  """Runs tokens [B, C] at cache slot `start` -> (hidden [B, C, D], cache, kv_pos, kv_seg)."""
  kv_pos = jax.lax.dynamic_update_slice(kv_pos, q_pos, (0, start))
  kv_seg = jax.lax.dynamic_update_slice(kv_seg, q_seg, (0, start))
  attend = functools.partial(_cache_attend, start=start, q_pos=q_pos, q_seg=q_seg,
                             kv_pos=kv_pos, kv_seg=kv_seg)
  hidden, cache = model.run(tokens, q_pos, attend, cache)
  return hidden, cache, kv_pos, kv_seg


def _logits(model: Llama, hidden):
  return jnp.einsum("bd,dv->bv", hidden, model.unembedding().astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("capacity", "chunk"))
def _generate(graphdef, state, prompts, lengths, eos_ids, limit, *, capacity: int, chunk: int):
  """prompts [B, P] right-padded, lengths [B] -> new tokens [B, capacity]: the first `limit`
  (a traced scalar <= capacity) are generated, -1 after EOS and beyond `limit`."""
  model = nnx.merge(graphdef, state)
  cfg = model.config
  b, p = prompts.shape
  t = -(-(p + capacity) // CACHE_ALIGN) * CACHE_ALIGN
  dtype = jnp.dtype(cfg.dtype)
  kv_shape = (cfg.num_hidden_layers, b, t, cfg.num_key_value_heads, cfg.head_dim)
  cache = (jnp.zeros(kv_shape, dtype), jnp.zeros(kv_shape, dtype))
  kv_pos = jnp.zeros((b, t), jnp.int32)
  kv_seg = jnp.zeros((b, t), jnp.int32)

  def prefill(carry, i):
    cache, kv_pos, kv_seg, last = carry
    start = i * chunk
    tokens = jax.lax.dynamic_slice_in_dim(prompts, start, chunk, axis=1)
    q_pos = jnp.broadcast_to(start + jnp.arange(chunk, dtype=jnp.int32), (b, chunk))
    q_seg = (q_pos < lengths[:, None]).astype(jnp.int32)
    hidden, cache, kv_pos, kv_seg = _step(model, cache, tokens, start, q_pos, q_seg, kv_pos,
                                          kv_seg)
    # Keep the hidden state of each row's last prompt token when it falls in this chunk.
    idx = jnp.clip(lengths - 1 - start, 0, chunk - 1)
    here = (lengths - 1 >= start) & (lengths - 1 < start + chunk)
    picked = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]
    return (cache, kv_pos, kv_seg, jnp.where(here[:, None], picked, last)), None

  if chunk == p:  # one chunk: the whole prompt through the model's own attention
    q_pos = jnp.broadcast_to(jnp.arange(p, dtype=jnp.int32), (b, p))
    q_seg = (q_pos < lengths[:, None]).astype(jnp.int32)
    kv_pos = jax.lax.dynamic_update_slice(kv_pos, q_pos, (0, 0))
    kv_seg = jax.lax.dynamic_update_slice(kv_seg, q_seg, (0, 0))
    attend = functools.partial(_prefill_attend, implementation=cfg.attention_impl)
    hidden, cache = model.run(prompts, q_pos, attend, cache)
    last = jnp.take_along_axis(hidden, (lengths - 1)[:, None, None], axis=1)[:, 0]
  else:
    last = jnp.zeros((b, cfg.hidden_size), dtype)
    (cache, kv_pos, kv_seg, last), _ = jax.lax.scan(
        prefill, (cache, kv_pos, kv_seg, last), jnp.arange(p // chunk))
  token = jnp.argmax(_logits(model, last), axis=-1).astype(jnp.int32)
  done = jnp.isin(token, eos_ids)
  out = jnp.full((b, capacity), -1, jnp.int32).at[:, 0].set(token)

  def cond(carry):
    i, _, _, _, _, done, _ = carry
    return (i < limit) & ~jnp.all(done)

  def decode(carry):
    i, cache, kv_pos, kv_seg, token, done, out = carry
    q_pos = (lengths + i - 1)[:, None]
    start = p + i - 1
    kv_pos = jax.lax.dynamic_update_slice(kv_pos, q_pos, (0, start))
    kv_seg = jax.lax.dynamic_update_slice(kv_seg, jnp.ones((b, 1), jnp.int32), (0, start))
    attend = functools.partial(_decode_attend, start=start, q_pos=q_pos, kv_pos=kv_pos,
                               kv_seg=kv_seg)
    hidden, cache = model.run(token[:, None], q_pos, attend, cache)
    token = jnp.argmax(_logits(model, hidden[:, 0]), axis=-1).astype(jnp.int32)
    out = out.at[:, i].set(jnp.where(done, -1, token))
    return i + 1, cache, kv_pos, kv_seg, token, done | jnp.isin(token, eos_ids), out

  carry = (jnp.int32(1), cache, kv_pos, kv_seg, token, done, out)
  return jax.lax.while_loop(cond, decode, carry)[-1]


def generate(model: Llama, prompt_ids: Sequence[int] | Sequence[Sequence[int]] | np.ndarray,
             max_new_tokens: int, *, eos_id: int | Sequence[int] | None = None,
             prefill_chunk: int = 512) -> list[int] | list[list[int]]:
  """Greedy continuation of one prompt (1-D) or a batch of prompts (list of lists, ragged ok).

  Returns the new token ids per prompt, up to and including the first EOS. `eos_id` None means
  the model config's EOS ids; `()` never stops early. Prompts are used as given (add BOS
  yourself). A prompt of n tokens needs n + max_new_tokens <= the positions the model was
  trained for to make sense, but nothing here enforces it.
  """
  single = len(prompt_ids) > 0 and np.ndim(prompt_ids[0]) == 0
  rows = [list(map(int, r)) for r in ([prompt_ids] if single else prompt_ids)]
  if not rows or any(len(r) == 0 for r in rows):
    raise ValueError("generate needs at least one non-empty prompt")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if prefill_chunk < 1:
    raise ValueError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
  vocab = model.config.vocab_size
  bad = [t for r in rows for t in r if not 0 <= t < vocab]
  if bad:
    raise ValueError(f"prompt token ids must be in [0, {vocab}); got {bad[:5]}")
  chunk = min(prefill_chunk, _bucket(max(map(len, rows)), 1))
  p = _bucket(max(map(len, rows)), chunk)
  prompts = np.zeros((len(rows), p), np.int32)
  for i, r in enumerate(rows):
    prompts[i, :len(r)] = r
  eos = model.config.eos_ids if eos_id is None else (
      (eos_id,) if np.ndim(eos_id) == 0 else tuple(eos_id))
  eos_ids = jnp.asarray(eos if eos else (-2,), jnp.int32)
  graphdef, state = nnx.split(model)
  out = np.asarray(_generate(graphdef, state, jnp.asarray(prompts),
                             jnp.asarray([len(r) for r in rows], jnp.int32), eos_ids,
                             jnp.int32(max_new_tokens),
                             capacity=_bucket(max_new_tokens, NEW_TOKENS_BUCKET), chunk=chunk))
  result = [[int(t) for t in row[:max_new_tokens] if t >= 0] for row in out]
  return result[0] if single else result
