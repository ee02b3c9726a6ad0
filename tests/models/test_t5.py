"""Flax T5 against transformers' PyTorch T5 on random tiny v1.0 and v1.1 checkpoints."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from longjax.models.t5 import T5Config, load_hf_t5, relative_position_bucket  # noqa: E402
from longjax.models.t5_generate import DecodeConfig, generate, row_keys, top_p_filter  # noqa: E402

VARIANTS = {
  # v1.0: ReLU MLP, tied head with D**-0.5 output scaling.
  "v1.0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
  # v1.1: gated-GELU MLP, separate lm head, no scaling.
  "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}


def _make_checkpoint(tmp_path, variant: str, seed: int = 0):
  """Writes a random tiny HF T5 directory and returns (dir, reference torch model)."""
  import safetensors.torch as st
  torch.manual_seed(seed)
  opts = VARIANTS[variant]
  cfg = transformers.T5Config(vocab_size=97, d_model=32, d_kv=8, d_ff=48, num_layers=2,
                              num_decoder_layers=3, num_heads=4, relative_attention_num_buckets=8,
                              relative_attention_max_distance=20, dropout_rate=0.0,
                              **opts)
  model = transformers.T5ForConditionalGeneration(cfg).eval()
  with torch.no_grad():  # make norms and biases non-trivial so every parameter matters
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.add_(torch.randn_like(p) * 0.2)
  path = tmp_path / variant
  model.save_pretrained(path)
  if not opts["tie_word_embeddings"]:
    # transformers 5 ties T5's head at construction; write the v1.1 layout (separate lm_head,
    # tie_word_embeddings false) as published checkpoints have it, and reload the reference.
    tensors = st.load_file(str(path / "model.safetensors"))
    tensors["lm_head.weight"] = torch.randn_like(tensors["shared.weight"]) * 0.5
    st.save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    hf = json.loads((path / "config.json").read_text())
    hf.pop("scale_decoder_outputs", None)
    hf["tie_word_embeddings"] = False
    (path / "config.json").write_text(json.dumps(hf))
    model = transformers.T5ForConditionalGeneration.from_pretrained(path).eval()
    assert not torch.equal(model.lm_head.weight, model.shared.weight)
  return path, model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_pytorch(tmp_path, variant):
  path, ref = _make_checkpoint(tmp_path, variant)
  model = load_hf_t5(path)
  rng = np.random.default_rng(1)
  ids = rng.integers(2, 97, size=(3, 29))
  mask = np.ones_like(ids)
  mask[1, 20:] = 0  # padded row: encoder padding must be masked everywhere
  mask[2, 5:] = 0
  dec = rng.integers(2, 97, size=(3, 25))  # > max_distance: exercises the log buckets
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
               decoder_input_ids=torch.tensor(dec)).logits.numpy()
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(dec), jnp.asarray(mask)))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_greedy_generation_matches_pytorch(tmp_path, variant):
  path, ref = _make_checkpoint(tmp_path, variant, seed=3)
  model = load_hf_t5(path)
  rng = np.random.default_rng(2)
  ids = rng.integers(2, 97, size=(4, 17))
  mask = np.ones_like(ids)
  mask[3, 9:] = 0
  steps = 12
  # use_cache=False: HF sizes its decoder cache by num_layers, which breaks when
  # num_decoder_layers differs (kept here on purpose); our own cached path is what is tested.
  with torch.no_grad():
    want = ref.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        do_sample=False, num_beams=1, max_new_tokens=steps,
                        min_new_tokens=0, decoder_start_token_id=0, eos_token_id=1,
                        pad_token_id=0, use_cache=False).numpy()[:, 1:]  # drop start
  got = np.asarray(generate(model, jnp.asarray(ids), jnp.asarray(mask), None,
                            DecodeConfig(max_new_tokens=steps, greedy=True)))
  want = np.pad(want, ((0, 0), (0, steps - want.shape[1])))  # HF pads only to the longest row
  np.testing.assert_array_equal(got, want)


def test_cached_decoding_matches_teacher_forcing(tmp_path):
  """Each step's cached logits equal the full decoder pass over the generated prefix."""
  path, _ = _make_checkpoint(tmp_path, "v1.1", seed=5)
  model = load_hf_t5(path)
  ids = jnp.asarray(np.random.default_rng(3).integers(2, 97, size=(2, 11)))
  mask = jnp.ones_like(ids)
  out = generate(model, ids, mask, None, DecodeConfig(max_new_tokens=8, greedy=True))
  dec_in = jnp.concatenate([jnp.zeros((2, 1), jnp.int32), out[:, :-1]], axis=1)
  logits = model(ids, dec_in, mask)
  # Rows stop at EOS, after which the output is padding; compare the live prefix only.
  for r in range(2):
    n = int(np.argmax(np.asarray(out[r]) == 1)) + 1 if (np.asarray(out[r]) == 1).any() else 8
    np.testing.assert_array_equal(np.asarray(jnp.argmax(logits[r, :n], -1)), np.asarray(out[r, :n]))


