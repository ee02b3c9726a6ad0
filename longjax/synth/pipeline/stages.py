"""The build's stages after ingest as Beam pipelines, and their assembly in this process.

Three pipelines, each followed by this process (the driver) assembling what its workers wrote
with the writers the in-process build uses:

1. `per_document`: one task per fixed slice of the store: token counts
   (`contexts.count_tokens`), NExtLong chunks (`chunking.document_chunks`), document embedding
   blocks (`embed.embed_block`, where `embed_corpus` resumes from), Quest's query parts and
   their RAKE candidates (`queries.predict_part`, `queries.rake_part`). Assembled: the token
   counts file, the chunk store.
2. `per_chunk`, once the chunk store exists: chunk embedding blocks, and NExtLong's plans per
   slice of documents (`nextlong.slice_plans`: their chunks' token counts, their
   meta-documents per length). Assembled: `nextlong/plans/` (`nextlong.write_plans`).
3. `corpus_wide`, once the driver has built the indexes (`neighbours.embed_and_index`: the
   recall-driven choice of the search needs exact search over all vectors): Quest's keyword
   choice and inverted index (pipeline/keywords.py) and the neighbour lists, searched shard by
   shard and merged per block of queries (pipeline/neighbours.py). Assembled:
   `quest/keywords/` (`keyword_stage.write_stage`), `neighbours/<name>-k<K>/`
   (`retrieval.write_lists`).

Only finished artifacts are left out of the pipelines: the token counts file, a complete chunk
store, complete embeddings or saved embedding blocks, the query parts and RAKE parts already
written, and a complete `nextlong/plans/`, `quest/keywords/` or neighbour list (each with the
same fingerprints). Everything else is redone: the scratch directory (`runner.scratch`, which
holds the slices' token counts, chunks and plans and the keyword and list records before they
are assembled) is emptied at the start of every run, so a killed run's unassembled work is
computed again.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import apache_beam as beam
import numpy as np

from longjax import io
from longjax.models.tokenizer import load_tokenizer_spec
from longjax.synth import chunking, corpus, embed
from longjax.synth.methods import contexts, neighbours, nextlong
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.quest import keyword_stage, predict, queries
from longjax.synth.pipeline import keywords, runner
from longjax.synth.pipeline import neighbours as beam_neighbours

SLICE = 4096  # documents per token-count, chunking or NExtLong-plan task
_DOCUMENT_EMBEDDING_METHODS = frozenset({"knn", "iclm"})  # nextlong embeds its chunks


class _Worker(beam.DoFn):
  """Runs one task (a fixed slice of work) and writes its output where it is assembled.

  The store, tokenizer, embedder, query predictor and chunk store are loaded on first use,
  once per worker process; the embedder and predictor run on the worker's accelerators when it
  has them. `cfgs`: the options of the methods built, by name, as the driver parsed them.
  Yields (task label, rows done, seconds) for the per-row rates.
  """

  def __init__(self, opts: Any, scratch: Path, cfgs: dict[str, Any]):
    self.opts, self.scratch, self.cfgs = opts, Path(scratch), cfgs

  def setup(self) -> None:
    self._loaded: dict[str, Any] = {}

  def _get(self, what: str) -> Any:
    if what not in self._loaded:
      self._loaded[what] = _load(what, self.opts, self.cfgs)
    return self._loaded[what]

  def process(self, task: tuple[Any, ...]) -> Iterator[tuple[str, int, float]]:
    t0 = time.perf_counter()
    kind, *args = task
    rows = getattr(self, f"_{kind}")(*args)
    yield f"embed_{args[0]}" if kind == "embed" else kind, rows, time.perf_counter() - t0

  def _tokens(self, start: int, stop: int) -> int:
    counts = contexts.count_tokens(self._get("store"), np.arange(start, stop),
                                   self._get("tokenizer"), _quiet)
    io.write_npy(self.scratch / "tokens" / f"{start:012d}.npy", counts)
    return stop - start

  def _chunks(self, size: int, start: int, stop: int) -> int:
    store = self._get("store")
    lines = []
    for d in range(start, stop):
      kept, blank = chunking.document_chunks(store.text(d), size)
      lines.append(json.dumps([d, store.key(d), kept, blank], ensure_ascii=False) + "\n")
    io.write_text(self.scratch / f"chunks-{size}" / f"{start:012d}.jsonl", "".join(lines))
    return stop - start

  def _embed(self, collection: str, start: int) -> int:
    source, inputs = _collection(self._get("store"), collection, self.opts.out)
    embedder = self._get("embedder")
    stop = min(start + embed.BLOCK_SIZE, len(source))
    path = embed.block_path(self.opts.out / "embeddings" / collection, embedder, inputs,
                            embed.BLOCK_SIZE, start)
    io.write_npy(path, embed.embed_block(source, embedder, start, stop,
                                         batch_size=embed.BATCH_SIZE))
    return stop - start

  def _queries(self, directory: Path, part: int) -> int:
    store, cfg = self._get("store"), self.cfgs["quest"]
    queries.predict_part(store, self._get("predictor"), directory, store.doc_ids(), part,
                         seed=cfg.seed, part_size=cfg.query_part_size)
    return self._rake(directory, part)

  def _rake(self, directory: Path, part: int) -> int:
    cfg = self.cfgs["quest"]
    queries.rake_part(directory, part, min_score=cfg.min_score)
    return min(cfg.query_part_size, len(self._get("store")) - part * cfg.query_part_size)

  def _plans(self, size: int, start: int, stop: int) -> int:
    tokens, plans = nextlong.slice_plans(self._get(f"chunks-{size}"), self._get("tokenizer"),
                                         self.cfgs["nextlong"], self.opts.lengths, start, stop,
                                         progress=_quiet)
    io.write_npy(self.scratch / "plans" / "tokens" / f"{start:012d}.npy", tokens)
    for n, plan in plans.items():
      io.write_npy(self.scratch / "plans" / f"L{n}" / f"{start:012d}.npy", plan)
    return stop - start


def _quiet(iterable, **_):
  """The progress display of a worker's task: none."""
  return iterable


