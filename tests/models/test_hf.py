"""HF interop: logits parity with transformers' PyTorch LlamaForCausalLM, save/load, errors."""

import json

import numpy as np
import pytest
import torch
import transformers

from longjax.models import load_hf, save_hf
from longjax.models import hf as hf_lib
from longjax.models.hf import CheckpointError, _SafetensorsFile, _write_safetensors

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
CONFIGS = {
    "mha": dict(num_attention_heads=4, num_key_value_heads=4),
    "gqa": dict(num_attention_heads=6, num_key_value_heads=2),
    "mqa_tied": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True),
    "llama3_rope": dict(num_attention_heads=4, num_key_value_heads=2, rope_theta=500000.0,
                        rope_scaling=LLAMA3_ROPE),
    "linear_rope_tied": dict(num_attention_heads=4, num_key_value_heads=2,
                             tie_word_embeddings=True,
                             rope_scaling={"rope_type": "linear", "factor": 4.0}),
}


def _hf_model(seed=0, **overrides):
  kwargs = dict(vocab_size=101, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                head_dim=12, max_position_embeddings=256, rms_norm_eps=1e-5,
                tie_word_embeddings=False)
  kwargs.update(overrides)
  torch.manual_seed(seed)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs)).eval()
  with torch.no_grad():  # HF inits norms to ones; randomise them so a swapped norm shows up.
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  return model


def _torch_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(tokens)).logits.numpy()


def _tokens(b=2, s=120, vocab=101):
  return np.random.RandomState(1).randint(0, vocab, (b, s)).astype(np.int32)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(name, tmp_path):
  hf = _hf_model(**CONFIGS[name])
  hf.save_pretrained(tmp_path)
  ours = load_hf(tmp_path, dtype="float32")
  tokens = _tokens()
  ref = _torch_logits(hf, tokens)
  np.testing.assert_allclose(np.asarray(ours(tokens)), ref, atol=1e-4, rtol=0)
  if CONFIGS[name].get("tie_word_embeddings"):
    assert not hasattr(ours, "lm_head")


def test_save_hf_round_trip_through_transformers(tmp_path):
  hf = _hf_model(**CONFIGS["llama3_rope"])
  hf.save_pretrained(tmp_path / "src")
  ours = load_hf(tmp_path / "src", dtype="float32")
  save_hf(ours, tmp_path / "out")
  reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
  tokens = _tokens()
  np.testing.assert_array_equal(_torch_logits(reloaded, tokens), _torch_logits(hf, tokens))
  assert reloaded.config.rope_parameters["rope_type"] == "llama3"
  again = load_hf(tmp_path / "out", dtype="float32")
  np.testing.assert_array_equal(np.asarray(again(tokens)), np.asarray(ours(tokens)))


def test_sharded_checkpoints_load(tmp_path):
  hf = _hf_model(**CONFIGS["gqa"])
  hf.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
  assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
  ours = load_hf(tmp_path / "hf", dtype="float32")
  tokens = _tokens(1, 16)
  np.testing.assert_allclose(np.asarray(ours(tokens)), _torch_logits(hf, tokens), atol=1e-4)
  save_hf(ours, tmp_path / "ours", max_shard_bytes=30_000)
  assert len(list((tmp_path / "ours").glob("model-*-of-*.safetensors"))) > 1
  reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "ours").eval()
  np.testing.assert_array_equal(_torch_logits(reloaded, tokens), _torch_logits(hf, tokens))