def test_sampling_is_keyed_per_row_not_per_batch(tmp_path):
  path, _ = _make_checkpoint(tmp_path, "v1.0", seed=7)
  model = load_hf_t5(path)
  ids = np.random.default_rng(4).integers(2, 97, size=(4, 13))
  ids[3] = ids[0]  # same input, doc ids 5 and 2**40 + 5: only the key's high half differs
  mask = np.ones_like(ids)
  cfg = DecodeConfig(max_new_tokens=10, top_p=0.9)
  keys = row_keys(11, np.array([5, 6, 7, 2**40 + 5]), np.array([0, 0, 1, 0]))
  full = np.asarray(generate(model, jnp.asarray(ids), jnp.asarray(mask), keys, cfg))
  # Same rows in another batch composition and order: same tokens.
  sub_keys = row_keys(11, np.array([7, 5]), np.array([1, 0]))
  sub = np.asarray(generate(model, jnp.asarray(ids[[2, 0]]), jnp.asarray(mask[[2, 0]]),
                            sub_keys, cfg))
  np.testing.assert_array_equal(sub, full[[2, 0]])
  # A different seed, or a 64-bit doc id differing only in its high half, changes the samples.
  other = np.asarray(generate(model, jnp.asarray(ids), jnp.asarray(mask),
                              row_keys(12, np.array([5, 6, 7, 2**40 + 5]), np.array([0, 0, 1, 0])),
                              cfg))
  assert not np.array_equal(other, full)
  assert not np.array_equal(full[0], full[3])


def test_top_p_filter_keeps_smallest_nucleus():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.7)))
  np.testing.assert_array_equal(kept, [[True, True, False, False]])
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.1)))
  np.testing.assert_array_equal(kept, [[True, False, False, False]])
  kept = np.isfinite(np.asarray(top_p_filter(logits, 0.96)))
  np.testing.assert_array_equal(kept, [[True, True, True, True]])


def test_relative_position_buckets_match_pytorch():
  from transformers.models.t5.modeling_t5 import T5Attention
  rel = np.arange(-300, 300)
  for bidirectional in (True, False):
    want = T5Attention._relative_position_bucket(torch.tensor(rel), bidirectional=bidirectional,
                                                 num_buckets=32, max_distance=128).numpy()
    got = relative_position_bucket(jnp.asarray(rel), bidirectional=bidirectional,
                                   num_buckets=32, max_distance=128)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_config_validation_and_bad_checkpoint(tmp_path):
  with pytest.raises(ValueError, match="feed_forward_proj"):
    T5Config(feed_forward_proj="gated-gelu-x")
  with pytest.raises(ValueError, match="num_buckets|relative_attention_num_buckets"):
    T5Config(relative_attention_num_buckets=7)
  with pytest.raises(FileNotFoundError, match="config.json"):
    load_hf_t5(tmp_path)
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
  with pytest.raises(FileNotFoundError, match="safetensors"):
    load_hf_t5(tmp_path)


def test_loads_bf16_safetensors(tmp_path):
  path, ref = _make_checkpoint(tmp_path, "v1.1", seed=9)
  ref.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
  model = load_hf_t5(tmp_path / "bf16")
  want = ref.encoder.block[1].layer[1].DenseReluDense.wi_1.weight.detach().float().numpy().T
  np.testing.assert_array_equal(np.asarray(model.encoder[1].mlp.wi_1[...]), want)
  assert model.lm_head is not None  # the untied v1.1 head survives the bf16 round trip