def _load(what: str, opts: Any, cfgs: dict[str, Any]) -> Any:
  """One of the worker's heavy objects, built from the (picklable) build and method options."""
  if what == "store":
    return corpus.open_store(opts.out)
  if what == "tokenizer":
    return load_tokenizer_spec(opts.tokenizer)
  if what == "embedder":
    from longjax.synth.build import make_build_embedder  # pylint: disable=import-outside-toplevel
    return make_build_embedder(opts)
  if what == "predictor":
    cfg = cfgs["quest"]
    return predict.make_predictor(cfg.predictor, checkpoint=cfg.checkpoint,
                                  **cfg.predictor_options)
  if what.startswith("chunks-"):
    return chunking.open_chunk_store(opts.out, int(what.split("-")[1]))
  raise ValueError(f"unknown worker object {what!r}")


def _collection(store: corpus.DocumentStore, name: str, index_dir: Path) -> tuple[Any, dict]:
  """(source, inputs) of an embedding collection, as the methods' builds name them."""
  if name == "docs":
    _, source, inputs = neighbours.document_collection(store)
  else:
    size = int(name.split("-")[1])
    _, source, inputs = neighbours.chunk_collection(chunking.open_chunk_store(index_dir, size))
  return source, inputs


def _embed_tasks(opts: Any, store: corpus.DocumentStore, embedder: Any,
                 collection: str) -> list[tuple]:
  """The embedding blocks of `collection` that neither `vectors.npy` nor a saved block holds."""
  source, inputs = _collection(store, collection, opts.out)
  out = Path(opts.out) / "embeddings" / collection
  if io.is_complete(out, config=embed.embedding_config(embedder, embed.BLOCK_SIZE), inputs=inputs):
    return []
  return [("embed", collection, s) for s in range(0, len(source), embed.BLOCK_SIZE)
          if not embed.block_path(out, embedder, inputs, embed.BLOCK_SIZE, s).exists()]


# ---------------------------------------------------------------------------------------------
# 1. Per document


def _document_tasks(opts: Any, ctx: BuildContext, cfgs: dict[str, Any],
                    log_fn: Callable[[str], None]) -> tuple[list[tuple], list[int]]:
  """(the per-document tasks, the NExtLong chunk sizes whose stores they make)."""
  n = len(ctx.store)
  tasks: list[tuple] = []
  if not contexts.token_counts_path(opts.out, ctx.store, ctx.tokenizer).exists():
    tasks += [("tokens", s, e) for s, e in runner.slices(n, SLICE)]
  sizes = []
  if "nextlong" in cfgs:
    size = cfgs["nextlong"].chunk_size
    config, inputs = chunking.chunk_config(ctx.store, size)
    if not io.is_complete(chunking.chunk_dir(opts.out, size), config=config, inputs=inputs):
      sizes = [size]
      tasks += [("chunks", size, s, e) for s, e in runner.slices(n, SLICE)]
  if _DOCUMENT_EMBEDDING_METHODS.intersection(cfgs):
    tasks += _embed_tasks(opts, ctx.store, ctx.embedder, "docs")
  if "quest" in cfgs:
    tasks += _query_tasks(ctx, cfgs["quest"], log_fn)
  return tasks, sizes


