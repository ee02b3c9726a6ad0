"""Model-test fixtures. `smollm2_dir` is the converted SmolLM2-135M-Instruct checkpoint directory
(HF safetensors + tokenizer), built once per machine under <repo>/.cache/smollm2 and shared by
every area's tests (a session fixture here; other areas call `smollm2_checkpoint()` directly)."""

import pytest


@pytest.fixture(scope="session")
def smollm2_dir():
  from longjax.models import smollm2_checkpoint
  return smollm2_checkpoint()


@pytest.fixture(scope="session")
def smollm2_torch(smollm2_dir):
  """transformers' PyTorch LlamaForCausalLM (fp32) on the same weights: the reference."""
  import transformers
  return transformers.LlamaForCausalLM.from_pretrained(smollm2_dir).eval()


@pytest.fixture(scope="session")
def smollm2_fp32(smollm2_dir):
  """longjax Llama loaded from the same directory, fp32 compute."""
  from longjax.models import load_hf
  return load_hf(smollm2_dir, dtype="float32")
