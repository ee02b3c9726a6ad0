"""Synthetic eval tasks: the example record, the task interface, and length fitting.

A task renders a prompt from a number of haystack *units* (words, lines, list words, JSON pairs)
and a seeded `random.Random`. `ExampleGenerator` fits each (task, length) to the evaluated
model's tokenizer, so that start + tok(input + answer prefix) + tokens_to_generate <= length, where
`start` is the tokenizer's document start (`Tokenizer.boundaries.start`, usually empty): a prompt
opens the way every training document does, never with a BOS that the convention does not name
(SmolLM2's BOS `<|im_start|>` is a chat marker that no training document contains):

- a search per (task, length), with a fixed search seed: a tokens-per-unit estimate from a
  probe, then a binary search below 3x that estimate (RULER's procedure);
- per example, the searched count shrinks by the task's step until that example fits.

An example is a pure function of (base seed, task, length, index), so any one can be rebuilt.
"""

from __future__ import annotations

import abc
import dataclasses
import multiprocessing
import random
from concurrent import futures
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from longjax.eval.values import derive_seed


class TaskFitError(ValueError):
  """A task cannot be fitted to a length (too short for its fixed parts)."""


@dataclasses.dataclass(frozen=True)
class Rendered:
  """What a task renders from (units, rng): prompt parts, gold strings, needle char offsets."""
  input: str
  answer_prefix: str
  outputs: tuple[str, ...]
  needle_offsets: tuple[int, ...] = ()  # character offsets in `input` (NIAH diagnostic)


@dataclasses.dataclass
class FitContext:
  """What `Task.render` may use besides its rng: the target length, the token counter of the
  evaluated model (document start tokens included) and a per-generator cache (for sub-searches, e.g. VT's 1-shot)."""
  length: int
  count_tokens: Callable[[str], int]
  cache: dict[Any, Any]


@dataclasses.dataclass(frozen=True)
class Example:
  """One fitted eval example. The model sees start + input + answer_prefix and continues."""
  task: str
  length: int
  index: int
  seed: int
  input: str
  answer_prefix: str
  outputs: tuple[str, ...]
  max_new_tokens: int
  num_units: int
  num_tokens: int  # prompt tokens, document start tokens included
  needle_positions: tuple[int, ...] = ()  # token index of each needle's first token

  @property
  def prompt(self) -> str:
    return self.input + self.answer_prefix

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


class Task(abc.ABC):
  """A synthetic task. Subclasses set the class attributes and implement `render`."""
  name: str
  metric: str = "string_match_all"
  tokens_to_generate: int = 128
  unit: str = "units"
  min_units: int = 1
  probe_units: int = 64

  @abc.abstractmethod
  def render(self, units: int, rng: random.Random, ctx: FitContext) -> Rendered:
    """The prompt built from `units` haystack units, every random choice drawn from `rng`."""

  def shrink_step(self, length: int) -> int:
    """How many units an example gives up per try when it does not fit."""
    return 25 if length >= 4096 else 5

  def search(self, fits: Callable[[int], bool], count: Callable[[int], int],
             budget: int, length: int) -> int:
    """The largest unit count that fits: estimate from a probe, then binary search."""
    lo = self.min_units
    if not fits(lo):
      raise TaskFitError(f"task {self.name}: even {lo} {self.unit} do not fit {budget} tokens "
                       f"(+{self.tokens_to_generate} to generate); use a longer length")
    base, probe = count(lo), count(lo + self.probe_units)
    per_unit = max((probe - base) / self.probe_units, 1e-3)
    hi = max(lo + 1, int(3 * (budget - base) / per_unit))
    while fits(hi):  # the estimate was too low; RULER's 3x bound is a heuristic
      if hi > 1 << 24:
        raise ValueError(f"task {self.name}: prompt length does not grow with {self.unit}")
      lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: fits(lo), not fits(hi)
      mid = (lo + hi) // 2
      lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _needle_token_positions(tokenizer, text: str, offsets: Sequence[int], start: int) -> tuple:
  """Index of the token holding character `o` of `text`, for each offset, after `start` tokens.

  The tokens of `text[:o]` without its trailing whitespace are a prefix of the tokens of `text`
  up to the needle; the needle's first token is the first one after that prefix that is not
  whitespace alone. Counting the tokens of `text[:o + 1]` instead is off by one where BPE
  merges the space before a needle into its first word (` One`) but has no token ` O`, and
  `text[:o]` with its whitespace can end in a token (`\n `) that `text` splits differently.
  """
  if not offsets:
    return ()
  full = tokenizer.encode(text)
  out = []
  for o in offsets:
    head = tokenizer.encode(text[:o].rstrip())
    i = 0
    while i < len(head) and i < len(full) and head[i] == full[i]:
      i += 1
    while i < len(full) - 1 and not tokenizer.decode(full[i:i + 1]).strip():
      i += 1
    out.append(start + i)
  return tuple(out)