def _query_tasks(ctx: BuildContext, cfg: Any, log_fn: Callable[[str], None]) -> list[tuple]:
  """Quest's query parts still to predict (then score), and the predicted parts still to
  score; the predictor is described here without loading it (the workers load it)."""
  directory = queries.queries_dir(ctx.method_dir("quest"))
  description = predict.describe_predictor(cfg.predictor, checkpoint=cfg.checkpoint,
                                           **cfg.predictor_options)
  todo = queries.prepare(directory, description, ctx.store.doc_ids(), seed=cfg.seed,
                         part_size=cfg.query_part_size, log=log_fn)
  return ([("queries", directory, i) for i in todo]
          + [("rake", directory, i) for i in queries.rake_todo(directory, min_score=cfg.min_score)])


def _assemble_documents(opts: Any, ctx: BuildContext, tasks: list[tuple], sizes: list[int],
                        scratch: Path) -> None:
  if any(t[0] == "tokens" for t in tasks):
    io.write_npy(contexts.token_counts_path(opts.out, ctx.store, ctx.tokenizer),
                 np.concatenate([np.load(p) for p in sorted((scratch / "tokens").glob("*.npy"))]))
  for size in sizes:
    chunking.write_chunk_store(_chunk_records(scratch / f"chunks-{size}"),
                               chunking.chunk_dir(opts.out, size), store=ctx.store, size=size)


def _chunk_records(directory: Path) -> Iterator[tuple[int, str, list[str], int]]:
  for path in sorted(directory.glob("*.jsonl")):
    with open(path, encoding="utf-8") as f:
      for line in f:
        d, key, kept, blank = json.loads(line)
        yield d, key, kept, blank


# ---------------------------------------------------------------------------------------------
# 2. Per chunk


def _chunk_tasks(opts: Any, ctx: BuildContext, cfgs: dict[str, Any]
                 ) -> tuple[list[tuple], tuple[Path, dict[str, Any]] | None]:
  """(the per-chunk tasks, where and under which key NExtLong's plans are assembled, or None
  when they are finished or not built)."""
  if "nextlong" not in cfgs:
    return [], None
  cfg = cfgs["nextlong"]
  tasks = _embed_tasks(opts, ctx.store, ctx.embedder, f"chunks-{cfg.chunk_size}")
  directory = ctx.method_dir("nextlong") / nextlong.PLANS
  key = nextlong.plans_key(chunking.open_chunk_store(opts.out, cfg.chunk_size), ctx.tokenizer,
                           cfg, ctx.lengths)
  if io.is_complete(directory, **key):
    return tasks, None
  return tasks + [("plans", cfg.chunk_size, s, e)
                  for s, e in runner.slices(len(ctx.store), SLICE)], (directory, key)


def _assemble_plans(directory: Path, key: dict[str, Any], lengths: Sequence[int],
                    scratch: Path) -> None:
  """Writes the plans from the slices' token counts and [M, 3] meta-document rows, in order."""
  def joined(sub: str) -> np.ndarray:
    return np.concatenate([np.load(p) for p in sorted((scratch / "plans" / sub).glob("*.npy"))])

  nextlong.write_plans(directory, key, joined("tokens"), {n: joined(f"L{n}") for n in lengths})


# ---------------------------------------------------------------------------------------------
# 3. Corpus-wide: Quest's keyword index, neighbour lists


def _list_requests(cfgs: dict[str, Any]) -> list[beam_neighbours.ListRequest]:
  """The neighbour lists the methods' builds will read."""
  requests = [beam_neighbours.ListRequest(*neighbours.document_lists(cfgs[m].k_nn))
              for m in ("knn", "iclm") if m in cfgs]
  if "nextlong" in cfgs:
    cfg = cfgs["nextlong"]
    if cfg.precompute_k:
      requests.append(beam_neighbours.ListRequest(f"chunks-{cfg.chunk_size}", cfg.precompute_k))
  return requests


