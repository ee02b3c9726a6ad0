"""The task registry and the categories that reports average over.

RULER-11 = the 13 RULER tasks minus qa_1/qa_2 (no SQuAD/HotpotQA offline). HELMET Recall = mean
of json_kv and RULER's MK-needle, MK-UUID and MV; we reuse the RULER runs of those three (their
generation cap is RULER's 128 tokens instead of HELMET's 50/100/50, a labelled deviation).
ICL = the BBC many-shot task (icl.py); `lite_avg` = mean(RULER-11, Recall, ICL).
"""

from __future__ import annotations

import functools
from typing import Sequence

from longjax.eval.haystack import TextHaystack
from longjax.eval.helmet import JsonKV
from longjax.eval.icl import BBCIcl
from longjax.eval.niah import niah_tasks
from longjax.eval.ruler import CommonWords, FrequentWords, VariableTracking
from longjax.eval.task import Task

RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1",
               "niah_multikey_2", "niah_multikey_3", "niah_multivalue", "niah_multiquery",
               "vt", "cwe", "fwe")
RECALL_TASKS = ("json_kv", "niah_multikey_2", "niah_multikey_3", "niah_multivalue")
ICL_TASKS = ("icl_bbc",)
CATEGORIES = {"ruler": RULER_TASKS, "recall": RECALL_TASKS, "icl": ICL_TASKS}
ALL_TASKS = RULER_TASKS + ("json_kv",) + ICL_TASKS
TEXT_HAYSTACK_SOURCE = "sotu/"  # the essay-like prose of the held-out corpus


@functools.cache
def default_text_haystack() -> TextHaystack:
  """The held-out SOTU speeches in chronological order (`longjax.bundled_texts`)."""
  from longjax.bundled_texts import heldout_documents
  docs = [d.text for d in heldout_documents() if d.key.startswith(TEXT_HAYSTACK_SOURCE)]
  return TextHaystack(docs, name="sotu")


def make_tasks(text: TextHaystack | None = None) -> dict[str, Task]:
  """Every task by name; `text` is the haystack of the text-based NIAH tasks."""
  text = text if text is not None else default_text_haystack()
  tasks: list[Task] = niah_tasks(text)
  tasks += [VariableTracking(), CommonWords(), FrequentWords(), JsonKV(), BBCIcl()]
  return {t.name: t for t in tasks}


def expand_task_names(spec: str | Sequence[str]) -> list[str]:
  """Task names from a comma list that may use `all`, `ruler`, `recall`; order kept, no repeats.

  Raises ValueError naming an unknown task and listing the known ones.
  """
  items = spec.split(",") if isinstance(spec, str) else list(spec)
  out: list[str] = []
  for item in (i.strip() for i in items):
    if not item:
      continue
    names = (ALL_TASKS if item == "all" else CATEGORIES.get(item, (item,)))
    for name in names:
      if name not in ALL_TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(ALL_TASKS)} "
                         f"or the groups all, {', '.join(CATEGORIES)}")
      if name not in out:
        out.append(name)
  if not out:
    raise ValueError("no tasks given")
  return out
