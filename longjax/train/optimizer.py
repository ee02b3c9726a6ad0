"""AdamW with linear warmup + cosine decay to a floor, global-norm clipping, decay on matrices only.

Gradient accumulation lives in the train step (a scan over microbatches), not in the optimizer:
the update then sees the exact full-batch mean gradient and no extra optimizer state is kept.
"""

import dataclasses

import jax
import optax
from flax import nnx

from longjax.train.sharding import logical_names, to_pure


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Hyper-parameters of `make_optimizer`. `decay_steps` None means the run's TRAIN_STEPS."""
  learning_rate: float = 3e-4
  warmup_steps: int = 100
  decay_steps: int | None = None
  min_lr_ratio: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  clip_norm: float | None = 1.0

  def __post_init__(self):
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if self.warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
    if not 0.0 <= self.min_lr_ratio <= 1.0:
      raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
    if self.clip_norm is not None and self.clip_norm <= 0:
      raise ValueError(f"clip_norm must be > 0 or None, got {self.clip_norm}")


def make_schedule(config: OptimizerConfig, train_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine to `min_lr_ratio * peak` at `decay_steps`."""
  decay_steps = config.decay_steps or train_steps
  if decay_steps <= config.warmup_steps:
    raise ValueError(f"decay_steps ({decay_steps}) must exceed warmup_steps "
                     f"({config.warmup_steps})")
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=config.warmup_steps,
      decay_steps=decay_steps, end_value=config.learning_rate * config.min_lr_ratio)


def decay_mask(state: nnx.State) -> dict:
  """Weight decay on matrices only, as a pure-dict tree of bools matching the parameters.

  A parameter is a matrix if it has two or more dimensions besides a scanned `layers` axis (read
  from its logical-axis metadata), so the [layers, embed] scales of stacked RMSNorms are excluded.
  """
  def is_matrix(v: nnx.Variable) -> bool:
    names = logical_names(v)
    if names is None:
      return len(v.shape) >= 2
    return sum(n != "layers" for n in names) >= 2
  mask = jax.tree.map(is_matrix, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return to_pure(state, mask)


def make_optimizer(config: OptimizerConfig, train_steps: int,
                   mask=None) -> optax.GradientTransformation:
  """The full update: clip by global norm, then AdamW on the schedule (decay where `mask`)."""
  schedule = make_schedule(config, train_steps)
  if mask is None:
    mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  adamw = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                      weight_decay=config.weight_decay, mask=mask)
  if config.clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(config.clip_norm), adamw)
