"""The build's stages after ingest as Beam pipelines, and their assembly in this process.

Three pipelines, each followed by this process (the driver) assembling what its workers wrote
with the writers the in-process build uses:

1. `per_document`: one task per fixed slice of the store: token counts
   (`contexts.count_tokens`), NExtLong chunks (`chunking.document_chunks`), document embedding
   blocks (`embed.embed_block`, where `embed_corpus` resumes from), Quest's query parts and
   their RAKE candidates (`queries.predict_part`, `queries.rake_part`). Assembled: the token
   counts file, the chunk store.
2. `per_chunk`, once the chunk store exists: chunk embedding blocks, and NExtLong's plans per
   slice of documents (their chunks' token counts, `nextlong.meta_documents` per length).
   Assembled: `nextlong/plans/` (`nextlong.write_plans`).
3. `corpus_wide`, once the driver has built the indexes (`neighbours.embed_and_index`: the
   recall-driven choice of the search needs exact search over all vectors): Quest's keyword
   choice and inverted index (pipeline/keywords.py) and the neighbour lists, searched shard by
   shard and merged per block of queries (pipeline/neighbours.py). Assembled:
   `quest/keywords/` (`keyword_stage.write_stage`), `neighbours/<name>-k<K>/`
   (`retrieval.write_lists`).

Work a previous run finished (same fingerprints) is left out of the pipelines.
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
from longjax.synth import chunking, corpus, embed
from longjax.synth.methods import contexts, neighbours
from longjax.synth.methods.base import BuildContext
from longjax.synth.pipeline import keywords, runner
from longjax.synth.pipeline import neighbours as beam_neighbours

SLICE = 4096  # documents per token-count, chunking or NExtLong-plan task
_DOCUMENT_EMBEDDING_METHODS = frozenset({"knn", "iclm"})  # nextlong embeds its chunks


class _Worker(beam.DoFn):
  """Runs one task (a fixed slice of work) and writes its output where it is assembled.

  The store, tokenizer, embedder, query predictor and chunk store are loaded on first use,
  once per worker process; the embedder and predictor run on the worker's accelerators when it
  has them. Yields (task label, rows done, seconds) for the per-row rates.
  """

  def __init__(self, opts: Any, scratch: Path):
    self.opts, self.scratch = opts, Path(scratch)

  def setup(self) -> None:
    self._loaded: dict[str, Any] = {}

  def _get(self, what: str) -> Any:
    if what not in self._loaded:
      self._loaded[what] = _load(what, self.opts)
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

  def _queries(self, part: int) -> int:
    from longjax.synth.methods.quest import queries  # pylint: disable=import-outside-toplevel
    store, cfg = self._get("store"), _options(self.opts, "quest")
    queries.predict_part(store, self._get("predictor"), _queries_dir(self.opts), store.doc_ids(),
                         part, seed=cfg.seed, part_size=cfg.query_part_size)
    return self._rake(part)

  def _rake(self, part: int) -> int:
    from longjax.synth.methods.quest import queries  # pylint: disable=import-outside-toplevel
    cfg = _options(self.opts, "quest")
    queries.rake_part(_queries_dir(self.opts), part, min_score=cfg.min_score)
    return min(cfg.query_part_size, len(self._get("store")) - part * cfg.query_part_size)

  def _plans(self, size: int, start: int, stop: int) -> int:
    from longjax.synth.methods import nextlong  # pylint: disable=import-outside-toplevel
    chunks, tokenizer = self._get(f"chunks-{size}"), self._get("tokenizer")
    doc_chunks = [chunks.chunks_of(d) for d in range(start, stop)]
    first = doc_chunks[0].start
    tokens = contexts.count_tokens(chunks, np.arange(first, doc_chunks[-1].stop), tokenizer,
                                   _quiet, with_boundaries=False)
    start_tokens, sep_tokens = nextlong.piece_tokens(tokenizer, _options(self.opts, "nextlong"))
    io.write_npy(self.scratch / "plans" / "tokens" / f"{start:012d}.npy", tokens)
    for n in self.opts.lengths:
      io.write_npy(self.scratch / "plans" / f"L{n}" / f"{start:012d}.npy",
                   nextlong.meta_documents(doc_chunks, tokens, length=n,
                                           start_tokens=start_tokens, sep_tokens=sep_tokens,
                                           first_doc=start, first_chunk=first))
    return stop - start


def _quiet(iterable, **_):
  """The progress display of a worker's task: none."""
  return iterable


