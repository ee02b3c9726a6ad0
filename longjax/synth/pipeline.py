"""The per-document stages of `synth build` as Apache Beam pipelines (`build --runner ...`).

    python -m longjax.synth build --corpus my_corpus_dir --out idx --methods quest,nextlong \
        --embedder minilm --runner DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing

(`--runner DataflowRunner --project P --region R --temp_location gs://...`, or Flink/Spark
options, pass through the same way: every option `synth build` does not know goes to Beam.)

Beam runs what is per document; this process then writes each artifact in store order with the
writers the single-process build uses, and the methods' plans (`method.build`) run here as
before, finding every per-document artifact finished. Two pipelines:

1. `ingest`: one element per input file: read, validate and hash each item
   (`corpus.check_document`), exact dedup grouped by content hash, then the winners grouped by
   id (`corpus.Dedup` per group, in input order), then `corpus.StoreWriter` in input order.
2. `per_document`: one element per fixed slice of the store: token counts (`contexts`), NExtLong
   chunks (`chunking.document_chunks`), embedding blocks (`embed.embed_block`, written where
   `embed_corpus` resumes from), Quest's query parts (`queries.predict_part`, where
   `predict_queries` resumes from) and their RAKE candidates (`queries.rake_part`); then, once the
   chunk stores exist, their embedding blocks. Quest's keyword choice (it needs every document's
   candidates) and inverted index are built in this process by its `build`.

Determinism: every unit of work is a fixed slice (an input file, a row range, a query part), its
output lands at a path named by that slice, and this process assembles them in order, so the
outputs do not depend on the number of workers, shards or the order elements run in.

Workers share the index directory with this process (a local disk for DirectRunner; a shared
mount such as GCS FUSE or Filestore in a cluster). A worker loads the embedder, the query
predictor and the tokenizer once (`DoFn.setup`, lazily), on its accelerators when it has them.
Nearest-neighbour search is not here: the methods' builds gather the vectors and build one index
(`retrieval.build_index` / `neighbour_lists`), the seam a sharded search replaces.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from longjax import io
from longjax.documents import RawDocument, input_files, iter_file_documents
from longjax.synth import chunking, corpus, embed

SCRATCH = ".beam"  # under the index directory; removed when the build's pipelines finished
SLICE = 4096  # store rows per token-count or chunking task
_DOCUMENT_EMBEDDING_METHODS = frozenset({"knn", "iclm"})  # nextlong embeds its chunks


def options_for(opts: Any) -> PipelineOptions:
  """Beam options: `--runner` plus the pass-through options (`--direct_num_workers=2`,
  Dataflow's `--project`, `--region`, `--temp_location`...)."""
  return PipelineOptions(["--runner", opts.runner, *opts.pipeline_options])


def _run(opts: Any, name: str, build: Callable[[beam.Pipeline], None],
         log_fn: Callable[[str], None]) -> float:
  t0 = time.perf_counter()
  with beam.Pipeline(options=options_for(opts)) as p:
    build(p)
  seconds = time.perf_counter() - t0
  log_fn(f"pipeline {name}: {seconds:.1f}s on {opts.runner}")
  return seconds


# ---------------------------------------------------------------------------------------------
# 1. Ingest and exact dedup


class _ReadFile(beam.DoFn):
  """Input file i -> its checked items in `<scratch>/ingest/<i>.jsonl`; yields (hash, (pos,
  key)) of the valid ones for the dedup groups."""

  def __init__(self, files: Sequence[Path], source: str, text_mode: bool, text_field: str,
               max_chars: int, scratch: Path):
    self.files, self.source, self.text_mode = [str(f) for f in files], source, text_mode
    self.text_field, self.max_chars, self.scratch = text_field, max_chars, str(scratch)

  def process(self, i: int) -> Iterator[tuple[str, tuple[tuple[int, int], str]]]:
    lines = []
    raws = iter_file_documents(Path(self.files[i]), self.source, text_mode=self.text_mode,
                               text_field=self.text_field, max_bytes=4 * self.max_chars)
    for j, raw in enumerate(raws):
      c = corpus.check_document(raw, self.max_chars)
      lines.append(json.dumps({"source": raw.source, "raw_key": raw.key, "title": raw.title,
                               "text": c.text, "hash": c.hash, "key": c.key,
                               "reason": c.reason, "detail": c.detail}, ensure_ascii=False))
      if c.text is not None:
        yield c.hash, ((i, j), c.key)
    io.write_text(Path(self.scratch) / "ingest" / f"{i:06d}.jsonl",
                  "".join(line + "\n" for line in lines))


def _hash_group(group: tuple[str, Iterable[tuple[tuple[int, int], str]]],
                heldout: frozenset[str]) -> Iterator[tuple[tuple[int, int], str, str, str]]:
  """(pos, key, reason, detail) for every copy of one text, by `corpus.Dedup` in input order."""
  h, members = group
  dedup = corpus.Dedup(heldout)
  for pos, key in sorted(members):
    yield (pos, key, *dedup.by_hash(h, key))


def _key_group(group: tuple[str, Iterable[tuple[int, int]]]
               ) -> Iterator[tuple[tuple[int, int], str, str]]:
  """(pos, reason, detail) for every winning text that claims one id, in input order."""
  key, positions = group
  dedup = corpus.Dedup()
  for pos in sorted(positions):
    yield (pos, *dedup.by_key(key))


def ingest(opts: Any, out: Path, heldout: Iterable[str],
           log_fn: Callable[[str], None]) -> corpus.DocumentStore:
  """The corpus store of `opts.corpus`, as `corpus.ingest_corpus` writes it, read and
  deduplicated by Beam (or reopened when an identical one is finished)."""
  heldout = frozenset(heldout)
  config, inputs = corpus.ingest_config(opts.corpus, max_chars=opts.max_chars,
                                        text_field=opts.text_field, heldout_hashes=heldout)
  if io.is_complete(out, config=config, inputs=inputs):
    return corpus.DocumentStore(out)
  files, text_mode = input_files(opts.corpus)
  scratch = _scratch(opts)

  def build(p: beam.Pipeline) -> None:
    valid = (p | "files" >> beam.Create(range(len(files))) | beam.Reshuffle()
             | "read" >> beam.ParDo(_ReadFile(files, opts.corpus, text_mode, opts.text_field,
                                              opts.max_chars, scratch)))
    by_hash = (valid | "group by hash" >> beam.GroupByKey()
               | "dedup text" >> beam.FlatMap(_hash_group, heldout))
    by_key = (by_hash | "winners" >> beam.Filter(lambda r: not r[2])
              | "by key" >> beam.Map(lambda r: (r[1], r[0]))
              | "group by key" >> beam.GroupByKey() | "dedup id" >> beam.FlatMap(_key_group))
    text_skips = by_hash | "text skips" >> beam.Map(lambda r: (r[0], r[2], r[3]))
    ((text_skips, by_key) | beam.Flatten() | beam.Filter(lambda r: bool(r[1]))
     | beam.Map(json.dumps) | beam.io.WriteToText(str(scratch / "skips" / "part")))

  seconds = _run(opts, "ingest", build, log_fn)
  skips = {tuple(pos): (reason, detail) for pos, reason, detail in _read_lines(scratch / "skips")}
  writer = corpus.StoreWriter(out, max_chars=opts.max_chars, config=config, inputs=inputs)
  try:
    for i in range(len(files)):
      with open(scratch / "ingest" / f"{i:06d}.jsonl", encoding="utf-8") as f:
        for j, line in enumerate(f):
          r = json.loads(line)
          raw = RawDocument(r["source"], None, key=r["raw_key"], title=r["title"])
          checked = corpus.Checked(r["text"], r["hash"], r["key"], r["reason"], r["detail"])
          writer.add(raw, checked, *skips.get((i, j), ("", "")))
  except BaseException:
    writer.abort()
    raise
  store = writer.finish()
  shutil.rmtree(scratch, ignore_errors=True)
  log_fn(f"pipeline ingest: {store.manifest['counts']['read']} documents read in "
         f"{seconds:.1f}s")
  return store


def _read_lines(prefix_dir: Path) -> Iterator[Any]:
  for path in sorted(prefix_dir.glob("part-*")):
    with open(path, encoding="utf-8") as f:
      for line in f:
        yield json.loads(line)


def _scratch(opts: Any) -> Path:
  scratch = Path(opts.out) / SCRATCH
  shutil.rmtree(scratch, ignore_errors=True)  # a killed run's leftovers are never reused
  scratch.mkdir(parents=True)
  return scratch


# ---------------------------------------------------------------------------------------------
# 2. Per-document stages over the store


class _Worker(beam.DoFn):
  """Runs one task (a fixed slice of work) and writes its output where it is assembled.

  The store, tokenizer, embedder and query predictor are loaded on first use, once per worker
  process; the embedder and predictor run on the worker's accelerators when it has them.
  Yields (task kind, rows done, seconds) for the per-document rates.
  """

  def __init__(self, opts: Any, scratch: Path):
    self.opts, self.scratch = opts, str(scratch)

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
    yield kind, rows, time.perf_counter() - t0

  def _tokens(self, start: int, stop: int) -> int:
    from longjax.synth.methods import contexts  # pylint: disable=import-outside-toplevel
    counts = contexts.count_tokens(self._get("store"), np.arange(start, stop),
                                   self._get("tokenizer"), lambda x, **_: x)
    io.write_npy(Path(self.scratch) / "tokens" / f"{start:012d}.npy", counts)
    return stop - start

  def _chunks(self, size: int, start: int, stop: int) -> int:
    store = self._get("store")
    lines = []
    for d in range(start, stop):
      kept, blank = chunking.document_chunks(store.text(d), size)
      lines.append(json.dumps([d, store.key(d), kept, blank], ensure_ascii=False) + "\n")
    io.write_text(Path(self.scratch) / f"chunks-{size}" / f"{start:012d}.jsonl", "".join(lines))
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
    store, cfg = self._get("store"), _quest_options(self.opts)
    queries.predict_part(store, self._get("predictor"), _queries_dir(self.opts), store.doc_ids(),
                         part, seed=cfg.seed, part_size=cfg.query_part_size)
    queries.rake_part(_queries_dir(self.opts), part, min_score=cfg.min_score)
    return len(store.doc_ids()[part * cfg.query_part_size:(part + 1) * cfg.query_part_size])


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
    cfg = _quest_options(opts)
    return make_predictor(cfg.predictor, checkpoint=cfg.checkpoint, **cfg.predictor_options)
  raise ValueError(f"unknown worker object {what!r}")


def _quest_options(opts: Any) -> Any:
  from longjax.synth.methods.quest.method import QuestOptions  # pylint: disable=import-outside-toplevel
  return QuestOptions.parse("quest", opts.config.get("quest", {}))


def _chunk_size(opts: Any) -> int:
  from longjax.synth.methods.nextlong import NExtLongOptions  # pylint: disable=import-outside-toplevel
  return NExtLongOptions.parse("nextlong", opts.config.get("nextlong", {})).chunk_size


def _queries_dir(opts: Any) -> Path:
  return Path(opts.out) / "quest" / "queries"


def _collection(store: corpus.DocumentStore, name: str, index_dir: Path) -> tuple[Any, dict]:
  """(source, inputs) of an embedding collection, as the methods' builds name them."""
  from longjax.synth.methods import neighbours  # pylint: disable=import-outside-toplevel
  if name == "docs":
    _, source, inputs = neighbours.document_collection(store)
  else:
    size = int(name.split("-")[1])
    _, source, inputs = neighbours.chunk_collection(chunking.open_chunk_store(index_dir, size))
  return source, inputs


def _slices(n: int, size: int) -> list[tuple[int, int]]:
  return [(s, min(s + size, n)) for s in range(0, n, size)]


def _tasks(opts: Any, store: corpus.DocumentStore, methods: Sequence[Any], tokenizer: Any,
           embedder: Any, log_fn: Callable[[str], None]) -> tuple[list[tuple], list[int]]:
  """(the first pipeline's tasks, the NExtLong chunk sizes to assemble and embed after it);
  work whose output a previous run finished is left out."""
  from longjax.synth.methods import contexts  # pylint: disable=import-outside-toplevel
  names = [m.name for m in methods]
  n = len(store)
  tasks: list[tuple] = []
  if not contexts.token_counts_path(opts.out, store, tokenizer).exists():
    tasks += [("tokens", s, e) for s, e in _slices(n, SLICE)]
  sizes = []
  if "nextlong" in names:
    size = _chunk_size(opts)
    config, inputs = chunking.chunk_config(store, size)
    if not io.is_complete(chunking.chunk_dir(opts.out, size), config=config, inputs=inputs):
      sizes = [size]
      tasks += [("chunks", size, s, e) for s, e in _slices(n, SLICE)]
  if _DOCUMENT_EMBEDDING_METHODS.intersection(names):
    tasks += _embed_tasks(opts, store, embedder, "docs")
  if "quest" in names:
    from longjax.synth.methods.quest import queries  # pylint: disable=import-outside-toplevel
    cfg = _quest_options(opts)
    predictor = _load("predictor", opts)
    todo = queries.prepare(_queries_dir(opts), predictor, store.doc_ids(), seed=cfg.seed,
                           part_size=cfg.query_part_size, log=log_fn)
    tasks += [("queries", i) for i in todo]
  return tasks, sizes


def _embed_tasks(opts: Any, store: corpus.DocumentStore, embedder: Any,
                 collection: str) -> list[tuple]:
  """The embedding blocks of `collection` that neither `vectors.npy` nor a saved block holds."""
  source, inputs = _collection(store, collection, opts.out)
  out = Path(opts.out) / "embeddings" / collection
  if io.is_complete(out, config=embed.embedding_config(embedder, embed.BLOCK_SIZE), inputs=inputs):
    return []
  return [("embed", collection, s) for s in range(0, len(source), embed.BLOCK_SIZE)
          if not embed.block_path(out, embedder, inputs, embed.BLOCK_SIZE, s).exists()]


def _run_tasks(opts: Any, name: str, tasks: list[tuple], scratch: Path,
               log_fn: Callable[[str], None]) -> dict[str, float]:
  """Runs `tasks` on the workers; returns wall seconds and, per task kind, worker seconds and
  rows (written to `<scratch>/rates` and read back here)."""
  def build(p: beam.Pipeline) -> None:
    (p | "tasks" >> beam.Create(tasks) | beam.Reshuffle()
     | "work" >> beam.ParDo(_Worker(opts, scratch)) | beam.Map(json.dumps)
     | beam.io.WriteToText(str(scratch / "rates" / name / "part")))

  out: dict[str, float] = {f"pipeline_{name}": _run(opts, name, build, log_fn)}
  for kind, rows, seconds in _read_lines(scratch / "rates" / name):
    out[f"{kind}_worker_seconds"] = out.get(f"{kind}_worker_seconds", 0.0) + seconds
    out[f"{kind}_rows"] = out.get(f"{kind}_rows", 0) + rows
  return out


def per_document(opts: Any, store: corpus.DocumentStore, methods: Sequence[Any], tokenizer: Any,
                 embedder: Any, log_fn: Callable[[str], None]) -> dict[str, float]:
  """Runs the per-document stages the `methods` need and assembles their artifacts; returns
  seconds per stage (wall, and summed over workers with the rows each kind processed)."""
  from longjax.synth.methods import contexts  # pylint: disable=import-outside-toplevel
  if not methods:
    return {}
  scratch = _scratch(opts)
  tasks, sizes = _tasks(opts, store, methods, tokenizer, embedder, log_fn)
  timings = _run_tasks(opts, "per_document", tasks, scratch, log_fn) if tasks else {}
  if any(t[0] == "tokens" for t in tasks):
    io.write_npy(contexts.token_counts_path(opts.out, store, tokenizer),
                 np.concatenate([np.load(p) for p in sorted((scratch / "tokens").glob("*.npy"))]))
  for size in sizes:
    chunking.write_chunk_store(_chunk_records(scratch / f"chunks-{size}"),
                               chunking.chunk_dir(opts.out, size), store=store, size=size)
  chunk_tasks = []
  if "nextlong" in [m.name for m in methods]:
    chunk_tasks = _embed_tasks(opts, store, embedder, f"chunks-{_chunk_size(opts)}")
  if chunk_tasks:
    timings.update({k.replace("embed_", "embed_chunks_"): v for k, v in _run_tasks(
        opts, "chunk_embeddings", chunk_tasks, scratch, log_fn).items()})
  shutil.rmtree(scratch, ignore_errors=True)
  return timings


def _chunk_records(directory: Path) -> Iterator[tuple[int, str, list[str], int]]:
  for path in sorted(directory.glob("*.jsonl")):
    with open(path, encoding="utf-8") as f:
      for line in f:
        d, key, kept, blank = json.loads(line)
        yield d, key, kept, blank
