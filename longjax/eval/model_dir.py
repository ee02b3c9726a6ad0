"""Finding and checking the model to evaluate: HF dir or training MODEL_DIR, tokenizer, limits.

Accepted `--model` paths:
- a Hugging Face checkpoint directory (`config.json` + safetensors), e.g. `smollm2_checkpoint()`;
- a training MODEL_DIR whose run set `export_hf=True`: the trainer writes `MODEL_DIR/hf`.

Every problem a person can fix raises `EvalInputError` naming the path or field and what was
expected; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

from longjax.io import format_length

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
EXPORT_SUBDIR = "hf"  # where longjax.train exports MODEL_DIR's final weights (save_hf)


class EvalInputError(ValueError):
  """Bad input to the evaluation (paths, lengths, tokenizer); the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  hf_dir: Path
  config: dict
  tokenizer_dir: Path

  @property
  def max_positions(self) -> int | None:
    return self.config.get("max_position_embeddings")

  @property
  def vocab_size(self) -> int:
    return int(self.config["vocab_size"])


def _has_tokenizer(path: Path) -> bool:
  return any((path / f).is_file() for f in TOKENIZER_FILES)


def resolve_model(path: str | Path, tokenizer: str | Path | None = None) -> ModelInfo:
  """The HF dir, its config and the tokenizer dir for `--model path [--tokenizer dir]`."""
  p = Path(path)
  if not p.exists():
    raise EvalInputError(f"model directory not found: {p}")
  if not p.is_dir():
    raise EvalInputError(f"--model must be a directory (HF checkpoint or training MODEL_DIR), "
                         f"got a file: {p}")
  if (p / "config.json").is_file():
    hf_dir = p
  elif (p / EXPORT_SUBDIR / "config.json").is_file():
    hf_dir = p / EXPORT_SUBDIR
  else:
    raise EvalInputError(
        f"{p}: no config.json. Expected an HF checkpoint directory, or a training MODEL_DIR "
        f"with an exported {EXPORT_SUBDIR}/config.json (train with export_hf=True)")
  config_path = hf_dir / "config.json"
  try:
    config = json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise EvalInputError(f"{config_path}: invalid JSON ({e})") from e
  if "vocab_size" not in config:
    raise EvalInputError(f"{config_path}: missing field vocab_size")
  if tokenizer is not None:
    tok_dir = Path(tokenizer)
    if not tok_dir.exists():
      raise EvalInputError(f"tokenizer path not found: {tok_dir}")
  elif _has_tokenizer(hf_dir):
    tok_dir = hf_dir
  elif _has_tokenizer(p):
    tok_dir = p
  else:
    raise EvalInputError(
        f"{hf_dir}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); pass --tokenizer DIR, "
        f"e.g. the HF directory the training run started from")
  return ModelInfo(hf_dir=hf_dir, config=config, tokenizer_dir=tok_dir)


def check_lengths(info: ModelInfo, lengths: Sequence[int], *, allow_extrapolation: bool) -> None:
  """Lengths beyond `max_position_embeddings` need an explicit `--allow-extrapolation`."""
  limit = info.max_positions
  if limit is None or allow_extrapolation:
    return
  too_long = [n for n in lengths if n > limit]
  if too_long:
    raise EvalInputError(
        f"length {format_length(max(too_long))} ({max(too_long)} tokens) exceeds the model's "
        f"max_position_embeddings ({limit}) in {info.hf_dir / 'config.json'}; use lengths <= "
        f"{limit}, or pass --allow-extrapolation to measure beyond the trained window")


def check_tokenizer(info: ModelInfo, tokenizer) -> None:
  """The tokenizer's ids must index the model's embedding: tokenizer vocab <= model vocab."""
  if tokenizer.vocab_size > info.vocab_size:
    raise EvalInputError(
        f"tokenizer mismatch: tokenizer {info.tokenizer_dir} has {tokenizer.vocab_size} tokens "
        f"but the model's vocab_size is {info.vocab_size} ({info.hf_dir / 'config.json'}); "
        f"pass the tokenizer the model was trained with (--tokenizer)")
  for name in ("bos_id", "eos_id"):
    tid = getattr(tokenizer, name)
    if tid is not None and tid >= info.vocab_size:
      raise EvalInputError(f"tokenizer mismatch: {name} {tid} of {info.tokenizer_dir} is outside "
                           f"the model's vocab_size {info.vocab_size}")
