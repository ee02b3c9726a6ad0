"""RULER prompts byte for byte: rendered prompts against strings written out by hand from
NVIDIA/RULER's templates and generators (`scripts/data/synthetic/constants.py`, `niah.py`,
`variable_tracking.py`, `freq_words_extraction.py`; `base` model template)."""

import collections
import random

from longjax.eval.haystack import insert_at_sentences
from longjax.eval.niah import NeedleTask, depth_index
from longjax.eval.ruler import FrequentWords, VariableTracking
from longjax.eval.task import FitContext

NOISE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
         "again.")


def _ctx(length=4096):
  return FitContext(length, len, {})


def test_vt_prompt_matches_ruler():
  # icl_tokens=0: the 1-shot example has the minimum 5 noise lines, and 5 lines with 5
  # statements leave one layout (statement, noise line, statement, ...), as does units=5.
  r = VariableTracking(icl_tokens=0).render(5, random.Random(0), _ctx())
  shot = (
      "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
      f"VAR VTK = 42834\n{NOISE}\n"
      f"VAR GNK = VAR VTK \n{NOISE}\n"  # RULER: `VAR {b} = VAR {a} ` with a trailing space
      f"VAR UHM = VAR GNK \n{NOISE}\n"
      f"VAR PXN = VAR UHM \n{NOISE}\n"
      f"VAR HTQ = VAR PXN \n{NOISE}\n"
      "Question: Find all variables that are assigned the value 42834 in the text above."
      " Answer: According to the chain(s) of variable assignment in the text above, 5 variables "
      "are assigned the value 42834, they are:  VTK GNK UHM PXN HTQ\n")  # prefix + " " + names
  question = (
      "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n"
      f"VAR ZNSPD = 90202\n{NOISE}\n"
      f"VAR CBWIO = VAR ZNSPD \n{NOISE}\n"
      f"VAR JIQFO = VAR CBWIO \n{NOISE}\n"
      f"VAR LNBXX = VAR JIQFO \n{NOISE}\n"
      f"VAR CVSUQ = VAR LNBXX \n{NOISE}\n"
      "Question: Find all variables that are assigned the value 90202 in the text above.")
  assert r.input == shot + "\n" + question
  assert r.answer_prefix == (" Answer: According to the chain(s) of variable assignment in the "
                             "text above, 5 variables are assigned the value 90202, they are: ")
  assert r.outputs == ("ZNSPD", "CBWIO", "JIQFO", "LNBXX", "CVSUQ")


def test_vt_one_shot_layout_is_fixed_names_and_value_are_not():
  """RULER builds the 1-shot example once and re-draws only its names and value per sample."""
  task, ctx = VariableTracking(icl_tokens=2000), _ctx()

  def shot_lines(seed):
    shot = task.render(6, random.Random(seed), ctx).input.split("\nQuestion:")[0]
    return ["VAR" if line.startswith("VAR ") else line for line in shot.split("\n")]

  lines = [shot_lines(seed) for seed in range(4)]
  assert lines.count(lines[0]) == 4 and lines[0].count(NOISE) > 5
  shots = {task.render(6, random.Random(seed), ctx).input.split("they are:  ")[1][:19]
           for seed in range(4)}
  assert len(shots) == 4  # the example's names differ


def test_niah_noise_prompt_matches_ruler():
  r = NeedleTask("niah_single_1", "noise", "words", "numbers").render(3, random.Random(0), _ctx())
  assert r.input == (
      "A special magic number is hidden within the following text. Make sure to memorize it. "
      "I will quiz you about the number afterwards.\n"
      "One of the special magic numbers for jagged-inspiration is: 8056020.\n"  # plural in needle
      f"{NOISE}\n{NOISE}\n{NOISE}\n"
      "What is the special magic number for jagged-inspiration mentioned in the provided text?")
  assert r.answer_prefix == (" The special magic number for jagged-inspiration mentioned in the "
                             "provided text is")
  assert r.outputs == ("8056020",) and r.needle_offsets == (131,)


def test_text_haystack_keeps_ruler_empty_runs():
  """RULER space-joins [run, needle, run, needle, ..., run], empty runs included."""
  text, offsets = insert_at_sentences(["S1.", "S2.", "S3."], ["N1.", "N2.", "N3."], [0, 2, 2])
  assert text == " N1. S1. S2. N2.  N3. S3."
  assert offsets == [1, 13, 18]
  text, offsets = insert_at_sentences(["S1.", "S2."], ["N1."], [2])
  assert text == "S1. S2. N1. " and offsets == [8]


def test_depth_index_uses_ruler_arithmetic():
  assert depth_index(150, 82) == 122  # 150 * 0.82 = 122.99999999999999
  assert depth_index(300, 41) == 122
  assert depth_index(40, 0) == 0 and depth_index(40, 100) == 40 and depth_index(40, 51) == 20


def test_fwe_prompt_and_search_match_ruler():
  r = FrequentWords().render(20, random.Random(0), _ctx(250))
  head = ("Read the following coded text and track the frequency of each coded word. Find the "
          "three most frequently appeared coded words. ")
  tail = ("\nQuestion: Do not provide any explanation. Please ignore the dots '....'. What are "
          "the three most frequently appeared words in the above coded text?")
  assert r.input.startswith(head) and r.input.endswith(tail)
  words = r.input[len(head):-len(tail)].split(" ")
  # vocab (250 - 50) // 50 = 4 words; counts int(20 k^-2 / zeta(2)) = 12, 3, 1, 0.
  assert collections.Counter(words) == {"...": 12, r.outputs[0]: 3, r.outputs[1]: 1}
  assert r.answer_prefix == (" Answer: According to the coded text above, the three most "
                             "frequently appeared words are:")
  # RULER's loop over B = L - 50 = 950 prompt tokens: n from 950 // 6 = 158 in steps of
  # 950 // 32 = 29 until the prompt reaches B (here 2 tokens per unit: n = 477), one step back.
  task = FrequentWords()
  assert task.search(lambda n: 2 * n <= 950, lambda n: 2 * n, 950, 1000) == 448
  assert task.shrink_step(1000) == 29