def test_save_hf_crash_over_a_checkpoint_leaves_the_old_one(tmp_path, monkeypatch):
  """A crash in the middle of `save_hf` over an existing checkpoint leaves the old one loadable;
  a finished save replaces it whole (no shard of the old one is left behind)."""
  old_hf, new_hf = _hf_model(seed=0, **CONFIGS["gqa"]), _hf_model(seed=1, **CONFIGS["gqa"])
  old_hf.save_pretrained(tmp_path / "old")
  new_hf.save_pretrained(tmp_path / "new")
  target, tokens = tmp_path / "ckpt", _tokens(1, 16)
  save_hf(load_hf(tmp_path / "old", dtype="float32"), target, max_shard_bytes=30_000)
  new = load_hf(tmp_path / "new", dtype="float32")

  def crash_mid_file(path, tensors):
    path.write_bytes(b"\0" * 100)  # a truncated safetensors file
    raise OSError("disk full")
  with monkeypatch.context() as m:
    m.setattr(hf_lib, "_write_safetensors", crash_mid_file)
    with pytest.raises(OSError, match="disk full"):
      save_hf(new, target)
  old_logits = _torch_logits(old_hf, tokens)
  np.testing.assert_allclose(np.asarray(load_hf(target, dtype="float32")(tokens)), old_logits,
                             atol=1e-4)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "new", "old"]  # no litter

  save_hf(new, target)
  assert not list(target.glob("model-*-of-*.safetensors"))
  np.testing.assert_allclose(np.asarray(load_hf(target, dtype="float32")(tokens)),
                             _torch_logits(new_hf, tokens), atol=1e-4)
  assert not np.allclose(_torch_logits(new_hf, tokens), old_logits, atol=1e-2)


def test_bfloat16_checkpoint_loads(tmp_path):
  hf = _hf_model(**CONFIGS["gqa"]).to(torch.bfloat16)
  hf.save_pretrained(tmp_path)
  ours = load_hf(tmp_path, param_dtype="bfloat16", dtype="float32")
  want = hf.model.layers[1].mlp.up_proj.weight.detach().float().numpy().T
  np.testing.assert_array_equal(np.asarray(ours.layers.mlp.up_proj[...][1], np.float32), want)


def test_safetensors_writer_reader_round_trip(tmp_path):
  arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.ones((3,), np.dtype("bfloat16"))}
  _write_safetensors(tmp_path / "x.safetensors", arrays)
  from safetensors.numpy import load_file
  assert np.array_equal(load_file(tmp_path / "x.safetensors")["a"], arrays["a"])
  f = _SafetensorsFile(tmp_path / "x.safetensors")
  for name, x in arrays.items():
    np.testing.assert_array_equal(f.get(name), x)


@pytest.fixture
def saved(tmp_path):
  hf = _hf_model(**CONFIGS["gqa"])
  hf.save_pretrained(tmp_path)
  return tmp_path


def test_error_missing_directory(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"checkpoint directory not found: {tmp_path}/nope"):
    load_hf(tmp_path / "nope")


def test_error_missing_config(saved):
  (saved / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="missing config.json"):
    load_hf(saved)


def test_error_no_safetensors(saved):
  (saved / "model.safetensors").rename(saved / "pytorch_model.bin")
  with pytest.raises(FileNotFoundError, match=r"no \*.safetensors files .*pytorch_model.bin"):
    load_hf(saved)


def test_error_missing_tensor(saved):
  f = _SafetensorsFile(saved / "model.safetensors")
  tensors = {n: np.array(f.get(n)) for n in f.header if n != "model.layers.1.mlp.up_proj.weight"}
  _write_safetensors(saved / "model.safetensors", tensors)
  with pytest.raises(CheckpointError, match=r"tensor model.layers.1.mlp.up_proj.weight is missing"):
    load_hf(saved)


def test_error_shape_mismatch_names_file_and_tensor(saved):
  config = json.loads((saved / "config.json").read_text())
  config["intermediate_size"] = 64
  (saved / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"model.safetensors: tensor model.layers.0.mlp.down_proj."
                     r"weight has shape \(48, 80\), expected \(48, 64\) from .*config.json"):
    load_hf(saved)


def test_error_bad_config_value(saved):
  config = json.loads((saved / "config.json").read_text())
  config["num_key_value_heads"] = 4
  (saved / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"num_attention_heads \(6\) must be a multiple"):
    load_hf(saved)


def test_error_unused_tensor(saved):
  config = json.loads((saved / "config.json").read_text())
  config["num_hidden_layers"] = 1
  (saved / "config.json").write_text(json.dumps(config))
  with pytest.raises(ValueError, match=r"tensors not used by a Llama .*model.layers.1."):
    load_hf(saved)


def test_truncated_safetensors_names_the_file(saved):
  """Not numpy's "cannot reshape array of size 3774 into shape (176,64)", but the file."""
  weights = saved / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size - 1000])
  with pytest.raises(CheckpointError, match=f"{weights}: truncated or damaged: tensor "):
    load_hf(saved)
