"""Greedy KV-cache generation on a random tiny model, checked against full (uncached) forwards."""

import importlib

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax.models import Llama, LlamaConfig, generate

generate_module = importlib.import_module("longjax.models.generate")  # the name is shadowed

CONFIG = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=8, dtype="float32",
                     initializer_range=0.5, eos_token_id=None)


@pytest.fixture(scope="module")
def model():
  return Llama(CONFIG, rngs=nnx.Rngs(3))


def _prompt(n, seed=0):
  return np.random.RandomState(seed).randint(0, 64, n).tolist()


def _assert_greedy(model, prompt, new):
  """Each new token is the argmax of one full forward pass over prompt + earlier new tokens."""
  seq = jnp.asarray([prompt + new], jnp.int32)
  argmax = np.asarray(jnp.argmax(model(seq)[0], axis=-1))
  np.testing.assert_array_equal(argmax[len(prompt) - 1:len(prompt) + len(new) - 1], new)


@pytest.mark.parametrize("chunk", [1, 4, 512])
def test_greedy_matches_full_forward(model, chunk):
  prompt = _prompt(13)
  new = generate(model, prompt, 12, prefill_chunk=chunk)
  assert len(new) == 12
  _assert_greedy(model, prompt, new)


@pytest.mark.parametrize("chunk", [4, 512])  # chunked prefill; the whole prompt at once
def test_ragged_batch_is_greedy_per_row(model, chunk):
  prompts = [_prompt(5, 1), _prompt(17, 2), _prompt(9, 3)]
  batch = generate(model, prompts, 8, prefill_chunk=chunk)
  for prompt, new in zip(prompts, batch):
    _assert_greedy(model, prompt, new)


def test_limit_within_capacity_is_a_prefix(model):
  """3 and 100 new tokens run one program of capacity 128: the limit only stops the loop."""
  prompt = _prompt(11, 4)
  long = generate(model, prompt, 100, eos_id=())
  assert len(long) == 100
  assert generate(model, prompt, 3, eos_id=()) == long[:3]
  _assert_greedy(model, prompt, long)


def test_stops_at_eos(model):
  prompt = _prompt(7)
  free = generate(model, prompt, 10)
  eos = free[3]
  first = free.index(eos)
  assert generate(model, prompt, 10, eos_id=eos) == free[:first + 1]
  assert generate(model, prompt, 10, eos_id=[63, eos]) == free[:first + 1]
  assert generate(model, np.asarray(prompt), 10, eos_id=()) == free


def test_prefill_memory_is_chunk_by_cache_not_prompt_squared(model):
  """A 4K prompt prefilled in 128-token chunks needs far less than one S x S score matrix."""
  s, chunk = 4096, 128
  graphdef, state = nnx.split(model)
  compiled = generate_module._generate.lower(
      graphdef, state, jnp.zeros((1, s), jnp.int32), jnp.asarray([s], jnp.int32),
      jnp.asarray([-2], jnp.int32), jnp.int32(4), capacity=128, chunk=chunk).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  dense_scores = CONFIG.num_attention_heads * s * s * 4  # fp32 [N, S, S] of one full prefill
  chunk_scores = CONFIG.num_attention_heads * chunk * (s + 128) * 4
  assert temp < dense_scores / 8, (temp, dense_scores)
  assert temp < 4 * chunk_scores, (temp, chunk_scores)


def test_generate_errors(model):
  with pytest.raises(ValueError, match="at least one non-empty prompt"):
    generate(model, [[1, 2], []], 4)
  with pytest.raises(ValueError, match=r"prompt token ids must be in \[0, 64\); got \[64\]"):
    generate(model, [1, 64], 4)
  with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
    generate(model, [1, 2], 0)


def test_bucketing_reuses_compilation(model):
  generate(model, _prompt(9), 3)
  size = generate_module._generate._cache_size()
  generate(model, _prompt(12, 5), 3)  # same 16-token bucket
  assert generate_module._generate._cache_size() == size
  generate(model, _prompt(12, 5), 100)  # same bucket of 128 new tokens: a run-time limit
  assert generate_module._generate._cache_size() == size
