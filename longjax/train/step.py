"""The train state and the pure, jitted train step (microbatch accumulation, chunked loss, AdamW).

Batches are dicts of [B, S] arrays with seqio's decoder-only feature names: decoder_input_tokens,
decoder_target_tokens, decoder_loss_weights, decoder_segment_ids, decoder_positions.
"""

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from longjax.ops import RingOptions
from longjax.train.loss import GRAD_DTYPES, chunked_cross_entropy

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
            "decoder_segment_ids", "decoder_positions")
# What a step is compiled for: sources' batches are cast to these on the host.
BATCH_DTYPES = {"decoder_input_tokens": np.int32, "decoder_target_tokens": np.int32,
                "decoder_loss_weights": np.float32, "decoder_segment_ids": np.int32,
                "decoder_positions": np.int32}


@flax.struct.dataclass
class TrainState:
  """Everything a step changes and a checkpoint must restore (the data position travels apart)."""
  step: jax.Array
  params: Any   # pure dict of arrays, as `nnx.State.to_pure_dict()`
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """Static settings of the train step."""
  microbatches: int = 1
  loss_chunk: int = 4096
  z_loss: float = 0.0
  sequence_shards: int = 1   # the mesh's `sequence` size: the loss chunks within each shard
  # The token layout of S that ring attention reads; the trainer sets it (and sequence_shards)
  # from TrainConfig.zigzag and the mesh, so that it always matches what the input did.
  ring: RingOptions | None = None
  # True: attention stays within packed documents (segment ids) and RoPE positions restart per
  # document. False: plain causal attention over the whole row with global positions, the
  # mask cuDNN's fused kernel supports (packed documents then see earlier ones in the row).
  document_masking: bool = True
  # The logits' gradient in the compute dtype ('compute': bf16 GEMMs in the loss's backward) or
  # in f32 ('float32', as autodiff gives it; what runs before this option trained with).
  logits_grad_dtype: str = "compute"

  def __post_init__(self):
    if self.microbatches < 1:
      raise ValueError(f"microbatches must be >= 1, got {self.microbatches}")
    if self.loss_chunk < 1:
      raise ValueError(f"loss_chunk must be >= 1, got {self.loss_chunk}")
    if self.z_loss < 0:
      raise ValueError(f"z_loss must be >= 0, got {self.z_loss}")
    if self.logits_grad_dtype not in GRAD_DTYPES:
      raise ValueError(f"StepConfig.logits_grad_dtype must be one of {GRAD_DTYPES}, got "
                       f"{self.logits_grad_dtype!r}")


def make_loss_fn(graphdef: nnx.GraphDef, rest: Any, config: StepConfig) -> Callable:
  """(params, batch) -> (objective sum, (ce sum, weight sum)) for one (micro)batch."""
  def loss_fn(params, batch):
    model = nnx.merge(graphdef, params, rest)
    segment_ids = batch["decoder_segment_ids"] if config.document_masking else None
    hidden = model.hidden_states(batch["decoder_input_tokens"],
                                 positions=batch["decoder_positions"], segment_ids=segment_ids,
                                 ring=config.ring)
    ce, zz, w = chunked_cross_entropy(
        hidden, model.unembedding(), batch["decoder_target_tokens"],
        batch["decoder_loss_weights"], shards=config.sequence_shards, chunk=config.loss_chunk,
        grad_dtype=config.logits_grad_dtype)
    return ce + config.z_loss * zz, (ce, w)
  return loss_fn


def _microbatches(batch: dict, m: int) -> dict:
  """[B, S] -> [M, B/M, S], taking every M-th row so each data shard feeds every microbatch."""
  def split(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // m, m, *x.shape[1:]), 0, 1)
  return {k: split(v) for k, v in batch.items()}


def make_train_step(graphdef: nnx.GraphDef, rest: Any, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, config: StepConfig) -> Callable:
  """Returns train_step(state, batch) -> (state, metrics); jit it with the state's shardings.

  The objective is sum(w * (CE + z_loss * lse^2)) / sum(w) over the whole batch, so accumulating
  M microbatches gives exactly the gradient of one big batch.
  """
  grad_fn = jax.value_and_grad(make_loss_fn(graphdef, rest, config), has_aux=True)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    batch = {k: batch[k] for k in FEATURES}
    if config.microbatches == 1:
      (_, (ce, w)), grads = grad_fn(state.params, batch)
    else:
      def accumulate(carry, mb):
        (_, (ce, w)), g = grad_fn(state.params, mb)
        g_sum, ce_sum, w_sum = carry
        return (jax.tree.map(jnp.add, g_sum, g), ce_sum + ce, w_sum + w), None
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      zero = jnp.zeros((), jnp.float32)
      (grads, ce, w), _ = jax.lax.scan(accumulate, (zeros, zero, zero),
                                       _microbatches(batch, config.microbatches))
    denom = jnp.maximum(w, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": ce / denom, "grad_norm": optax.global_norm(grads),
               "learning_rate": schedule(state.step), "loss_tokens": w}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step
