"""Trainer-test helpers: the tiny Llama preset in float32, a small TrainConfig, logged metrics."""

import dataclasses

from longjax.models import LlamaConfig
from longjax.train.checkpoint import CheckpointConfig
from longjax.train.mesh import MeshConfig
from longjax.train.optimizer import OptimizerConfig
from longjax.train.step import StepConfig
from longjax.train.trainer import TrainConfig


def tiny_model(vocab_size: int = 259, **overrides) -> LlamaConfig:
  """The tiny preset in float32 (so different meshes agree to float tolerance)."""
  return LlamaConfig.preset("tiny", vocab_size=vocab_size, dtype="float32", **overrides)


def small_config(model_dir, *, steps: int, mesh: MeshConfig, seq_len: int = 128,
                 batch_size: int = 8, **kw) -> TrainConfig:
  config = TrainConfig(
      model_dir=str(model_dir), train_steps=steps, batch_size=batch_size,
      task_feature_lengths={"targets": seq_len}, log_every=1, mesh=mesh,
      optimizer=OptimizerConfig(learning_rate=1e-2, warmup_steps=2, min_lr_ratio=0.1),
      step=StepConfig(loss_chunk=16), checkpoint=CheckpointConfig(every=0))
  return dataclasses.replace(config, **kw)


def logged(model_dir) -> dict[int, dict]:
  """Per-step records of MODEL_DIR/metrics.jsonl (the last record wins for a repeated step)."""
  import json  # pylint: disable=import-outside-toplevel
  from pathlib import Path  # pylint: disable=import-outside-toplevel
  lines = (Path(model_dir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r for r in map(json.loads, lines)}
