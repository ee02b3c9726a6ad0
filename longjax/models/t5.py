"""A Flax NNX T5 encoder-decoder (v1.0 and v1.1 shapes) that loads Hugging Face T5 checkpoints.

Used for doc2query-style query prediction (Quest). transformers 5 dropped its Flax T5, so this is
our own; `tests/models/test_t5.py` checks it against transformers' PyTorch T5.

T5 specifics kept here, because each one changes the logits:
- RMS layer norm without mean subtraction or bias, statistics in float32.
- Unscaled attention logits (the 1/sqrt(H) is folded into the initialisation) plus a learned
  relative-position bias shared by all layers of a stack (bidirectional buckets in the encoder,
  causal buckets in the decoder); cross-attention has no position bias.
- v1.0: ReLU MLP, lm head tied to the embedding and the decoder output scaled by D**-0.5.
  v1.1: gated-GELU (tanh approximation) MLP, untied lm head, no output scaling.

Axis letters: B batch, S encoder sequence, T decoder sequence, N heads, H head dim (`d_kv`),
D model, F mlp, V vocab.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_ACTIVATIONS = {
  "relu": jax.nn.relu,
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
  "silu": jax.nn.silu,
}
_NEG_INF = -1e9  # additive mask value; finite so fully masked rows stay NaN-free
_List = getattr(nnx, "List", list)  # flax < 0.12 keeps plain lists of modules


@dataclasses.dataclass(frozen=True)
class T5Config:
  """T5 shape; field names are the HF `config.json` names."""
  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 2048
  num_layers: int = 6
  num_decoder_layers: int | None = None
  num_heads: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  feed_forward_proj: str = "relu"
  tie_word_embeddings: bool = True
  # Original T5 scales decoder output by D**-0.5 before a tied lm head; v1.1 does not. HF
  # (transformers >= 5) stores this explicitly; older configs imply it from tie_word_embeddings.
  scale_decoder_outputs: bool | None = None
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.num_decoder_layers is None:
      object.__setattr__(self, "num_decoder_layers", self.num_layers)
    if self.scale_decoder_outputs is None:
      object.__setattr__(self, "scale_decoder_outputs", bool(self.tie_word_embeddings))
    self.activation  # validates feed_forward_proj
    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                 "relative_attention_num_buckets"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1")
    if self.relative_attention_num_buckets % 2:
      raise ValueError(f"relative_attention_num_buckets ({self.relative_attention_num_buckets})"
                       " must be even (half are used per direction in the encoder)")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"{name} must be float32, bfloat16 or float16, "
                         f"got {getattr(self, name)!r}")

  @property
  def is_gated(self) -> bool:
    return self.feed_forward_proj.startswith("gated-")

  @property
  def activation(self):
    act = self.feed_forward_proj.split("-")[-1]
    if self.feed_forward_proj == "gated-gelu":
      act = "gelu_new"  # HF maps v1.1's "gated-gelu" to the tanh approximation
    parts = self.feed_forward_proj.split("-")
    if act not in _ACTIVATIONS or len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
      raise ValueError(f"feed_forward_proj must be 'relu', 'gelu', 'silu' or 'gated-<act>', "
                       f"got {self.feed_forward_proj!r}")
    return _ACTIVATIONS[act]

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "T5Config":
    """Builds a config from an HF `config.json` dict (unknown keys ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in hf.items() if k in names and v is not None}
    if isinstance(kwargs.get("eos_token_id"), list):
      kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
    kwargs.update(overrides)
    return cls(**kwargs)

  @classmethod
  def v1_1_base(cls, **overrides) -> "T5Config":
    """The T5-v1.1-base shape (doc2query/msmarco-t5-base-v1)."""
    return cls(**{**dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12,
                         num_heads=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False),
                  **overrides})