def _keyword_stage(ctx: BuildContext, cfgs: dict[str, Any]) -> dict[str, Any] | None:
  """What the keyword branch needs, or None when Quest is not built or its stage is finished."""
  if "quest" not in cfgs:
    return None
  cfg, quest_dir = cfgs["quest"], ctx.method_dir("quest")
  queries_dir = queries.queries_dir(quest_dir)
  token_counts = contexts.token_counts_path(ctx.index_dir, ctx.store, ctx.tokenizer)
  key = keyword_stage.stage_key(cfg, queries_dir, token_counts)
  directory = keyword_stage.stage_dir(quest_dir)
  if io.is_complete(directory, **key):
    return None
  return {"directory": directory, "key": key, "cfg": cfg, "queries_dir": queries_dir,
          "token_counts": token_counts, "parts": math.ceil(len(ctx.store) / cfg.query_part_size)}


def _corpus_wide(opts: Any, ctx: BuildContext, cfgs: dict[str, Any], scratch: Path,
                 log_fn: Callable[[str], None]) -> dict[str, float]:
  requests = _list_requests(cfgs)
  indexes = {name: neighbours.embed_and_index(ctx, name, *_collection(ctx.store, name, opts.out))
             for name in dict.fromkeys(r.name for r in requests)}
  pending = beam_neighbours.pending(opts.out, requests, indexes)
  quest = _keyword_stage(ctx, cfgs)
  if not pending and quest is None:
    return {}

  def build(p: beam.Pipeline) -> None:
    if quest is not None:
      keywords.add_branch(p, quest["cfg"], quest["queries_dir"], quest["parts"],
                          quest["token_counts"], scratch)
    if pending:
      beam_neighbours.add_branch(p, opts.out, pending, indexes, scratch)

  seconds = runner.run(opts, "corpus_wide", build, log_fn)
  t0 = time.perf_counter()
  if quest is not None:
    keywords.assemble(quest["directory"], quest["key"], quest["cfg"], scratch)
  beam_neighbours.assemble(opts.out, pending, indexes, scratch)
  return {"pipeline_corpus_wide": seconds, "assemble_corpus_wide": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------


def _run_tasks(opts: Any, cfgs: dict[str, Any], name: str, tasks: list[tuple], scratch: Path,
               log_fn: Callable[[str], None]) -> dict[str, float]:
  """Runs `tasks` on the workers; returns wall seconds and, per task label, worker seconds and
  rows (written to `<scratch>/rates` and read back here)."""
  def build(p: beam.Pipeline) -> None:
    results = (p | "tasks" >> beam.Create(tasks) | beam.Reshuffle()
               | "work" >> beam.ParDo(_Worker(opts, scratch, cfgs)))
    runner.write_records(results, scratch / "rates" / name, "rates")

  out: dict[str, float] = {f"pipeline_{name}": runner.run(opts, name, build, log_fn)}
  for label, rows, seconds in runner.read_records(scratch / "rates" / name):
    out[f"{label}_worker_seconds"] = out.get(f"{label}_worker_seconds", 0.0) + seconds
    out[f"{label}_rows"] = out.get(f"{label}_rows", 0) + rows
  return out


def run(opts: Any, ctx: BuildContext, methods: Sequence[Any],
        log_fn: Callable[[str], None]) -> dict[str, float]:
  """Runs the stages the `methods` need (module docstring) and assembles their artifacts;
  returns seconds per pipeline and per assembly in this process (`assemble_<pipeline>`, the
  build's sequential part) and, per task label, worker seconds and rows."""
  cfgs = {m.name: ctx.options(m) for m in methods}
  if not cfgs:
    return {}
  scratch = runner.scratch(opts)
  timings: dict[str, float] = {}
  tasks, sizes = _document_tasks(opts, ctx, cfgs, log_fn)
  if tasks:
    timings.update(_run_tasks(opts, cfgs, "per_document", tasks, scratch, log_fn))
    t0 = time.perf_counter()
    _assemble_documents(opts, ctx, tasks, sizes, scratch)
    timings["assemble_per_document"] = time.perf_counter() - t0
  tasks, plans = _chunk_tasks(opts, ctx, cfgs)
  if tasks:
    timings.update(_run_tasks(opts, cfgs, "per_chunk", tasks, scratch, log_fn))
  if plans is not None:
    t0 = time.perf_counter()
    _assemble_plans(*plans, ctx.lengths, scratch)
    timings["assemble_per_chunk"] = time.perf_counter() - t0
  timings.update(_corpus_wide(opts, ctx, cfgs, scratch, log_fn))
  shutil.rmtree(scratch, ignore_errors=True)
  return timings