def _load(what: str, opts: Any) -> Any:
  """One of the worker's heavy objects, built from the (picklable) build options."""
  if what == "store":
    return corpus.open_store(opts.out)
  if what == "tokenizer":
    from longjax.models.tokenizer import load_tokenizer_spec  # pylint: disable=import-outside-toplevel
    return load_tokenizer_spec(opts.tokenizer)
  if what == "embedder":
    from longjax.synth.build import make_build_embedder  # pylint: disable=import-outside-toplevel
    return make_build_embedder(opts)
  if what == "predictor":
    from longjax.synth.methods.quest.predict import make_predictor  # pylint: disable=import-outside-toplevel
    cfg = _options(opts, "quest")
    return make_predictor(cfg.predictor, checkpoint=cfg.checkpoint, **cfg.predictor_options)
  if what.startswith("chunks-"):
    return chunking.open_chunk_store(opts.out, int(what.split("-")[1]))
  raise ValueError(f"unknown worker object {what!r}")


def _options(opts: Any, method: str) -> Any:
  """`method`'s parsed options, as its build parses them."""
  from longjax.synth.methods import METHODS  # pylint: disable=import-outside-toplevel
  return METHODS[method].options_type.parse(method, opts.config.get(method, {}))


def _queries_dir(opts: Any) -> Path:
  return Path(opts.out) / "quest" / "queries"


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


def _document_tasks(opts: Any, ctx: BuildContext, names: Sequence[str],
                    log_fn: Callable[[str], None]) -> tuple[list[tuple], list[int]]:
  """(the per-document tasks, the NExtLong chunk sizes whose stores they make)."""
  n = len(ctx.store)
  tasks: list[tuple] = []
  if not contexts.token_counts_path(opts.out, ctx.store, ctx.tokenizer).exists():
    tasks += [("tokens", s, e) for s, e in runner.slices(n, SLICE)]
  sizes = []
  if "nextlong" in names:
    size = _options(opts, "nextlong").chunk_size
    config, inputs = chunking.chunk_config(ctx.store, size)
    if not io.is_complete(chunking.chunk_dir(opts.out, size), config=config, inputs=inputs):
      sizes = [size]
      tasks += [("chunks", size, s, e) for s, e in runner.slices(n, SLICE)]
  if _DOCUMENT_EMBEDDING_METHODS.intersection(names):
    tasks += _embed_tasks(opts, ctx.store, ctx.embedder, "docs")
  if "quest" in names:
    from longjax.synth.methods.quest import queries  # pylint: disable=import-outside-toplevel
    cfg = _options(opts, "quest")
    todo = queries.prepare(_queries_dir(opts), _load("predictor", opts), ctx.store.doc_ids(),
                           seed=cfg.seed, part_size=cfg.query_part_size, log=log_fn)
    tasks += [("queries", i) for i in todo]
    tasks += [("rake", i) for i in queries.rake_todo(_queries_dir(opts), min_score=cfg.min_score)]
  return tasks, sizes


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


def _chunk_tasks(opts: Any, ctx: BuildContext, names: Sequence[str]
                 ) -> tuple[list[tuple], tuple[Path, dict[str, Any]] | None]:
  """(the per-chunk tasks, where and under which key NExtLong's plans are assembled, or None
  when they are finished or not built)."""
  if "nextlong" not in names:
    return [], None
  from longjax.synth.methods import nextlong  # pylint: disable=import-outside-toplevel
  cfg = _options(opts, "nextlong")
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
  from longjax.synth.methods import nextlong  # pylint: disable=import-outside-toplevel
  parts = lambda sub: [np.load(p) for p in sorted((scratch / "plans" / sub).glob("*.npy"))]
  nextlong.write_plans(directory, key, np.concatenate(parts("tokens")),
                       {n: np.concatenate(parts(f"L{n}")).reshape(-1, 3) for n in lengths})