def relative_position_bucket(relative_position: jax.Array, *, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> jax.Array:
  """Maps `key_pos - query_pos` to T5 bucket ids: exact below half the buckets, then log-spaced."""
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  safe = jnp.maximum(distance, 1).astype(jnp.float32)  # log(0) is masked by is_small anyway
  large = max_exact + (jnp.log(safe / max_exact) / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, distance, large)


class RMSNorm(nnx.Module):
  """T5LayerNorm: x / rms(x) * w, no mean, no bias; statistics in float32."""

  def __init__(self, dim: int, eps: float, param_dtype):
    self.weight = nnx.Param(jnp.ones((dim,), param_dtype))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
    return (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype) * self.weight[...].astype(x.dtype)


def _init(rngs: nnx.Rngs, shape, std: float, dtype) -> nnx.Param:
  return nnx.Param((jax.random.normal(rngs.params(), shape, jnp.float32) * std).astype(dtype))


class Attention(nnx.Module):
  """Multi-head attention without the 1/sqrt(H) scale; callers pass the additive bias."""

  def __init__(self, cfg: T5Config, rngs: nnx.Rngs):
    d, n, h, pd = cfg.d_model, cfg.num_heads, cfg.d_kv, jnp.dtype(cfg.param_dtype)
    self.q = _init(rngs, (d, n, h), (d * h) ** -0.5, pd)  # DNH
    self.k = _init(rngs, (d, n, h), d ** -0.5, pd)
    self.v = _init(rngs, (d, n, h), d ** -0.5, pd)
    self.o = _init(rngs, (n, h, d), (n * h) ** -0.5, pd)  # NHD

  def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x [B,S,D] -> k, v [B,N,S,H] (head-major, so cached K/V need no transpose per step)."""
    return (jnp.einsum("bsd,dnh->bnsh", x, self.k[...].astype(x.dtype)),
            jnp.einsum("bsd,dnh->bnsh", x, self.v[...].astype(x.dtype)))

  def attend(self, x: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
    """x [B,T,D] queries over k/v [B,N,S,H]; bias broadcastable to [B,N,T,S]; returns [B,T,D]."""
    q = jnp.einsum("btd,dnh->bnth", x, self.q[...].astype(x.dtype))
    scores = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=jnp.float32) + bias
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bnts,bnsh->bnth", probs, v)
    return jnp.einsum("bnth,nhd->btd", out, self.o[...].astype(x.dtype))

  def __call__(self, x: jax.Array, kv_input: jax.Array, bias: jax.Array) -> jax.Array:
    k, v = self.project_kv(kv_input)
    return self.attend(x, k, v, bias)


class FeedForward(nnx.Module):
  """wi -> act -> wo (v1.0), or act(wi_0) * wi_1 -> wo (v1.1 gated)."""

  def __init__(self, cfg: T5Config, rngs: nnx.Rngs):
    d, f, pd = cfg.d_model, cfg.d_ff, jnp.dtype(cfg.param_dtype)
    self.act = cfg.activation
    self.gated = cfg.is_gated
    self.wi = _init(rngs, (d, f), d ** -0.5, pd)  # DF
    self.wi_1 = _init(rngs, (d, f), d ** -0.5, pd) if self.gated else None
    self.wo = _init(rngs, (f, d), f ** -0.5, pd)  # FD

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.act(x @ self.wi[...].astype(x.dtype))
    if self.gated:
      h = h * (x @ self.wi_1[...].astype(x.dtype))
    return h @ self.wo[...].astype(x.dtype)


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: T5Config, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.mlp = FeedForward(cfg, rngs)

  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    h = self.attn_norm(x)
    x = x + self.attn(h, h, bias)
    return x + self.mlp(self.mlp_norm(x))


class DecoderLayer(nnx.Module):
  def __init__(self, cfg: T5Config, rngs: nnx.Rngs):
    pd = jnp.dtype(cfg.param_dtype)
    self.self_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.self_attn = Attention(cfg, rngs)
    self.cross_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.cross_attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.mlp = FeedForward(cfg, rngs)


class T5(nnx.Module):
  """T5 encoder-decoder. `model(input_ids, decoder_input_ids, attention_mask) -> logits [B,T,V]`."""

  def __init__(self, cfg: T5Config, *, rngs: nnx.Rngs):
    self.config = cfg
    pd = jnp.dtype(cfg.param_dtype)
    nb, n = cfg.relative_attention_num_buckets, cfg.num_heads
    self.embed = _init(rngs, (cfg.vocab_size, cfg.d_model), 1.0, pd)  # VD
    self.enc_rel_bias = _init(rngs, (nb, n), cfg.d_model ** -0.5, pd)
    self.dec_rel_bias = _init(rngs, (nb, n), cfg.d_model ** -0.5, pd)
    self.encoder = _List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.enc_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.decoder = _List([DecoderLayer(cfg, rngs) for _ in range(cfg.num_decoder_layers)])
    self.dec_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon, pd)
    self.lm_head = (None if cfg.tie_word_embeddings
                    else _init(rngs, (cfg.d_model, cfg.vocab_size), 1.0, pd))  # DV

  @property
  def dtype(self):
    return jnp.dtype(self.config.dtype)

  def position_bias(self, q_pos: jax.Array, k_pos: jax.Array, *, decoder: bool) -> jax.Array:
    """q_pos [T], k_pos [S] -> additive bias [1, N, T, S] in float32."""
    cfg = self.config
    buckets = relative_position_bucket(
      k_pos[None, :] - q_pos[:, None], bidirectional=not decoder,
      num_buckets=cfg.relative_attention_num_buckets,
      max_distance=cfg.relative_attention_max_distance)
    table = (self.dec_rel_bias if decoder else self.enc_rel_bias)[...].astype(jnp.float32)
    return jnp.transpose(table[buckets], (2, 0, 1))[None]

  def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
    """input_ids [B,S] (mask 1 = real token) -> encoder output [B,S,D]."""
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    s = input_ids.shape[1]
    pos = jnp.arange(s)
    bias = self.position_bias(pos, pos, decoder=False) + padding_bias(attention_mask)
    x = self.embed[...].astype(self.dtype)[input_ids]
    for layer in self.encoder:
      x = layer(x, bias)
    return self.enc_norm(x)

  def logits(self, x: jax.Array) -> jax.Array:
    """Final decoder hidden states [B,T,D] (after dec_norm) -> logits [B,T,V] in float32."""
    if self.config.scale_decoder_outputs:
      x = x * (self.config.d_model ** -0.5)
    head = (self.embed[...].T if self.lm_head is None else self.lm_head[...]).astype(x.dtype)
    return jnp.einsum("btd,dv->btv", x, head, preferred_element_type=jnp.float32)

  def decode(self, decoder_input_ids: jax.Array, encoded: jax.Array,
             attention_mask: jax.Array | None = None) -> jax.Array:
    """Teacher-forced decoder pass: ids [B,T], encoder output [B,S,D] -> logits [B,T,V]."""
    b, s = encoded.shape[:2]
    if attention_mask is None:
      attention_mask = jnp.ones((b, s), jnp.int32)
    t = decoder_input_ids.shape[1]
    pos = jnp.arange(t)
    causal = jnp.where(pos[None, :] <= pos[:, None], 0.0, _NEG_INF)[None, None]
    self_bias = self.position_bias(pos, pos, decoder=True) + causal
    cross_bias = padding_bias(attention_mask)
    x = self.embed[...].astype(self.dtype)[decoder_input_ids]
    for layer in self.decoder:
      h = layer.self_norm(x)
      x = x + layer.self_attn(h, h, self_bias)
      x = x + layer.cross_attn(layer.cross_norm(x), encoded, cross_bias)
      x = x + layer.mlp(layer.mlp_norm(x))
    return self.logits(self.dec_norm(x))

  def __call__(self, input_ids: jax.Array, decoder_input_ids: jax.Array,
               attention_mask: jax.Array | None = None) -> jax.Array:
    return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)


def padding_bias(attention_mask: jax.Array) -> jax.Array:
  """mask [B,S] (1 = attend) -> additive bias [B,1,1,S]."""
  return jnp.where(attention_mask[:, None, None, :] > 0, 0.0, _NEG_INF).astype(jnp.float32)


# --- Hugging Face checkpoints ------------------------------------------------------------------

def _read_hf_tensors(path: Path) -> dict[str, np.ndarray]:
  if any(path.glob("*.safetensors")):
    from longjax.models.hf import read_safetensors  # pylint: disable=import-outside-toplevel
    return {k: np.asarray(v, np.float32) for k, v in read_safetensors(path).items()}
  bins = sorted(path.glob("pytorch_model*.bin"))
  if bins:
    import torch
    out = {}
    for f in bins:
      out.update({k: v.float().numpy() for k, v in
                  torch.load(str(f), map_location="cpu", weights_only=True).items()})
    return out
  raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weights found")


def load_hf_t5(path: str | os.PathLike, *, dtype: str = "float32",
               param_dtype: str = "float32") -> T5:
  """Loads an HF T5ForConditionalGeneration directory (config.json + safetensors or .bin)."""
  path = Path(path)
  cfg_file = path / "config.json"
  if not cfg_file.is_file():
    raise FileNotFoundError(f"{cfg_file}: missing; expected an HF T5 checkpoint directory")
  hf = json.loads(cfg_file.read_text())
  if hf.get("model_type", "t5") not in ("t5", "mt5"):
    raise ValueError(f"{cfg_file}: model_type {hf.get('model_type')!r} is not a T5 model")
  tensors = _read_hf_tensors(path)
  untied = "lm_head.weight" in tensors and (
    hf.get("tie_word_embeddings") is False
    or not np.array_equal(tensors["lm_head.weight"], _shared(tensors, path)))
  cfg = T5Config.from_hf(hf, dtype=dtype, param_dtype=param_dtype, tie_word_embeddings=not untied,
                         scale_decoder_outputs=hf.get("scale_decoder_outputs",
                                                      hf.get("tie_word_embeddings") is not False))
  model = nnx.eval_shape(lambda: T5(cfg, rngs=nnx.Rngs(0)))
  _assign_hf(model, tensors, path)
  return model


def _shared(tensors: Mapping[str, np.ndarray], path: Path) -> np.ndarray:
  for key in ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
    if key in tensors:
      return tensors[key]
  raise KeyError(f"{path}: no shared.weight (or encoder.embed_tokens.weight) in the checkpoint")


def _assign_hf(model: T5, tensors: Mapping[str, np.ndarray], path: Path) -> None:
  cfg = model.config
  pd = jnp.dtype(cfg.param_dtype)
  n, h = cfg.num_heads, cfg.d_kv
  used: set[str] = set()

  def get(key: str) -> np.ndarray:
    if key not in tensors:
      raise KeyError(f"{path}: checkpoint lacks tensor {key!r} "
                     f"(needed by a {cfg.feed_forward_proj} T5)")
    used.add(key)
    return np.asarray(tensors[key], np.float32)

  def put(param: nnx.Param, value: np.ndarray) -> None:
    if tuple(param.shape) != value.shape:
      raise ValueError(f"{path}: shape {value.shape} does not match the config's {param.shape}")
    param.value = jnp.asarray(value, pd)

  def put_attn(attn: Attention, prefix: str) -> None:
    d = cfg.d_model
    for name in ("q", "k", "v"):  # torch Linear [N*H, D] -> DNH
      put(getattr(attn, name), get(f"{prefix}.{name}.weight").T.reshape(d, n, h))
    put(attn.o, get(f"{prefix}.o.weight").T.reshape(n, h, d))

  def put_mlp(mlp: FeedForward, prefix: str) -> None:
    if mlp.gated:
      put(mlp.wi, get(f"{prefix}.wi_0.weight").T)
      put(mlp.wi_1, get(f"{prefix}.wi_1.weight").T)
    else:
      put(mlp.wi, get(f"{prefix}.wi.weight").T)
    put(mlp.wo, get(f"{prefix}.wo.weight").T)

  shared = _shared(tensors, path)
  used.update(k for k in ("shared.weight", "encoder.embed_tokens.weight",
                          "decoder.embed_tokens.weight") if k in tensors)
  put(model.embed, np.asarray(shared, np.float32))
  rel = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
  put(model.enc_rel_bias, get(f"encoder.{rel}"))
  put(model.dec_rel_bias, get(f"decoder.{rel}"))
  for i, layer in enumerate(model.encoder):
    p = f"encoder.block.{i}.layer"
    put(layer.attn_norm.weight, get(f"{p}.0.layer_norm.weight"))
    put_attn(layer.attn, f"{p}.0.SelfAttention")
    put(layer.mlp_norm.weight, get(f"{p}.1.layer_norm.weight"))
    put_mlp(layer.mlp, f"{p}.1.DenseReluDense")
  put(model.enc_norm.weight, get("encoder.final_layer_norm.weight"))
  for i, layer in enumerate(model.decoder):
    p = f"decoder.block.{i}.layer"
    put(layer.self_norm.weight, get(f"{p}.0.layer_norm.weight"))
    put_attn(layer.self_attn, f"{p}.0.SelfAttention")
    put(layer.cross_norm.weight, get(f"{p}.1.layer_norm.weight"))
    put_attn(layer.cross_attn, f"{p}.1.EncDecAttention")
    put(layer.mlp_norm.weight, get(f"{p}.2.layer_norm.weight"))
    put_mlp(layer.mlp, f"{p}.2.DenseReluDense")
  put(model.dec_norm.weight, get("decoder.final_layer_norm.weight"))
  if model.lm_head is not None:
    put(model.lm_head, get("lm_head.weight").T)
  else:
    used.add("lm_head.weight")
  leftover = sorted(k for k in tensors if k not in used)
  if leftover:
    raise ValueError(f"{path}: unexpected tensors for a T5 encoder-decoder: {leftover[:5]}")
