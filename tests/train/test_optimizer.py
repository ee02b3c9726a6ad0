"""Schedule (hand-computed points), weight-decay mask, and one AdamW step against numpy."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax.models import Llama
from longjax.train.optimizer import OptimizerConfig, decay_mask, make_optimizer, make_schedule
from tests.helpers.training import tiny_model


def test_warmup_then_cosine_to_min_ratio():
  cfg = OptimizerConfig(learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1)
  lr = make_schedule(cfg, train_steps=110)
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(0.5)
  assert float(lr(10)) == pytest.approx(1.0)
  # Halfway through the cosine: 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55.
  assert float(lr(60)) == pytest.approx(0.55, rel=1e-5)
  assert float(lr(110)) == pytest.approx(0.1, rel=1e-5)


def test_decay_only_matrices_even_when_layers_are_stacked():
  model = nnx.eval_shape(lambda: Llama(tiny_model(), rngs=nnx.Rngs(0)))
  mask = decay_mask(nnx.state(model, nnx.Param))
  assert mask["layers"]["mlp"]["up_proj"] is True
  assert mask["layers"]["self_attn"]["q_proj"] is True
  assert mask["embed_tokens"]["embedding"] is True
  assert mask["layers"]["input_layernorm"]["scale"] is False  # [L, D], but a norm scale
  assert mask["norm"]["scale"] is False


def test_adamw_step_matches_hand_computation():
  cfg = OptimizerConfig(learning_rate=0.1, warmup_steps=1, min_lr_ratio=1.0, weight_decay=0.1,
                        clip_norm=1.0, b1=0.9, b2=0.95, eps=1e-8)
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  grads = {"w": jnp.full((2, 2), 3.0), "b": jnp.full((2,), 4.0)}  # global norm 7.2111
  tx = make_optimizer(cfg, train_steps=10, mask={"w": True, "b": False})
  state = tx.init(params)
  _, state = tx.update(grads, state, params)  # step 0: lr 0 (warmup starts at 0)
  updates, _ = tx.update(grads, state, params)
  norm = math.sqrt(4 * 9 + 2 * 16)
  def expect(g, decay):
    g = g / norm                                  # clipped to global norm 1
    m1, v1 = 0.1 * g, 0.05 * g * g                # after step 0
    m2, v2 = 0.9 * m1 + 0.1 * g, 0.95 * v1 + 0.05 * g * g
    mhat, vhat = m2 / (1 - 0.9**2), v2 / (1 - 0.95**2)
    return -0.1 * (mhat / (np.sqrt(vhat) + 1e-8) + (0.1 * 1.0 if decay else 0.0))
  np.testing.assert_allclose(updates["w"], expect(3.0, True), rtol=1e-5)
  np.testing.assert_allclose(updates["b"], expect(4.0, False), rtol=1e-5)


def test_bad_config_is_rejected():
  with pytest.raises(ValueError, match="min_lr_ratio"):
    OptimizerConfig(min_lr_ratio=1.5)
  with pytest.raises(ValueError, match="decay_steps \\(10\\) must exceed warmup_steps \\(10\\)"):
    make_schedule(OptimizerConfig(warmup_steps=10), train_steps=10)
