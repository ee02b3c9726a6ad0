"""Quest, shuffled: Quest's own document spans with the keyword grouping taken out (a control).

Quest differs from Standard in two ways at once: which documents (and how many times) its
samples hold, through the split-ratio oversampling and the keyword pools, and how they are
grouped, by shared keyword. `questshuffled` keeps the first and removes the second, so an arm
trained on it separates the two (README, "What the comparison shows"): for example seed `s` it
plans Quest's samples of seed `s`, keeps the samples that are one document alone (pieces of a
document longer than L, as Quest makes them), pools the spans of all other samples (joining
again the pieces Quest cut from one occurrence of a document at L), shuffles them and packs
them back into L-token samples: a span that crosses L continues at the start of
the next sample, and a span whose document is already in the sample waits for the next one (no
document twice in a sample, as in Quest). Every token of Quest's samples appears once in the
control's, apart from spans that could not be placed at the very end (counted in the
manifest), and the samples come out in a seeded random order.

It reads Quest's build (`quest` must be built into the same index first) and writes only its
manifest: the budget and the repacking counts per length, for the build seed.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from longjax import io
from longjax.models.tokenizer import Tokenizer
from longjax.synth import artifacts, corpus
from longjax.synth.methods.base import BuildContext, check_shard
from longjax.synth.methods.options import MethodOptions
from longjax.synth.methods.quest.method import QuestMethod, materialize, plan_shard, \
  quest_budget, read_build
from longjax.synth.methods.quest.sampler import Span


@dataclasses.dataclass(frozen=True)
class QuestShuffledOptions(MethodOptions):
  """None: Quest's options (read from its build) decide the spans, the example seed the order."""


