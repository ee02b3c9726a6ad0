"""RULER needle-in-a-haystack tasks (single, multi-key, multi-value, multi-query).

Hsieh et al., arXiv 2404.06654 (NVIDIA/RULER `scripts/data/synthetic/niah.py`); templates and
constants from the longjax evaluation spec, section 1; prompts match RULER's `niah.py` (with the
`base` model template) character for character. Haystacks: `noise` (the repeated noise
line), `needle` (every line a distractor needle), `text` (held-out documents, see haystack.py).
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from longjax.eval import values as V
from longjax.eval.haystack import NOISE_LINE, TextHaystack, insert_at_sentences, insert_lines
from longjax.eval.task import FitContext, Rendered, Task

NEEDLE = "One of the special magic {type} for {key} is: {value}."
TEMPLATE = ("Some special magic {type} are hidden within the following text. Make sure to "
            "memorize it. I will quiz you about the {type} afterwards.\n{context}\nWhat are all "
            "the special magic {type} for {query} mentioned in the provided text?")
ANSWER_PREFIX = " The special magic {type} for {query} mentioned in the provided text are"
# Needle depths (percent) for text haystacks: round(linspace(0, 100, 40)), drawn w/o replacement.
DEPTHS = tuple(int(d) for d in np.round(np.linspace(0, 100, num=40, endpoint=True)))


def singularise(template: str) -> str:
  """RULER's rewrite when one value is asked for: Some->A, `are all`->`is`, `are`->`is`."""
  return template.replace("Some", "A").replace("are all", "is").replace("are", "is")


def depth_index(num_sentences: int, depth: int) -> int:
  """The sentence a needle at `depth` percent goes before: RULER's int(n * (depth / 100)).

  The order of operations matters: 150 * (82 / 100) = 122.99999999999999, so 122, where
  150 * 82 / 100 = 123.
  """
  return int(num_sentences * (depth / 100))


def join_queries(queries: list[str]) -> str:
  """`a`, or `a, b, c, and d` (RULER's join of several queried keys)."""
  if len(queries) == 1:
    return queries[0]
  return ", ".join(queries[:-1]) + ", and " + queries[-1]


@dataclasses.dataclass
class NeedleTask(Task):
  """One RULER NIAH configuration.

  Attributes:
    haystack: "noise", "needle" or "text".
    key_type / value_type: "words", "numbers" or "uuids".
    num_keys / num_values / num_queries: k / v / q of the spec's table (k = max(k, q)).
    text: the sentence stream for `haystack="text"`.
  """
  name: str
  haystack: str
  key_type: str
  value_type: str
  num_keys: int = 1
  num_values: int = 1
  num_queries: int = 1
  text: TextHaystack | None = None
  tokens_to_generate: int = 128

  def __post_init__(self):
    if self.haystack not in ("noise", "needle", "text"):
      raise ValueError(f"{self.name}: haystack {self.haystack!r} must be noise, needle or text")
    if self.haystack == "text" and self.text is None:
      raise ValueError(f"{self.name}: a text haystack needs `text` (a TextHaystack)")
    self.num_keys = max(self.num_keys, self.num_queries)
    self.unit = "words" if self.haystack == "text" else "lines"
    self.min_units = self.num_keys * self.num_values
    self.probe_units = 500 if self.haystack == "text" else 20

  def shrink_step(self, length: int) -> int:
    if length < 4096:
      return 5
    return 500 if self.haystack == "text" else 25

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    keys = V.distinct(lambda r: V.random_value(self.key_type, r), self.num_keys, rng)
    vals = [[V.random_value(self.value_type, rng) for _ in range(self.num_values)] for _ in keys]
    needles = [NEEDLE.format(type=self.value_type, key=k, value=v)
               for k, vs in zip(keys, vals) for v in vs]
    rng.shuffle(needles)

    if self.haystack == "text":
      sents = self.text.sentences(units)
      depths = rng.sample(DEPTHS, len(needles))
      context, offsets = insert_at_sentences(
          sents, needles, [depth_index(len(sents), d) for d in depths])
    else:
      if self.haystack == "noise":
        lines = [NOISE_LINE] * units
      else:  # every line a distractor needle; real keys never reappear in distractors
        taken = frozenset(keys)
        lines = [NEEDLE.format(type=self.value_type,
                               key=V.distinct(lambda r: V.random_value(self.key_type, r), 1, rng,
                                              taken)[0],
                               value=V.random_value(self.value_type, rng))
                 for _ in range(units)]
      context, offsets = insert_lines(lines, needles, rng.sample(range(units), len(needles)))

    picked = rng.sample(range(self.num_keys), self.num_queries)
    query = join_queries([keys[i] for i in picked])
    answers = tuple(v for i in picked for v in vals[i])

    template, prefix, vtype = TEMPLATE, ANSWER_PREFIX, self.value_type
    if self.num_queries * self.num_values == 1:
      template, prefix, vtype = singularise(template), singularise(prefix), vtype[:-1]
    head, tail = template.split("{context}")
    head = head.format(type=vtype)
    text = head + context + tail.format(type=vtype, query=query)
    return Rendered(input=text, answer_prefix=prefix.format(type=vtype, query=query),
                    outputs=answers, needle_offsets=tuple(len(head) + o for o in offsets))


def niah_tasks(text: TextHaystack) -> list[NeedleTask]:
  """The eight RULER NIAH tasks of the spec's table."""
  return [
      NeedleTask("niah_single_1", "noise", "words", "numbers"),
      NeedleTask("niah_single_2", "text", "words", "numbers", text=text),
      NeedleTask("niah_single_3", "text", "words", "uuids", text=text),
      NeedleTask("niah_multikey_1", "text", "words", "numbers", num_keys=4, text=text),
      NeedleTask("niah_multikey_2", "needle", "words", "numbers"),
      NeedleTask("niah_multikey_3", "needle", "uuids", "uuids"),
      NeedleTask("niah_multivalue", "text", "words", "numbers", num_values=4, text=text),
      NeedleTask("niah_multiquery", "text", "words", "numbers", num_keys=4, num_queries=4,
                 text=text),
  ]