class ExampleGenerator:
  """Builds fitted, reproducible examples for one tokenizer.

  Args:
    tokenizer: the evaluated model's tokenizer (`longjax.models.tokenizer.Tokenizer`).
    seed: the base seed (spec: 42); every example seed derives from it.
  """

  def __init__(self, tokenizer, *, seed: int = 42):
    self.tokenizer = tokenizer
    self.seed = seed
    self._start = list(tokenizer.boundaries.start)
    self._units: dict[tuple[str, int], int] = {}
    self._cache: dict[Any, Any] = {}
    self._pool: futures.ProcessPoolExecutor | None = None
    self._queued: list[tuple[str, int, int]] = []  # prepared pieces not yet given to a worker
    self._ahead = 0  # pieces in flight at most
    self._pending: dict[tuple[str, int, int], futures.Future] = {}
    self._piece: tuple[tuple[str, int, int], list[Example], list[np.ndarray]] | None = None

  def __getstate__(self) -> dict[str, Any]:
    """What a worker process gets: the tokenizer, seed and fitted counts; no pool or pieces."""
    return {**self.__dict__, "_pool": None, "_queued": [], "_pending": {}, "_piece": None}

  def count_tokens(self, text: str) -> int:
    """Prompt length in model tokens, document start tokens included."""
    return len(self._start) + len(self.tokenizer.encode(text))

  def encode_prompt(self, example: Example) -> list[int]:
    """The model's input: the document start tokens (usually none), then the prompt (already
    encoded when `example` belongs to the piece `examples` returned last)."""
    if self._piece is not None:
      (task, length, _), examples, prompts = self._piece
      if (example.task, example.length) == (task, length) and example.index < len(examples) \
          and examples[example.index] is example:
        return prompts[example.index].tolist()
    return self._start + self.tokenizer.encode(example.prompt)

  def _budget(self, task: Task, length: int) -> int:
    return length - task.tokens_to_generate

  def _ctx(self, length: int) -> FitContext:
    return FitContext(length, self.count_tokens, self._cache)

  def units(self, task: Task, length: int) -> int:
    """The searched unit count for (task, length), computed once per generator."""
    key = (task.name, length)
    if key not in self._units:
      budget = self._budget(task, length)
      seed = derive_seed(self.seed, task.name, length, "search")
      ctx = self._ctx(length)
      count = lambda n: self.count_tokens(_prompt(task.render(n, random.Random(seed), ctx)))
      self._units[key] = task.search(lambda n: count(n) <= budget, count, budget, length)
    return self._units[key]

  def example(self, task: Task, length: int, index: int) -> Example:
    """Example `index` of (task, length): the searched units, shrunk until this one fits."""
    budget = self._budget(task, length)
    seed = derive_seed(self.seed, task.name, length, index)
    n = self.units(task, length)
    step = task.shrink_step(length)
    ctx = self._ctx(length)
    while True:
      r = task.render(n, random.Random(seed), ctx)
      num_tokens = self.count_tokens(_prompt(r))
      if num_tokens <= budget:
        break
      if n <= task.min_units:
        raise TaskFitError(f"task {task.name} example {index}: even {n} {task.unit} overflow "
                         f"length {length} ({num_tokens} prompt + {task.tokens_to_generate} "
                         f"to generate)")
      n = max(n - step, task.min_units)
    positions = _needle_token_positions(self.tokenizer, r.input, r.needle_offsets,
                                        len(self._start))
    return Example(task=task.name, length=length, index=index, seed=seed, input=r.input,
                   answer_prefix=r.answer_prefix, outputs=r.outputs,
                   max_new_tokens=task.tokens_to_generate, num_units=n, num_tokens=num_tokens,
                   needle_positions=positions)

  def build(self, task: Task, length: int, num: int) -> tuple[list[Example], list[np.ndarray]]:
    """Examples 0..num-1 of (task, length) and their encoded prompts (int32: compact for the
    trip back from a worker and while waiting there)."""
    examples = [self.example(task, length, i) for i in range(num)]
    return examples, [np.asarray(self._start + self.tokenizer.encode(e.prompt), np.int32)
                      for e in examples]

  def examples(self, task: Task, length: int, num: int) -> list[Example]:
    """Examples 0..num-1 of (task, length): from the worker that `prepare` gave them to, else
    built here. The last piece is kept (with its encoded prompts) for repeated calls."""
    key = (task.name, length, num)
    if self._piece is None or self._piece[0] != key:
      self._piece = None  # (its prompts are freed before the next piece's arrive)
      pending = self._pending.pop(key, None)
      try:
        self._submit()
        built = pending.result() if pending else self.build(task, length, num)
      except BrokenProcessPool:  # a worker died (memory, a signal): build the piece here
        built = self.build(task, length, num)
      self._piece = (key, *built)
    return self._piece[1]

  def _submit(self) -> None:
    """Keeps two pieces per worker in flight, so that finished prompts waiting for the model
    stay a few pieces' worth of memory."""
    while self._queued and len(self._pending) < self._ahead:
      key = self._queued.pop(0)
      self._pending[key] = self._pool.submit(_build_in_worker, *key)

  def prepare(self, tasks: Mapping[str, Task], pieces: Sequence[tuple[str, int]], num: int,
              workers: int) -> None:
    """Starts building the examples of `pieces` ((task name, length), in the order they will be
    asked for) in `workers` processes, so that building prompts (haystack fitting and
    tokenization, on the CPU) overlaps the model's work; `examples` takes each result. Fit
    the pieces (`units`) first: the workers reuse the counts. workers < 1: nothing to do."""
    if workers < 1 or not pieces:
      return
    self.close()
    self._pool = futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),  # no fork of JAX's threads
        initializer=_start_worker, initargs=(self, dict(tasks)))
    self._queued, self._ahead = [(name, length, num) for name, length in pieces], 2 * workers
    self._submit()

  def close(self) -> None:
    """Stops the workers of `prepare` (pieces not yet taken are dropped)."""
    if self._pool is not None:
      self._pool.shutdown(wait=True, cancel_futures=True)
    self._pool, self._queued, self._pending = None, [], {}


_WORKER: tuple[ExampleGenerator, Mapping[str, Task]] | None = None  # in a `prepare` worker


def _start_worker(generator: ExampleGenerator, tasks: Mapping[str, Task]) -> None:
  global _WORKER  # pylint: disable=global-statement
  _WORKER = (generator, tasks)


def _build_in_worker(name: str, length: int, num: int) -> tuple[list[Example], list[np.ndarray]]:
  generator, tasks = _WORKER
  return generator.build(tasks[name], length, num)


def _prompt(r: Rendered) -> str:
  return r.input + r.answer_prefix
