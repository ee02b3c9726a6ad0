"""RULER's aggregation and tracing tasks: variable tracking (vt), common words (cwe), frequent
words (fwe).

Hsieh et al., arXiv 2404.06654 (NVIDIA/RULER `scripts/data/synthetic/`); templates and constants
from the longjax evaluation spec, section 1. Prompts match RULER's generators character for
character (`variable_tracking.py`, `common_words_extraction.py`, `freq_words_extraction.py` with
the `base` model template): VT's hop lines end with a space (`VAR B = VAR A `), its 1-shot example
is the question, the answer prefix, a space and the names (so `they are:  AAA ...`), then a blank
line. The NIAH tasks live in niah.py.
"""

from __future__ import annotations

import dataclasses
import math
import random
import string
from typing import Callable

from longjax.eval import values as V
from longjax.eval.haystack import NOISE_LINE, insert_lines
from longjax.eval.task import FitContext, Rendered, Task

VT_QUESTION = ("Memorize and track the chain(s) of variable assignment hidden in the following "
               "text.\n\n{context}\nQuestion: Find all variables that are assigned the value "
               "{query} in the text above.")
VT_PREFIX = (" Answer: According to the chain(s) of variable assignment in the text above, "
             "{num_v} variables are assigned the value {query}, they are: ")
CWE_QUESTION = ("Below is a numbered list of words. In these words, some appear more often than "
                "others. Memorize the ones that appear most often.\n{context}\nQuestion: What are "
                "the 10 most common words in the above list?")
CWE_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
FWE_QUESTION = ("Read the following coded text and track the frequency of each coded word. Find "
                "the three most frequently appeared coded words. {context}\nQuestion: Do not "
                "provide any explanation. Please ignore the dots '....'. What are the three most "
                "frequently appeared words in the above coded text?")
FWE_PREFIX = (" Answer: According to the coded text above, the three most frequently appeared "
              "words are:")
VOCAB_SEED = 42  # seed of the CWE vocabulary shuffle (fixed, like RULER's)


@dataclasses.dataclass
class VariableTracking(Task):
  """One chain of `num_hops` assignments among noise lines, after a 1-shot example.

  units = noise lines. As in RULER, the 1-shot example (3-letter names) is laid out once per
  tokenizer: the most noise lines whose question + answer prefix fit `icl_tokens` tokens, the
  chain at fixed lines; each example re-draws only its names and root value.
  """
  name: str = "vt"
  num_hops: int = 4
  icl_tokens: int = 500
  tokens_to_generate: int = 30

  def __post_init__(self):
    self.unit = "lines"
    self.min_units = self.num_hops + 1
    self.probe_units = 20

  def _chain_text(self, lines: int, letters: int, rng: random.Random,
                  positions: list[int] | None = None) -> tuple[str, str, list]:
    """(question, answer prefix, names) of one chain among `lines` noise lines.

    The chain's statements go before the noise lines `positions` (sorted; drawn from `rng` when
    None). RULER writes every `VAR X = VAR Y` statement with a trailing space.
    """
    names = V.distinct(lambda r: V.random_letters(r, letters), self.num_hops + 1, rng)
    value = str(rng.randrange(10000, 99999))
    stmts = [f"VAR {names[0]} = {value}"]
    stmts += [f"VAR {names[j + 1]} = VAR {names[j]} " for j in range(self.num_hops)]
    if positions is None:
      positions = sorted(rng.sample(range(lines), len(stmts)))
    context, _ = insert_lines([NOISE_LINE] * lines, stmts, positions)
    question = VT_QUESTION.format(context=context, query=value)
    return question, VT_PREFIX.format(num_v=self.num_hops + 1, query=value), names

  def _icl_layout(self, ctx: FitContext) -> tuple[int, list[int]]:
    """(noise lines, chain positions) of the 1-shot example, computed once per generator."""
    key = ("vt_icl_layout", self.icl_tokens, self.num_hops)
    if key not in ctx.cache:
      def layout(n: int) -> list[int]:
        return sorted(random.Random(VOCAB_SEED).sample(range(n), self.num_hops + 1))

      def count(n: int) -> int:
        q, p, _ = self._chain_text(n, 3, random.Random(VOCAB_SEED), layout(n))
        return ctx.count_tokens(q + p)
      n = self.min_units
      while count(n + 1) <= self.icl_tokens:
        n += 1
      ctx.cache[key] = (n, layout(n))
    return ctx.cache[key]

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    ex_lines, ex_positions = self._icl_layout(ctx)
    ex_q, ex_p, ex_names = self._chain_text(ex_lines, 3, rng, ex_positions)
    question, prefix, names = self._chain_text(units, 5, rng)
    shot = ex_q + ex_p + " " + " ".join(ex_names) + "\n"
    return Rendered(input=shot + "\n" + question, answer_prefix=prefix, outputs=tuple(names))