@dataclasses.dataclass
class ShuffleStats:
  """What the repacking did to one shard's plans."""
  samples: int = 0
  single_document_samples: int = 0  # kept as Quest made them
  spans_in: int = 0                  # runs of Quest's other samples, cut pieces joined, shuffled
  spans_cut: int = 0                 # spans that crossed L and continued in the next sample
  tokens_dropped: int = 0            # tokens left over at the end (no sample could hold them)
  same_keyword_adjacent_quest: float = 0.0     # share of adjacent span pairs in a sample that
  same_keyword_adjacent_shuffled: float = 0.0  # share one keyword (the grouping, before/after)

  def summary(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _same_keyword_share(plans: Sequence[Sequence[Span]]) -> float:
  pairs = [(a[0], b[0]) for p in plans for a, b in zip(p, p[1:]) if a[1] != b[1]]
  return float(np.mean([a == b for a, b in pairs])) if pairs else 0.0


def _is_single(plan: Sequence[Span], length: int) -> bool:
  return len(plan) == 1 and plan[0][3] - plan[0][2] == length


def join_pieces(spans: Sequence[Span]) -> list[Span]:
  """The spans with the pieces Quest cut from one occurrence of a document joined again: a
  span ending where another of the same document starts becomes one span with it. Quest cuts
  the document that crosses L and puts its rest back into the pool; repacking its spans as they
  are would cut them a second time, giving the control more, shorter document runs per row
  than Quest (7.5 against 6.8 documents per row at 16K on the wiki pool, measured before this
  join)."""
  by_doc: dict[int, list[Span]] = collections.defaultdict(list)
  for span in spans:
    by_doc[span[1]].append(span)
  out = []
  for pieces in by_doc.values():
    starts = collections.defaultdict(list)
    for span in sorted(pieces, key=lambda x: x[2], reverse=True):
      starts[span[2]].append(span)
    for span in sorted(pieces, key=lambda x: x[2]):
      if span not in starts[span[2]]:
        continue  # already joined onto an earlier piece
      starts[span[2]].remove(span)
      keyword, doc, start, end = span
      while starts.get(end):
        end = starts[end].pop()[3]
      out.append((keyword, doc, start, end))
  return out


def shuffle_plans(plans: Sequence[Sequence[Span]], length: int,
                  rng: np.random.Generator) -> tuple[list[list[Span]], ShuffleStats]:
  """Quest's plans with the spans of every multi-span sample shuffled and packed back into
  `length`-token samples (module docstring), then all samples in a random order."""
  singles = [list(p) for p in plans if _is_single(p, length)]
  spans = join_pieces([s for p in plans if not _is_single(p, length) for s in p])
  stats = ShuffleStats(single_document_samples=len(singles), spans_in=len(spans),
                       same_keyword_adjacent_quest=_same_keyword_share(plans))
  queue = collections.deque(spans[i] for i in rng.permutation(len(spans)))
  waiting: collections.deque[Span] = collections.deque()
  packed: list[list[Span]] = []
  current: list[Span] = []
  filled = 0

  def next_span() -> Span | None:
    for _ in range(len(waiting)):  # the oldest waiting span whose document is not in the sample
      span = waiting.popleft()
      if all(span[1] != c[1] for c in current):
        return span
      waiting.append(span)
    while queue:
      span = queue.popleft()
      if all(span[1] != c[1] for c in current):
        return span
      waiting.append(span)
    return None

  while (span := next_span()) is not None:
    keyword, doc, start, end = span
    take = min(end - start, length - filled)
    current.append((keyword, doc, start, start + take))
    filled += take
    if start + take < end:
      stats.spans_cut += 1
      waiting.appendleft((keyword, doc, start + take, end))
    if filled == length:
      packed.append(current)
      current, filled = [], 0
  stats.tokens_dropped = filled + sum(e - s for _, _, s, e in waiting)
  everything = singles + packed
  out = [everything[i] for i in rng.permutation(len(everything))]
  stats.samples = len(out)
  stats.same_keyword_adjacent_shuffled = _same_keyword_share(out)
  return out, stats


def shuffled_shard(directory: Path, cfg: Any, doc_tokens: np.ndarray, *, length: int, shard: int,
                   num_shards: int, seed: int) -> tuple[list[list[Span]], ShuffleStats]:
  """The control's plans of one shard: Quest's plans of the same seed, shuffled."""
  plans, _ = plan_shard(directory, cfg, doc_tokens, length=length, shard=shard,
                        num_shards=num_shards, seed=seed)
  return shuffle_plans(plans, length, np.random.default_rng([seed, shard, num_shards, 1]))


class QuestShuffledMethod:
  """Quest's spans without its grouping (`longjax_<corpus>_questshuffled_<length>`)."""
  name = "questshuffled"
  options_type = QuestShuffledOptions
  reads = (QuestMethod.name,)  # build outputs it reads: an export's index fingerprint counts them

  def build(self, ctx: BuildContext) -> None:
    ctx.options(self)  # none to use; an unknown one is an error, not ignored
    quest_dir = ctx.method_dir(QuestMethod.name)
    if io.read_manifest(quest_dir) is None:
      raise ValueError(f"{self.name} reads Quest's build, and {quest_dir} has none: build "
                       f"`--methods quest,{self.name}` (quest first)")
    directory, cfg, doc_tokens, quest = read_build(ctx.index_dir, ctx.tokenizer)
    budgets, repacking = {}, {}
    for length in ctx.lengths:
      plans, stats = shuffled_shard(directory, cfg, doc_tokens, length=length, shard=0,
                                    num_shards=1, seed=cfg.seed)
      budgets[f"L{length}"] = quest_budget(plans, doc_tokens[doc_tokens >= 0], length)
      repacking[str(length)] = stats.summary()
      ctx.log(f"{self.name}: L={length}: {stats.samples} samples "
              f"({stats.single_document_samples} one-document samples kept), adjacent spans "
              f"sharing a keyword {stats.same_keyword_adjacent_quest:.3f} in Quest -> "
              f"{stats.same_keyword_adjacent_shuffled:.3f}; {stats.tokens_dropped} tokens "
              "left over")
    io.write_manifest(
        ctx.method_dir(self.name), kind=self.name,
        config={"reads": QuestMethod.name, "lengths": list(ctx.lengths)},
        inputs={"quest_manifest": io.fingerprint_json(quest["counts"])},
        counts={"documents": quest["counts"]["documents"], "budget": budgets,
                "repacking": repacking},
        skipped=quest.get("skipped", []),
        extra={"note": "Quest's samples of the same seed with the spans of its multi-document "
                       "samples shuffled and packed again; documents Quest skipped are listed "
                       "with Quest's reasons; the budget and repacking counts are for one "
                       "shard and the build seed"})

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    check_shard(shard, num_shards)
    artifacts.require_built(Path(index_dir) / self.name, method=self.name)
    directory, cfg, doc_tokens, _ = read_build(index_dir, tokenizer)
    plans, _ = shuffled_shard(directory, cfg, doc_tokens, length=length, shard=shard,
                              num_shards=num_shards, seed=seed)
    return materialize(plans, self.name, directory, doc_tokens, corpus.open_store(index_dir),
                       tokenizer=tokenizer, shard=shard, num_shards=num_shards, seed=seed)
