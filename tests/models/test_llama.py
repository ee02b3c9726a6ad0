"""Llama: config validation, presets, packing, scan/remat/chunked-MLP equivalence, sharding."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax.models import Llama, LlamaConfig
from longjax.models.llama import PRESET_DIR, REMAT_POLICIES

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, dtype="float32")


def _model(**overrides):
  return Llama(LlamaConfig(**{**TINY, **overrides}), rngs=nnx.Rngs(0))


def _tokens(b, s, seed=0, vocab=97):
  return jnp.asarray(np.random.RandomState(seed).randint(0, vocab, (b, s)), jnp.int32)


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESET_DIR.glob("*.json")))
def test_presets_parse_and_round_trip(name):
  config = LlamaConfig.preset(name)
  hf = json.loads((PRESET_DIR / f"{name}.json").read_text())
  assert {k: v for k, v in config.to_hf_dict().items() if k in hf} == hf
  assert LlamaConfig.from_hf_dict(config.to_hf_dict()) == config


def test_preset_sizes_match_published_counts():
  # Published parameter counts: Llama-2-7B 6.74B, Llama-3-8B 8.03B, Llama-3.2-1B 1.24B,
  # SmolLM2-135M 134.5M.
  expected = {"llama2-7b": 6.738e9, "llama3-8b": 8.030e9, "llama3.2-1b": 1.236e9,
              "smollm2-135m": 134.5e6}
  for name, count in expected.items():
    assert LlamaConfig.preset(name).num_params() == pytest.approx(count, rel=2e-3), name


def test_preset_names_required_set():
  names = {p.stem for p in PRESET_DIR.glob("*.json")}
  assert {"llama2-7b", "llama3-8b", "llama3.1-8b", "llama3.2-1b", "smollm2-135m",
          "tiny"} <= names
  with pytest.raises(ValueError, match="unknown model preset 'llama9'"):
    LlamaConfig.preset("llama9")


@pytest.mark.parametrize("overrides, message", [
    (dict(num_attention_heads=6, num_key_value_heads=4),
     r"num_attention_heads \(6\) must be a multiple of num_key_value_heads \(4\)"),
    (dict(hidden_size=0), r"hidden_size must be a positive int, got 0"),
    (dict(head_dim=7), r"head_dim \(7\) must be even"),
    (dict(hidden_act="gelu"), r"hidden_act must be 'silu'"),
    (dict(attention_bias=True), r"attention_bias and mlp_bias must be false"),
    (dict(dtype="float8"), r"dtype must be one of"),
    (dict(remat_policy="some"), r"remat_policy must be one of"),
    (dict(mlp_chunk_size=0), r"mlp_chunk_size must be None or a positive int"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 2.0}), r"rope_type must be one of"),
    (dict(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     r"missing \['low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'\]"),
])
def test_config_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    LlamaConfig(**{**TINY, **overrides})


def test_from_hf_dict_strict_and_v5_rope():
  with pytest.raises(ValueError, match=r"unknown LlamaConfig keys \['num_experts'\]"):
    LlamaConfig.from_hf_dict({**TINY, "num_experts": 4}, strict=True)
  with pytest.raises(ValueError, match="model_type must be 'llama'"):
    LlamaConfig.from_hf_dict({**TINY, "model_type": "mistral"})
  v5 = {**TINY, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                    "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 64}}
  config = LlamaConfig.from_hf_dict(v5)
  assert config.rope_theta == 5e5 and config.rope_type == "llama3"
  assert hash(config) == hash(dataclasses.replace(config))


def test_every_param_has_logical_names():
  model = _model(tie_word_embeddings=False)
  allowed = {"layers", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab"}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = var.get_metadata()["out_sharding"]
    assert len(names) == var[...].ndim and set(names) <= allowed, (path, names)
    assert (names[0] == "layers") == (path[0] == "layers"), path


def test_packed_documents_equal_separate():
  model = _model()
  a, b = _tokens(1, 11, seed=1), _tokens(1, 7, seed=2)
  packed = jnp.concatenate([a, b, jnp.zeros((1, 2), jnp.int32)], axis=1)  # 2 pad tokens
  positions = jnp.concatenate([jnp.arange(11), jnp.arange(7), jnp.zeros(2, int)])[None]
  segments = jnp.asarray([[1] * 11 + [2] * 7 + [0] * 2])
  out = model(packed, positions=positions, segment_ids=segments)
  np.testing.assert_allclose(out[:, :11], model(a), atol=1e-5)
  np.testing.assert_allclose(out[:, 11:18], model(b), atol=1e-5)


def test_positions_drive_rope():
  # A document shifted right with explicit positions 0.. gives the same logits as alone.
  model = _model()
  doc = _tokens(1, 9)
  shifted = jnp.concatenate([_tokens(1, 5, seed=3), doc], axis=1)
  positions = jnp.concatenate([jnp.arange(5), jnp.arange(9)])[None]
  segments = jnp.asarray([[1] * 5 + [2] * 9])
  np.testing.assert_allclose(model(shifted, positions, segments)[:, 5:], model(doc), atol=1e-5)


def _logits_and_grads(model, tokens):
  def loss(m):
    return jnp.mean(jax.nn.log_softmax(m(tokens))[..., 0])
  return nnx.jit(lambda m: (m(tokens), nnx.grad(loss)(m)))(model)


@pytest.fixture(scope="module")
def reference_run():
  """Logits and grads of the scanned, no-remat tiny model."""
  return _logits_and_grads(_model(), _tokens(2, 16))


def test_scan_and_unscanned_agree(reference_run):
  ref_logits, ref_grads = reference_run
  logits, grads = _logits_and_grads(_model(scan_layers=False), _tokens(2, 16))
  np.testing.assert_allclose(logits, ref_logits, atol=2e-6)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-6)


@pytest.mark.parametrize("policy", [p for p in REMAT_POLICIES if p != "none"])
def test_remat_policies_keep_logits_and_grads(policy, reference_run):
  ref_logits, ref_grads = reference_run
  logits, grads = _logits_and_grads(_model(remat_policy=policy), _tokens(2, 16))
  np.testing.assert_allclose(logits, ref_logits, atol=2e-6)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=1e-6)


def test_chunked_mlp_equals_dense():
  tokens = _tokens(2, 32)
  np.testing.assert_allclose(_model(mlp_chunk_size=8)(tokens), _model()(tokens), atol=2e-6)
  with pytest.raises(ValueError, match="multiple of mlp_chunk_size 8"):
    _model(mlp_chunk_size=8)(_tokens(1, 12))


def test_tied_unembedding_and_hidden_states():
  model = _model(tie_word_embeddings=True)
  tokens = _tokens(2, 6)
  np.testing.assert_array_equal(model.unembedding(), model.embed_tokens.embedding[...].T)
  logits = model.hidden_states(tokens) @ model.unembedding()
  np.testing.assert_allclose(model(tokens), logits, atol=1e-5)
  assert not hasattr(model, "lm_head")
  assert _model(tie_word_embeddings=False).unembedding().shape == (32, 97)


def test_bf16_compute_close_to_fp32():
  tokens = _tokens(2, 16)
  fp32 = _model()(tokens)
  bf16_model = _model(dtype="bfloat16")
  assert bf16_model.hidden_states(tokens).dtype == jnp.bfloat16
  assert bf16_model.layers.mlp.up_proj[...].dtype == jnp.float32
  np.testing.assert_allclose(bf16_model(tokens), fp32, atol=3e-2)


def test_sharded_forward_matches_unsharded():
  """Logical names + a rules table shard params and activations; the result does not change."""
  mesh = jax.make_mesh((2, 4), ("data", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  rules = (("batch", "data"), ("sequence", None), ("embed", None), ("heads", "tensor"),
           ("kv_heads", "tensor"), ("head_dim", None), ("mlp", "tensor"), ("vocab", "tensor"),
           ("layers", None))
  model = _model(num_attention_heads=8, num_key_value_heads=4, vocab_size=96,
                 intermediate_size=64)
  tokens = _tokens(4, 8, vocab=96)
  expected = model(tokens)
  graphdef, state = nnx.split(model)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    specs = nnx.get_partition_spec(state)
    assert specs["layers"]["mlp"]["up_proj"].get_value() == jax.P(None, None, "tensor")
    assert specs["embed_tokens"]["embedding"].get_value() == jax.P("tensor", None)
    shardings = nnx.get_named_sharding(state, mesh)
    state = jax.device_put(state, shardings)
    fn = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
    out = fn(state, jax.device_put(tokens, jax.NamedSharding(mesh, jax.P("data"))))
    assert out.sharding.spec == jax.P("data", None, "tensor")
  np.testing.assert_allclose(out, expected, atol=1e-5)


def test_input_shape_errors():
  model = _model()
  with pytest.raises(ValueError, match=r"tokens must be \[B, S\], got shape \(5,\)"):
    model(jnp.zeros(5, jnp.int32))
  with pytest.raises(ValueError, match=r"segment_ids shape \(1, 4\) must equal tokens shape"):
    model(jnp.zeros((1, 5), jnp.int32), segment_ids=jnp.ones((1, 4), jnp.int32))