def _numbered(words: list[str]) -> str:
  return " ".join(f"{i + 1}. {w}" for i, w in enumerate(words))


@dataclasses.dataclass
class CommonWords(Task):
  """10 common words repeated often among `units` uncommon words, after a 1-shot example."""
  name: str = "cwe"
  num_common: int = 10
  tokens_to_generate: int = 120

  def __post_init__(self):
    self.unit = "uncommon words"
    self.min_units = 0
    self.probe_units = 100

  def _freqs(self, length: int) -> tuple[tuple[int, int], tuple[int, int, int]]:
    """((common, uncommon) repeats, (example words, common, uncommon) repeats) by length."""
    return ((30, 3), (40, 10, 3)) if length >= 4096 else ((6, 1), (20, 3, 1))

  def _list(self, num_words: int, common_rep: int, uncommon_rep: int,
            rng: random.Random) -> tuple[str, list[str]]:
    vocab = V.common_words_vocab(VOCAB_SEED, num_words)
    if num_words > len(vocab):
      raise ValueError(f"cwe: {num_words} distinct words asked for, vocabulary has {len(vocab)}")
    words = rng.sample(vocab, num_words)
    common, uncommon = words[:self.num_common], words[self.num_common:]
    items = common * common_rep + uncommon * uncommon_rep
    rng.shuffle(items)
    return _numbered(items), common

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    (cr, ur), (ex_n, ex_cr, ex_ur) = self._freqs(ctx.length)
    ex_ctx, ex_ans = self._list(ex_n, ex_cr, ex_ur, rng)
    context, answer = self._list(self.num_common + units, cr, ur, rng)
    shot = CWE_QUESTION.format(context=ex_ctx) + CWE_PREFIX + " " + _numbered(ex_ans)
    return Rendered(input=shot + "\n" + CWE_QUESTION.format(context=context),
                    answer_prefix=CWE_PREFIX, outputs=tuple(answer))


@dataclasses.dataclass
class FrequentWords(Task):
  """Zipf-distributed (alpha = 2) coded words; the most frequent is the noise token `...`.

  units = n, the Zipf mass: count(rank k) = int(n k^-2 / zeta(2)). RULER's loop over the prompt
  budget B = L - tokens_to_generate: n starts at B//6 and grows by B//32 until the prompt
  reaches B tokens, then backs off one step; examples back off by B//32 until they fit.
  """
  name: str = "fwe"
  word_len: int = 6
  tokens_to_generate: int = 50

  def __post_init__(self):
    self.unit = "Zipf mass n"

  def shrink_step(self, length: int) -> int:
    return max(1, (length - self.tokens_to_generate) // 32)

  def search(self, fits: Callable[[int], bool], count: Callable[[int], int],
             budget: int, length: int) -> int:
    n, step = max(1, budget // 6), max(1, budget // 32)
    if not fits(n):
      return super().search(fits, count, budget, length)
    while count(n + step) < budget:
      n += step
    return n

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    vocab_size = max(4, (ctx.length - self.tokens_to_generate) // 50)
    vocab = sorted(set(V.distinct(
        lambda r: V.random_letters(r, self.word_len, string.ascii_lowercase), vocab_size, rng)))
    rng.shuffle(vocab)
    vocab[0] = "..."
    zeta2 = math.pi ** 2 / 6
    items = [w for k, w in enumerate(vocab, start=1) for _ in range(int(units * k ** -2 / zeta2))]
    rng.shuffle(items)
    return Rendered(input=FWE_QUESTION.format(context=" ".join(items)),
                    answer_prefix=FWE_PREFIX, outputs=tuple(vocab[1:4]))
