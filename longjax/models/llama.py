"""Flax NNX Llama: Llama 2, 3, 3.1 (llama3 RoPE scaling), 3.2 (tied embeddings) and SmolLM2.

Axis letters: B batch, S sequence, N query heads, K kv heads, H head dim, D model, F mlp, V vocab,
L layers.

The file reads top-down: `LlamaConfig` (HF config.json field names plus run-time choices), RoPE,
then modules small to large (`RMSNorm`, `Attention`, `MLP`, `DecoderLayer`, `Llama`).

Sharding: logical names only, through Flax's own mechanism.
- Every parameter is an `nnx.Param` whose `out_sharding` metadata is a tuple of logical names:
    embed_tokens.embedding        [V, D]        ('vocab', 'embed')
    layers.self_attn.q_proj       [L, D, N, H]  ('layers', 'embed', 'heads', 'head_dim')
    layers.self_attn.{k,v}_proj   [L, D, K, H]  ('layers', 'embed', 'kv_heads', 'head_dim')
    layers.self_attn.o_proj       [L, N, H, D]  ('layers', 'heads', 'head_dim', 'embed')
    layers.mlp.{gate,up}_proj     [L, D, F]     ('layers', 'embed', 'mlp')
    layers.mlp.down_proj          [L, F, D]     ('layers', 'mlp', 'embed')
    layers.*_layernorm.scale      [L, D]        ('layers', 'embed')
    norm.scale                    [D]           ('embed',)
    lm_head.kernel (untied only)  [D, V]        ('embed', 'vocab')
  (the paths of `nnx.state(model)`, which are also the keys of `hf.py`'s name table). Params are
  created with `eager_sharding=False`, so building a model never needs a mesh; a trainer gets
  PartitionSpecs with
    with nnx.logical_axis_rules(RULES): specs = nnx.get_partition_spec(nnx.state(model))
  which maps each name through RULES by plain lookup (so RULES must name every logical axis
  above, mapping unused ones to None), then places the state with `jax.device_put` or as the
  `out_shardings` of a jitted init.
- Activations are constrained with `flax.linen.with_logical_constraint`, a no-op unless rules are
  set (`nnx.logical_axis_rules`, the same context) under a mesh: the residual stream
  ('batch', 'sequence', 'embed') at every layer boundary, q ('batch', 'sequence', 'heads', None),
  k/v ('batch', 'sequence', 'kv_heads', None), the MLP hidden ('batch', 'sequence', 'mlp') and the
  logits ('batch', 'sequence', 'vocab').
- Layers are one stacked module (created with `nnx.vmap`, a leading `layers` axis) in both modes:
  `scan_layers=True` runs them with `jax.lax.scan`, False unrolls a Python loop over layer slices.
  The parameter tree is the same either way, so checkpoints move between the modes.
- Remat: the per-layer function is wrapped in `jax.checkpoint` with the policy named by
  `remat_policy`. The attention kernels tag their residuals, output 'context' and log-sum-exp
  'context_lse', inside their VJP rules (ops/kernels.py, ops/ring.py); tagging the output here
  as well would save a second copy of it per layer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen
from flax import nnx

from longjax.ops import RingOptions, attention

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "models"
DTYPES = ("float32", "bfloat16", "float16")
ROPE_TYPES = ("default", "linear", "llama3")
LLAMA3_ROPE_KEYS = ("factor", "low_freq_factor", "high_freq_factor",
                    "original_max_position_embeddings")
# HF config.json keys that describe storage or PyTorch run-time behaviour, not the network.
HF_IGNORED_KEYS = frozenset({
    "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache",
    "pretraining_tp", "attention_dropout", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "is_decoder", "pruned_heads", "tie_encoder_decoder",
    "chunk_size_feed_forward", "problem_type", "id2label", "label2id", "tokenizer_class",
    "use_return_dict", "_attn_implementation_autoset", "rope_parameters", "layer_types"})
# Fields that are longjax run-time choices; they never go into an HF config.json.
RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat_policy", "attention_impl",
                  "mlp_chunk_size")


def _remat_policies() -> dict[str, Any]:
  """Named remat policies; 'none' means no jax.checkpoint at all."""
  cp = jax.checkpoint_policies
  names = ("context", "context_lse")
  return {
      "none": None,
      "full": cp.nothing_saveable,
      "save_context": cp.save_only_these_names(*names),
      # Matmul outputs and the attention output: the kernels' output is a custom call, not a
      # dot, so without its names the backward would re-run attention, the costliest part.
      "save_dots": cp.save_from_both_policies(cp.dots_with_no_batch_dims_saveable,
                                              cp.save_only_these_names(*names)),
      "offload_context": cp.save_and_offload_only_these_names(
          names_which_can_be_saved=[], names_which_can_be_offloaded=list(names),
          offload_src="device", offload_dst="pinned_host"),
  }


REMAT_POLICIES = tuple(_remat_policies())


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Llama-family shape (HF config.json names) plus longjax run-time choices.

  `dtype` is the compute dtype, `param_dtype` the storage dtype of parameters. `mlp_chunk_size`
  runs the MLP over sequence chunks of that many tokens so [B, S, F] never exists at once.
  """
  vocab_size: int = 32000
  hidden_size: int = 4096
  intermediate_size: int = 11008
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int | None = None
  head_dim: int | None = None
  hidden_act: str = "silu"
  max_position_embeddings: int = 4096
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: Mapping[str, Any] | None = None
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  initializer_range: float = 0.02
  bos_token_id: int | None = 1
  eos_token_id: int | tuple[int, ...] | None = 2
  pad_token_id: int | None = None
  # longjax run-time choices (not part of an HF config.json).
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str | None = None
  mlp_chunk_size: int | None = None

  def __post_init__(self):
    if self.num_key_value_heads is None:
      object.__setattr__(self, "num_key_value_heads", self.num_attention_heads)
    if self.head_dim is None:
      object.__setattr__(self, "head_dim", self.hidden_size // max(self.num_attention_heads, 1))
    if isinstance(self.eos_token_id, list):
      object.__setattr__(self, "eos_token_id", tuple(self.eos_token_id))
    if self.rope_scaling is not None:
      object.__setattr__(self, "rope_scaling", dict(self.rope_scaling))
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "num_key_value_heads", "head_dim",
                 "max_position_embeddings"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"LlamaConfig.{name} must be a positive int, got {value!r}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                       f"num_key_value_heads ({self.num_key_value_heads})")
    if self.head_dim % 2:
      raise ValueError(f"head_dim ({self.head_dim}) must be even for RoPE")
    if self.hidden_act != "silu":
      raise ValueError(f"hidden_act must be 'silu' (SwiGLU), got {self.hidden_act!r}")
    if self.attention_bias or self.mlp_bias:
      raise ValueError("attention_bias and mlp_bias must be false: Llama-family checkpoints "
                       f"have no biases (got {self.attention_bias}, {self.mlp_bias})")
    if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
      raise ValueError(f"rms_norm_eps ({self.rms_norm_eps}) and rope_theta ({self.rope_theta}) "
                       "must be positive")
    self._check_rope_scaling()
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"LlamaConfig.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {self.remat_policy!r}")
    if self.mlp_chunk_size is not None and (
        not isinstance(self.mlp_chunk_size, int) or self.mlp_chunk_size <= 0):
      raise ValueError(
          f"mlp_chunk_size must be None or a positive int, got {self.mlp_chunk_size!r}")

  def _check_rope_scaling(self):
    rs = self.rope_scaling
    if rs is None:
      return
    rope_type = rs.get("rope_type", rs.get("type", "default"))
    if rope_type not in ROPE_TYPES:
      raise ValueError(f"rope_scaling.rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
    needed = {"default": (), "linear": ("factor",), "llama3": LLAMA3_ROPE_KEYS}[rope_type]
    missing = [k for k in needed if k not in rs]
    if missing:
      raise ValueError(f"rope_scaling of type {rope_type!r} is missing {missing}")

  def __hash__(self):  # rope_scaling is a dict; hash the canonical JSON form instead.
    return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))

  @property
  def rope_type(self) -> str:
    rs = self.rope_scaling or {}
    return rs.get("rope_type", rs.get("type", "default"))

  @property
  def eos_ids(self) -> tuple[int, ...]:
    """EOS ids as a tuple (Llama 3.1 instruct checkpoints list several)."""
    if self.eos_token_id is None:
      return ()
    return self.eos_token_id if isinstance(self.eos_token_id, tuple) else (self.eos_token_id,)

  def num_params(self) -> int:
    """Parameter count (embeddings counted once when tied)."""
    d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
    attn = d * h * (2 * self.num_attention_heads + 2 * self.num_key_value_heads)
    layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_word_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_hidden_layers * layer + d + head

  @classmethod
  def from_hf_dict(cls, hf: Mapping[str, Any], *, strict: bool = False,
                   source: str = "config", **overrides) -> "LlamaConfig":
    """Builds a config from an HF config.json dict (transformers v4 or v5 rope layout).

    strict=True rejects keys that are neither fields nor known HF bookkeeping keys.
    """
    hf = dict(hf)
    if hf.get("model_type", "llama") != "llama":
      raise ValueError(f"{source}: model_type must be 'llama', got {hf['model_type']!r}")
    rope_params = hf.get("rope_parameters")
    if isinstance(rope_params, Mapping) and "rope_theta" not in hf:
      # transformers v5 keeps theta and scaling together in `rope_parameters`.
      rope_params = dict(rope_params)
      hf["rope_theta"] = rope_params.pop("rope_theta", cls.rope_theta)
      if rope_params.get("rope_type", "default") != "default":
        hf["rope_scaling"] = rope_params
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in hf if k not in fields and k not in HF_IGNORED_KEYS)
    if strict and unknown:
      raise ValueError(f"{source}: unknown LlamaConfig keys {unknown}")
    kwargs = {k: v for k, v in hf.items()
              if k in fields and k not in RUNTIME_FIELDS and k not in overrides}
    return cls(**kwargs, **overrides)

  def to_hf_dict(self) -> dict[str, Any]:
    """The HF config.json dict (v4 rope layout, which transformers v4 and v5 both read)."""
    out = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    for f in dataclasses.fields(self):
      if f.name not in RUNTIME_FIELDS:
        value = getattr(self, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    out["torch_dtype"] = self.param_dtype
    return out

  @classmethod
  def preset(cls, name: str, **overrides) -> "LlamaConfig":
    """Loads `configs/models/<name>.json`; keyword overrides replace fields."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
      names = sorted(p.stem for p in PRESET_DIR.glob("*.json"))
      raise ValueError(f"unknown model preset {name!r} ({path} not found); presets: {names}")
    return cls.from_hf_dict(json.loads(path.read_text()), strict=True, source=str(path),
                            **overrides)


# ---------------------------------------------------------------------------------------------
# RoPE


def rope_inv_freq(config: LlamaConfig) -> np.ndarray:
  """Inverse frequencies [H/2] in float32, with linear or llama3 scaling as HF computes them."""
  h = config.head_dim
  inv_freq = 1.0 / (np.float32(config.rope_theta) ** (np.arange(0, h, 2, dtype=np.float32) / h))
  inv_freq = inv_freq.astype(np.float32)
  rs = config.rope_scaling or {}
  if config.rope_type == "linear":
    inv_freq = inv_freq / np.float32(rs["factor"])
  elif config.rope_type == "llama3":
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old_len = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * np.pi / inv_freq
    scaled = np.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv_freq = np.where(medium, smoothed, scaled)
  return inv_freq.astype(np.float32)


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [B, S, *, H] by angle positions [B, S] x inv_freq (half-split layout, as HF)."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, S, H/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  xf = x.astype(jnp.float32)
  x1, x2 = jnp.split(xf, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


# ---------------------------------------------------------------------------------------------
# Modules


def _param(rngs: nnx.Rngs | None, shape: tuple[int, ...], names: tuple[str, ...],
           config: LlamaConfig, init: str = "normal") -> nnx.Param:
  """A parameter with logical axis names; normal(std=initializer_range) or ones."""
  dtype = jnp.dtype(config.param_dtype)
  if init == "ones":
    value = jnp.ones(shape, dtype)
  else:
    value = config.initializer_range * jax.random.normal(rngs.params(), shape, dtype)
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


def _constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  return linen.with_logical_constraint(x, names)


class RMSNorm(nnx.Module):
  """x / rms(x) * scale, normalised in float32 as HF does."""

  def __init__(self, config: LlamaConfig):
    self.eps = config.rms_norm_eps
    self.scale = _param(None, (config.hidden_size,), ("embed",), config, init="ones")

  def __call__(self, x: jax.Array) -> jax.Array:
    xf = x.astype(jnp.float32)
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * xf.astype(x.dtype)


# attend(q [B,S,N,H], k [B,S,K,H], v [B,S,K,H], cache, layer) -> (context [B,S,N,H], new cache)
AttendFn = Callable[[jax.Array, jax.Array, jax.Array, Any, Any], tuple[jax.Array, Any]]


class Attention(nnx.Module):
  """GQA projections with RoPE; the attention itself is the `attend` callback (K/V not repeated)."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    d, n, k, h = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                  config.head_dim)
    self.q_proj = _param(rngs, (d, n, h), ("embed", "heads", "head_dim"), config)
    self.k_proj = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), config)
    self.v_proj = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), config)
    self.o_proj = _param(rngs, (n, h, d), ("heads", "head_dim", "embed"), config)

  def __call__(self, x: jax.Array, positions: jax.Array, inv_freq: np.ndarray,
               attend: Callable, cache: Any) -> tuple[jax.Array, Any]:
    dt = x.dtype
    q = jnp.einsum("bsd,dnh->bsnh", x, self.q_proj[...].astype(dt))
    k = jnp.einsum("bsd,dkh->bskh", x, self.k_proj[...].astype(dt))
    v = jnp.einsum("bsd,dkh->bskh", x, self.v_proj[...].astype(dt))
    q = _constrain(apply_rope(q, positions, inv_freq), ("batch", "sequence", "heads", None))
    k = _constrain(apply_rope(k, positions, inv_freq), ("batch", "sequence", "kv_heads", None))
    v = _constrain(v, ("batch", "sequence", "kv_heads", None))
    context, cache = attend(q, k, v, cache)
    return jnp.einsum("bsnh,nhd->bsd", context, self.o_proj[...].astype(dt)), cache


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), optionally over sequence chunks of mlp_chunk_size."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    d, f = config.hidden_size, config.intermediate_size
    self.chunk = config.mlp_chunk_size
    self.gate_proj = _param(rngs, (d, f), ("embed", "mlp"), config)
    self.up_proj = _param(rngs, (d, f), ("embed", "mlp"), config)
    self.down_proj = _param(rngs, (f, d), ("mlp", "embed"), config)

  def _dense(self, x: jax.Array) -> jax.Array:
    dt = x.dtype
    gate = jnp.einsum("bsd,df->bsf", x, self.gate_proj[...].astype(dt))
    up = jnp.einsum("bsd,df->bsf", x, self.up_proj[...].astype(dt))
    hidden = _constrain(jax.nn.silu(gate) * up, ("batch", "sequence", "mlp"))
    return jnp.einsum("bsf,fd->bsd", hidden, self.down_proj[...].astype(dt))

  def __call__(self, x: jax.Array) -> jax.Array:
    b, s, d = x.shape
    if self.chunk is None or s <= self.chunk:
      return self._dense(x)
    if s % self.chunk:
      raise ValueError(f"sequence length {s} must be a multiple of mlp_chunk_size {self.chunk}")
    n = s // self.chunk
    # Chunk j holds rows {i*n + j}: strided, so a sequence-sharded S keeps every device busy on
    # every chunk (the row-wise MLP does not care which rows share a chunk).
    xs = jnp.moveaxis(x.reshape(b, self.chunk, n, d), 2, 0)  # [n, B, chunk, D]
    body = jax.checkpoint(lambda _, xc: (None, self._dense(xc)))
    _, ys = jax.lax.scan(body, None, xs)
    return jnp.moveaxis(ys, 0, 2).reshape(b, s, d)


