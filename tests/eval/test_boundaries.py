"""Eval prompts open as training documents do (`Tokenizer.boundaries.start`), never with a BOS
that the convention does not name; needle token positions count the same tokens."""

import pytest

from longjax.eval import suite
from longjax.eval.runner import stop_ids
from longjax.eval.task import ExampleGenerator

SMOL_CHAT_BOS = 1  # SmolLM2's `<|im_start|>`: a chat-turn marker, in no training document


@pytest.fixture(scope="module")
def tasks():
  return suite.make_tasks()


def _check_needles(tokenizer, ids, ex, needle="One of the special magic"):
  """Each stored position is the first token of a needle: the tokens before it decode to the
  prompt up to the needle (but whitespace), the tokens from it on start with the needle."""
  assert ex.needle_positions
  for pos in ex.needle_positions:
    before = tokenizer.decode(ids[:pos])
    assert ex.input.startswith(before)
    assert ex.input[len(before):].lstrip(" \n").startswith(needle)
    first = tokenizer.decode(ids[pos:pos + 1]).strip()  # not a whitespace token before it
    assert first and needle.startswith(first)
    assert tokenizer.decode(ids[pos:pos + 30]).lstrip().startswith(needle[:16])


@pytest.mark.parametrize("name", ["niah_single_1", "niah_multikey_1", "json_kv"])
def test_smollm2_prompts_carry_no_chat_bos(name, tasks, smol_tokenizer):
  assert smol_tokenizer.boundaries.start == () and smol_tokenizer.boundaries.end == (0,)
  gen = ExampleGenerator(smol_tokenizer)
  for ex in gen.examples(tasks[name], 1024, 2):
    ids = gen.encode_prompt(ex)
    assert ids == smol_tokenizer.encode(ex.prompt)  # nothing before the prompt text
    assert SMOL_CHAT_BOS not in ids
    assert ex.num_tokens == len(ids)
    if name == "json_kv":  # its "needle" is the queried key (quoted), not a NIAH sentence
      key = ex.input[ex.input.rindex("Key: ") + 5:]
      _check_needles(smol_tokenizer, ids, ex, needle=key)
    else:
      _check_needles(smol_tokenizer, ids, ex)


@pytest.mark.parametrize("name", ["niah_single_1", "niah_single_2"])
def test_prompts_start_with_the_conventions_start_token(name, tasks, bos_tokenizer):
  assert bos_tokenizer.boundaries.start == (1,)  # `<s>`, which this tokenizer adds itself
  gen = ExampleGenerator(bos_tokenizer)
  ex = gen.example(tasks[name], 1024, 0)
  ids = gen.encode_prompt(ex)
  assert ids[0] == 1 and ids[1:] == bos_tokenizer.encode(ex.prompt)
  assert 1 not in ids[1:]
  assert ex.num_tokens == len(ids) and len(ids) + ex.max_new_tokens <= 1024
  _check_needles(bos_tokenizer, ids, ex)


def test_generation_stops_at_eos_and_at_the_document_end(smol_tokenizer, bos_tokenizer):
  # SmolLM2: `<|endoftext|>` (0) ends every training document, `<|im_end|>` (2) is its EOS.
  assert stop_ids(smol_tokenizer) == (0, 2)
  assert stop_ids(bos_tokenizer) == (2,)
