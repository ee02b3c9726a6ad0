"""HELMET-style many-shot in-context learning on BBC News with permuted integer labels.

Yen et al., arXiv 2410.02694 (HELMET ICL); spec section 2. The five BBC classes map to a random
permutation of 0..4, seeded per test item by a hash of its text, so the task measures learning
the mapping from the demonstrations, not label semantics. Items come only from the BBC articles
that `longjax.bundled_texts.reserved_bbc_ids()` keeps out of training: the first
`TEST_PER_CLASS` of each class are test items, the rest the demonstration pool.

units = number of demonstrations, label-balanced (classes in round-robin, each class's demos in
a per-example shuffled order). HELMET draws 200 shots at 4K from a large train set; our pool has
200 items, so longer contexts cycle through it again (a labelled deviation) and items carry the
headline plus the first sentence from 32K on (spec).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import re

from longjax.eval.task import FitContext, Rendered, Task

ICL_TEMPLATE = ('Use the provided mapping from the text to label to assign a label to the text. '
                'Only output "label: {{label}}" and nothing else. \n\n{context}\n\n{question}')
ICL_PREFIX = "\nlabel:"
ITEM = "{text}\nlabel: {label}"
TEST_PER_CLASS = 20
LONG_ITEMS_FROM = 32768


@dataclasses.dataclass(frozen=True)
class LabelledItem:
  key: str
  label: str  # the BBC class
  headline: str
  first_sentence: str


def _item(key: str, data: bytes | str) -> LabelledItem:
  text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
  parts = [p.strip() for p in text.split("\n") if p.strip()]
  body = parts[1] if len(parts) > 1 else ""
  first = re.split(r"(?<=[.!?])\s", body, maxsplit=1)[0]
  return LabelledItem(key, key.split("/")[1], parts[0], first)


@functools.cache
def bbc_items() -> tuple[tuple[LabelledItem, ...], tuple[LabelledItem, ...]]:
  """(test items, demonstration pool) from the reserved BBC articles, in id order."""
  from longjax.bundled_texts import bbc_documents, reserved_bbc_ids
  reserved = set(reserved_bbc_ids())
  items = [_item(d.key, d.text) for d in bbc_documents() if d.key in reserved]
  test, pool, seen = [], [], {}
  for it in sorted(items, key=lambda i: i.key):
    seen[it.label] = seen.get(it.label, 0) + 1
    (test if seen[it.label] <= TEST_PER_CLASS else pool).append(it)
  return tuple(test), tuple(pool)


def label_mapping(text: str, classes: list[str]) -> dict[str, str]:
  """Class -> integer label string, a permutation seeded by a hash of the test item's text."""
  seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
  ids = list(range(len(classes)))
  random.Random(seed).shuffle(ids)
  return {c: str(i) for c, i in zip(sorted(classes), ids)}


@dataclasses.dataclass
class BBCIcl(Task):
  """Classify one held-out BBC headline after `units` label-balanced demonstrations."""
  name: str = "icl_bbc"
  tokens_to_generate: int = 20

  def __post_init__(self):
    self.metric = "label_match"
    self.unit = "demonstrations"
    self.min_units = 5
    self.probe_units = 50

  def shrink_step(self, length: int) -> int:
    return 10 if length >= 4096 else 2

  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    test, pool = bbc_items()
    long_items = ctx.length >= LONG_ITEMS_FROM
    text = lambda it: f"{it.headline} {it.first_sentence}".strip() if long_items else it.headline
    target = rng.choice(test)
    classes = sorted({it.label for it in pool})
    mapping = label_mapping(text(target), classes)
    by_class = {c: [it for it in pool if it.label == c] for c in classes}
    for items in by_class.values():
      rng.shuffle(items)
    order = classes[:]
    rng.shuffle(order)
    demos = []
    for i in range(units):
      items = by_class[order[i % len(order)]]
      demos.append(items[(i // len(order)) % len(items)])
    context = "\n\n".join(ITEM.format(text=text(d), label=mapping[d.label]) for d in demos)
    prompt = ICL_TEMPLATE.format(context=context, question=text(target))
    return Rendered(input=prompt, answer_prefix=ICL_PREFIX, outputs=(mapping[target.label],))