class DecoderLayer(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.input_layernorm = RMSNorm(config)
    self.self_attn = Attention(config, rngs)
    self.post_attention_layernorm = RMSNorm(config)
    self.mlp = MLP(config, rngs)

  def __call__(self, x, positions, inv_freq, attend: Callable, cache: Any):
    h, cache = self.self_attn(self.input_layernorm(x), positions, inv_freq, attend, cache)
    x = _constrain(x + h, ("batch", "sequence", "embed"))
    x = x + self.mlp(self.post_attention_layernorm(x))
    return _constrain(x, ("batch", "sequence", "embed")), cache


class _Embedding(nnx.Module):
  """The token embedding table [V, D]."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.embedding = _param(rngs, (config.vocab_size, config.hidden_size), ("vocab", "embed"),
                            config)


class _Head(nnx.Module):
  """The untied output projection [D, V]."""

  def __init__(self, config: LlamaConfig, rngs: nnx.Rngs):
    self.kernel = _param(rngs, (config.hidden_size, config.vocab_size), ("embed", "vocab"), config)


class Llama(nnx.Module):
  """Decoder-only Llama. `model(tokens)` -> logits; see the module docstring for sharding."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embed_tokens = _Embedding(config, rngs)

    @nnx.split_rngs(splits=config.num_hidden_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make_layers(rngs):
      return DecoderLayer(config, rngs)

    self.layers = make_layers(rngs)
    self.norm = RMSNorm(config)
    if not config.tie_word_embeddings:
      self.lm_head = _Head(config, rngs)

  def unembedding(self) -> jax.Array:
    """The [D, V] output projection in param dtype (the embedding transposed when tied)."""
    if self.config.tie_word_embeddings:
      return self.embed_tokens.embedding[...].T
    return self.lm_head.kernel[...]

  def run(self, tokens: jax.Array, positions: jax.Array, attend: AttendFn,
          cache: Any = None) -> tuple[jax.Array, Any]:
    """Embeds, runs all layers and the final norm: -> (hidden [B, S, D], new cache).

    `attend(q, k, v, cache, layer)` does the attention of layer `layer` (an int, traced under
    scan) and returns (context, cache). `cache` (any pytree, or None) is carried through the
    layers, so a KV cache is updated in place rather than sliced and restacked per layer. This is
    the hook that the KV-cache generator (`longjax.models.generate`) uses; training calls
    `hidden_states`.
    """
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x = jnp.take(self.embed_tokens.embedding[...], tokens, axis=0).astype(dtype)
    x = _constrain(x, ("batch", "sequence", "embed"))
    positions = positions.astype(jnp.int32)
    inv_freq = rope_inv_freq(cfg)
    graphdef, state = nnx.split(self.layers)

    def body(carry, xs):
      layer_state, i = xs
      x, cache = carry
      layer_attend = lambda q, k, v, c: attend(q, k, v, c, i)
      return nnx.merge(graphdef, layer_state)(x, positions, inv_freq, layer_attend, cache), None

    policy = _remat_policies()[cfg.remat_policy]
    if cfg.remat_policy != "none":
      body = jax.checkpoint(body, policy=policy, prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      layer_ids = jnp.arange(cfg.num_hidden_layers)
      (x, cache), _ = jax.lax.scan(body, (x, cache), (state, layer_ids))
    else:
      for i in range(cfg.num_hidden_layers):
        (x, cache), _ = body((x, cache), (jax.tree.map(lambda a: a[i], state), i))
    return self.norm(x), cache

  def hidden_states(self, tokens: jax.Array, positions: jax.Array | None = None,
                    segment_ids: jax.Array | None = None, *,
                    ring: RingOptions | None = None) -> jax.Array:
    """tokens [B, S] -> final-norm hidden states [B, S, D] in the compute dtype.

    `ring` is the token layout of S for ring attention (`ops.attention`), required under a mesh
    whose `sequence` axis is larger than 1.
    """
    _check_inputs(tokens, positions, segment_ids)
    positions = _default_positions(tokens) if positions is None else positions
    attend = functools.partial(_attend, segment_ids=segment_ids, positions=positions,
                               implementation=self.config.attention_impl, ring=ring)
    return self.run(tokens, positions, attend)[0]

  def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, *,
               ring: RingOptions | None = None) -> jax.Array:
    """tokens [B, S] int32 -> logits [B, S, V] float32 (`ring`: see `hidden_states`)."""
    h = self.hidden_states(tokens, positions, segment_ids, ring=ring)
    logits = jnp.einsum("bsd,dv->bsv", h, self.unembedding().astype(h.dtype),
                        preferred_element_type=jnp.float32)
    return _constrain(logits, ("batch", "sequence", "vocab"))


def _check_inputs(tokens, positions, segment_ids) -> None:
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [B, S], got shape {tokens.shape}")
  for name, x in (("positions", positions), ("segment_ids", segment_ids)):
    if x is not None and x.shape != tokens.shape:
      raise ValueError(f"{name} shape {x.shape} must equal tokens shape {tokens.shape}")


def _default_positions(tokens: jax.Array) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)


def _attend(q, k, v, cache, layer, *, segment_ids, positions, implementation, ring):
  """Training/scoring attention: the one entry point, no cache."""
  return attention(q, k, v, segment_ids=segment_ids, positions=positions,
                   implementation=implementation, ring=ring), cache
