"""Flax Llama models, Hugging Face interop, greedy generation and the tokenizer wrapper."""

from longjax.models.generate import generate
from longjax.models.hf import load_hf, save_hf, smollm2_checkpoint
from longjax.models.llama import Llama, LlamaConfig
from longjax.models.tokenizer import Tokenizer, load_tokenizer

__all__ = ["Llama", "LlamaConfig", "Tokenizer", "generate", "load_hf", "load_tokenizer", "save_hf",
           "smollm2_checkpoint"]