# ---------------------------------------------------------------------------------------------
# 3. Corpus-wide: Quest's keyword index, neighbour lists


def _list_requests(opts: Any, names: Sequence[str]) -> list[beam_neighbours.ListRequest]:
  """The neighbour lists the methods' builds will read."""
  requests = [beam_neighbours.ListRequest(*neighbours.document_lists(_options(opts, m).k_nn))
              for m in ("knn", "iclm") if m in names]
  if "nextlong" in names:
    cfg = _options(opts, "nextlong")
    if cfg.precompute_k:
      requests.append(beam_neighbours.ListRequest(f"chunks-{cfg.chunk_size}", cfg.precompute_k))
  return requests


def _keyword_stage(opts: Any, ctx: BuildContext, names: Sequence[str]) -> dict[str, Any] | None:
  """What the keyword branch needs, or None when Quest is not built or its stage is finished."""
  if "quest" not in names:
    return None
  from longjax.synth.methods.quest import keyword_stage  # pylint: disable=import-outside-toplevel
  cfg = _options(opts, "quest")
  token_counts = contexts.token_counts_path(opts.out, ctx.store, ctx.tokenizer)
  key = keyword_stage.stage_key(cfg, _queries_dir(opts), token_counts)
  directory = keyword_stage.stage_dir(ctx.method_dir("quest"))
  if io.is_complete(directory, **key):
    return None
  return {"directory": directory, "key": key, "cfg": cfg, "token_counts": token_counts,
          "parts": math.ceil(len(ctx.store) / cfg.query_part_size)}


def _corpus_wide(opts: Any, ctx: BuildContext, names: Sequence[str], scratch: Path,
                 log_fn: Callable[[str], None]) -> dict[str, float]:
  requests = _list_requests(opts, names)
  indexes = {name: neighbours.embed_and_index(ctx, name, *_collection(ctx.store, name, opts.out))
             for name in dict.fromkeys(r.name for r in requests)}
  pending = beam_neighbours.pending(opts.out, requests, indexes)
  quest = _keyword_stage(opts, ctx, names)
  if not pending and quest is None:
    return {}

  def build(p: beam.Pipeline) -> None:
    if quest is not None:
      keywords.add_branch(p, quest["cfg"], _queries_dir(opts), quest["parts"],
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


def _run_tasks(opts: Any, name: str, tasks: list[tuple], scratch: Path,
               log_fn: Callable[[str], None]) -> dict[str, float]:
  """Runs `tasks` on the workers; returns wall seconds and, per task label, worker seconds and
  rows (written to `<scratch>/rates` and read back here)."""
  def build(p: beam.Pipeline) -> None:
    results = (p | "tasks" >> beam.Create(tasks) | beam.Reshuffle()
               | "work" >> beam.ParDo(_Worker(opts, scratch)))
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
  names = [m.name for m in methods]
  if not names:
    return {}
  scratch = runner.scratch(opts)
  timings: dict[str, float] = {}
  tasks, sizes = _document_tasks(opts, ctx, names, log_fn)
  if tasks:
    timings.update(_run_tasks(opts, "per_document", tasks, scratch, log_fn))
    t0 = time.perf_counter()
    _assemble_documents(opts, ctx, tasks, sizes, scratch)
    timings["assemble_per_document"] = time.perf_counter() - t0
  tasks, plans = _chunk_tasks(opts, ctx, names)
  if tasks:
    timings.update(_run_tasks(opts, "per_chunk", tasks, scratch, log_fn))
  if plans is not None:
    t0 = time.perf_counter()
    _assemble_plans(*plans, ctx.lengths, scratch)
    timings["assemble_per_chunk"] = time.perf_counter() - t0
  timings.update(_corpus_wide(opts, ctx, names, scratch, log_fn))
  shutil.rmtree(scratch, ignore_errors=True)
  return timings
