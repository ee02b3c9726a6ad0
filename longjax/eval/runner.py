"""Runs a model over the synthetic tasks: build examples, generate greedily, score each sample.

Base-model protocol: no chat template; the model sees the tokenizer's document start tokens
(`Tokenizer.boundaries.start`, usually none) + task input + answer prefix and continues greedily
until a stop token or the task's generation length (optionally capped lower). Stop tokens are EOS
and the document end tokens of the boundary convention: a model trained on documents that end
with `<|endoftext|>` ends its answer with that token, not with the chat EOS.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from longjax.eval.scoring import sample_score
from longjax.eval.task import ExampleGenerator, Task


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
  for i in range(0, len(items), size):
    yield items[i:i + size]


def run_task(model, generator: ExampleGenerator, task: Task, length: int, num_samples: int, *,
             batch_size: int = 1, max_new_tokens: int | None = None, prefill_chunk: int = 512,
             progress: Callable[[Iterable], Iterable] = lambda x: x) -> list[dict]:
  """Generates and scores `num_samples` examples of (task, length); one record per sample.

  Each record holds the example's identity (task, length, index, seed), prompt size, gold
  outputs, the decoded prediction, its score (0..1) and the needle token positions.
  """
  from longjax.models import generate
  tok = generator.tokenizer
  examples = generator.examples(task, length, num_samples)
  new_tokens = min(task.tokens_to_generate, max_new_tokens or task.tokens_to_generate)
  stop = stop_ids(tok)
  records = []
  for batch in progress(list(_batches(examples, batch_size))):
    start = time.perf_counter()
    outs = generate(model, [generator.encode_prompt(e) for e in batch], new_tokens,
                    eos_id=stop, prefill_chunk=prefill_chunk)
    seconds = (time.perf_counter() - start) / len(batch)
    for ex, ids in zip(batch, outs):
      pred = tok.decode([i for i in ids if i not in stop])
      records.append({
          "task": ex.task, "length": ex.length, "index": ex.index, "seed": ex.seed,
          "num_tokens": ex.num_tokens, "num_units": ex.num_units, "outputs": list(ex.outputs),
          "prediction": pred, "generated_tokens": len(ids), "max_new_tokens": new_tokens,
          "score": sample_score(task.metric, pred, ex.outputs),
          "needle_positions": list(ex.needle_positions), "seconds": round(seconds, 3)})
  return records


def stop_ids(tokenizer) -> tuple[int, ...]:
  """Token ids that end a generated answer: EOS and the document end tokens, sorted."""
  ids = set(tokenizer.boundaries.end)
  if tokenizer.eos_id is not None:
    ids.add(tokenizer.eos_id)
  return tuple(sorted(ids))


def gold_answer_text(outputs: Sequence[str]) -> str:
  """The gold continuation scored by `gold_loglik`: the references joined as RULER lists them."""
  return " " + ", ".join(outputs)


def gold_loglik(model, generator: ExampleGenerator, task: Task, length: int,
                num_samples: int) -> list[dict]:
  """Secondary metric (a labelled deviation): teacher-forced NLL of the gold answer.

  The model reads start tokens + prompt + gold answer tokens (`gold_answer_text`); per example we keep
  the mean NLL over the answer tokens and whether every answer token was the argmax. This is a
  smooth signal for models too weak to score on generation.
  """
  from longjax.eval.position_loss import token_nll
  tok = generator.tokenizer
  out = []
  for ex in generator.examples(task, length, num_samples):
    prompt = generator.encode_prompt(ex)
    answer = tok.encode(gold_answer_text(ex.outputs))
    nll, hit = token_nll(model, np.asarray([prompt + answer]), with_hits=True)
    a = slice(len(prompt) - 1, len(prompt) - 1 + len(answer))
    out.append({"task": ex.task, "length": ex.length, "index": ex.index,
                "gold_nll": float(nll[0, a].mean()), "gold_exact": bool(hit[0, a].all()),
                "gold_tokens": len(answer)})
  return out


def task_scores(records: Iterable[Mapping]) -> dict[str, dict[int, float]]:
  """Mean score x 100 per task and length from per-sample records."""
  acc: dict[str, dict[int, list[float]]] = {}
  for r in records:
    acc.setdefault(r["task"], {}).setdefault(r["length"], []).append(r["score"])
  return {t: {n: 100.0 * sum(v) / len(v) for n, v in sorted(by.items())}
          for t, by in acc.items()}


def per_sample(records: Sequence[Mapping], gold: Sequence[Mapping] | None = None) -> dict:
  """Per-example values by task and length, for statistics over samples (bootstrap intervals).

  `scores[task][length][i]` is example i's score x 100 (the scale of `task_scores`, whose value
  is the mean of this list); with `gold` (the `gold_loglik` records),
  `gold_loglik[task][length]` holds per-example lists `nll` (mean NLL per answer token),
  `exact` (every answer token was the argmax) and `tokens` (answer length), indexed likewise.
  Every list is ordered by example index and must cover indices 0..n-1.
  """
  def by_index(rows: Iterable[Mapping]) -> dict[str, dict[int, list[Mapping]]]:
    acc: dict[str, dict[int, list[Mapping]]] = {}
    for r in rows:
      acc.setdefault(r["task"], {}).setdefault(r["length"], []).append(r)
    for by_len in acc.values():
      for length, rs in by_len.items():
        rs.sort(key=lambda r: r["index"])
        if [r["index"] for r in rs] != list(range(len(rs))):
          raise ValueError(f"per_sample: task {rs[0]['task']} at {length} lacks example "
                           f"indices 0..{len(rs) - 1}")
    return acc

  out: dict = {"scores": {t: {n: [100.0 * r["score"] for r in rs] for n, rs in by_len.items()}
                          for t, by_len in by_index(records).items()},
               "gold_loglik": None}
  if gold is not None:
    out["gold_loglik"] = {
        t: {n: {"nll": [r["gold_nll"] for r in rs], "exact": [r["gold_exact"] for r in rs],
                "tokens": [r["gold_tokens"] for r in rs]} for n, rs in by_len.items()}
        for t, by_len in by_index(gold).items()}
  return out
