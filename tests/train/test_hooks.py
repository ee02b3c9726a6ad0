"""User hooks and the run manifest, on a short data-parallel run of random tokens."""

import json

import jax
import pytest

from longjax.train.data import SyntheticSource
from longjax.train.mesh import MeshConfig
from longjax.train.trainer import Hook, train
from tests.helpers.training import logged, small_config, tiny_model

VOCAB, SEQ_LEN, STEPS = 259, 64, 5


def test_user_hooks_run_every_n_steps_and_the_manifest_records_the_run(tmp_path):
  seen = []

  def record(step, state, metrics):
    seen.append((step, int(state.step), float(jax.device_get(metrics["loss"]))))

  cfg = small_config(tmp_path, steps=STEPS, mesh=MeshConfig(data=8), seq_len=SEQ_LEN)
  train(cfg, SyntheticSource(VOCAB, SEQ_LEN, seed=1), tiny_model(VOCAB),
        hooks=[Hook(every=2, fn=record)])
  metrics = logged(tmp_path)
  assert [s for s, _, _ in seen] == [2, 4, 5]  # every 2nd step and the last one
  for step, state_step, loss in seen:
    assert state_step == step
    assert loss == pytest.approx(metrics[step]["loss"], rel=1e-6)

  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["kind"] == "train" and manifest["complete"] is True
  assert manifest["counts"]["steps"] == STEPS and manifest["counts"]["data_position"] == STEPS
  assert manifest["mesh"] == {"data": 8, "fsdp": 1, "sequence": 1, "tensor": 1}
  assert manifest["config"]["train_steps"] == STEPS
  assert manifest["config"]["mesh"]["data"] == 8
  assert manifest["inputs"]["source"] == {"type": "longjax.train.data.SyntheticSource",
                                          "vocab_size": VOCAB, "seq_len": SEQ_LEN, "seed": 1}
  assert manifest["model"]["vocab_size"] == VOCAB
  assert "jax" in manifest["versions"]


def test_hook_period_must_be_positive():
  with pytest.raises(ValueError, match="Hook.every must be >= 1, got 0"):
    Hook(every=0, fn=lambda *_: None)
