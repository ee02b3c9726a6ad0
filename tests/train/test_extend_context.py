"""Continued pretraining of SmolLM2-135M with a new RoPE theta, exported and loaded by transformers.

The input is real text (Shakespeare) through SmolLM2's own tokenizer, fed as plain numpy batches
(`IterableSource`), the path a GPU box without TensorFlow uses.
"""

import json

import numpy as np
import pytest

from longjax.models import load_hf, load_tokenizer, smollm2_checkpoint
from longjax.train.checkpoint import CheckpointConfig
from longjax.train.data import IterableSource
from longjax.train.mesh import MeshConfig
from longjax.train.optimizer import OptimizerConfig
from longjax.train.step import StepConfig
from longjax.train.trainer import TrainConfig, train
from tests.helpers import shakespeare_task

SEQ, BATCH, THETA = 128, 8, 1_000_000.0


def shakespeare_batches(tokenizer):
  ids = np.concatenate([np.asarray(tokenizer.encode(p) + [tokenizer.eos_id], np.int32)
                        for p in shakespeare_task.paragraphs()[:400]])
  n = len(ids) // (BATCH * SEQ)
  rows = ids[:n * BATCH * SEQ].reshape(n, BATCH, SEQ)
  return lambda: ({"decoder_target_tokens": r} for r in rows)


@pytest.mark.slow
def test_extend_context_from_smollm2_and_load_in_transformers(tmp_path):
  import torch
  import transformers
  hf_dir = smollm2_checkpoint()
  source = IterableSource(shakespeare_batches(load_tokenizer(str(hf_dir))))
  config = TrainConfig(
      model_dir=str(tmp_path), train_steps=3, batch_size=BATCH,
      task_feature_lengths={"targets": SEQ}, log_every=1, init_from_hf="smollm2",
      hf_overrides={"rope_theta": THETA, "dtype": "float32"}, export_hf=True,
      mesh=MeshConfig(data=1, fsdp=-1), step=StepConfig(loss_chunk=64),
      optimizer=OptimizerConfig(learning_rate=1e-4, warmup_steps=1),
      checkpoint=CheckpointConfig(every=0))
  metrics = train(config, source)
  # A pretrained model on English text: far below the uniform ln(49152) = 10.8 nats.
  assert metrics["loss"] < 6.0

  out = tmp_path / "hf"
  assert json.loads((out / "config.json").read_text())["rope_theta"] == THETA
  assert (out / "tokenizer.json").is_file()  # copied from the starting checkpoint
  theirs = transformers.LlamaForCausalLM.from_pretrained(out).eval()
  rope = getattr(theirs.config, "rope_parameters", None) or {}
  assert rope.get("rope_theta", getattr(theirs.config, "rope_theta", None)) == THETA
  tokens = next(iter(shakespeare_batches(load_tokenizer(str(hf_dir)))()))[
      "decoder_target_tokens"][:2, :32]
  ours = load_hf(out, dtype="float32")
  with torch.no_grad():
    ref = theirs(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(tokens)), ref, atol=2e-3, rtol=2e-3)
  # Training changed the weights.
  before = load_hf(hf_dir, dtype="float32")
  delta = np.abs(np.asarray(ours.layers.mlp.up_proj[...]) -
                 np.asarray(before.layers.mlp.up_proj[...])).max()
  assert delta > 0
