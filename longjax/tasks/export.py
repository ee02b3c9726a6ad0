"""Materializes a SeqIO Task or Mixture as ArrayRecord shards of ready training rows.

    python -m longjax.tasks export longjax_sotu_nextlong_64k_mix --length 64k --tokens 1g \
        --out /data/nextlong_64k [--seed 0] [--shards 64]

The rows are exactly what `longjax.tasks.input.SeqioBatches` yields for the same Task, seed and
length (packing, segment ids, positions: the same seqio pipeline), so training from the export
(`longjax.train.arrayrecord.ArrayRecordSource`, no TensorFlow) sees the data the SeqIO path would.

Shards. Output shard i of K holds the first rows of seqio shard i of K (`ShardInfo(i, K)`), so
every shard is an independent stream: an interrupted export keeps its finished shards and
computes only the missing ones, and shards could be computed in parallel. Each shard is written
under a temporary name and renamed when complete; `manifest.json` comes last (sha256 per shard).

Provenance. The feature converter drops the `provenance` string, so the examples are fed to it
from Python and each packed row takes the provenance of the examples whose tokens it holds, in
order (seqio packs greedily in stream order; the tokens are compared, so a mismatch raises).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
from array_record.python.array_record_module import ArrayRecordWriter, ArrayRecordReader

from longjax import io
from longjax.synth.build import needs_embedder
from longjax.synth.methods import METHODS, neighbours
from longjax.tasks.input import SeqioBatches, unshift
from longjax.tasks.registry import MethodSource
from longjax.tasks.vocabularies import HFVocabulary, id_offset
from longjax.train.arrayrecord import KIND, ExportError, RowFormat, read_export

PLAN = "export-plan.json"
SHARD_BYTES = 256 << 20       # default shard size (uncompressed rows)
WRITER_OPTIONS = "group_size:1,zstd:3"  # one record per chunk: random access for global shuffling


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """One export: `tokens` is rounded up to whole rows of `length` tokens."""
  name: str
  length: int
  tokens: int
  out: Path
  seed: int = 0
  shards: int | None = None   # default: rows split into shards of about SHARD_BYTES

  def __post_init__(self):
    for field in ("length", "tokens"):
      if getattr(self, field) < 1:
        raise ValueError(f"--{field} must be >= 1, got {getattr(self, field)}")
    if self.shards is not None and not 1 <= self.shards <= self.rows:
      raise ValueError(f"--shards ({self.shards}) must be in [1, rows = {self.rows}]")

  @property
  def rows(self) -> int:
    return math.ceil(self.tokens / self.length)


def _tqdm(items: Iterable[Any], **kwargs: Any) -> Iterable[Any]:
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(items, mininterval=0.5 if sys.stderr.isatty() else 10.0, unit="row", **kwargs)


def tokenizer_spec(vocabulary: seqio.Vocabulary) -> str:
  """What names a vocabulary's tokenizer (HF spec or SentencePiece file) in a manifest."""
  if isinstance(vocabulary, HFVocabulary):
    return vocabulary.spec
  if isinstance(vocabulary, seqio.SentencePieceVocabulary):
    return vocabulary.sentencepiece_model_file
  return str(vocabulary)


def index_fingerprints(name: str) -> dict[str, str]:
  """`index_fingerprint`, per index dir the Task or Mixture `name` reads, of its methods there."""
  provider = seqio.get_mixture_or_task(name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  reads: dict[Path, set[str]] = {}
  for t in tasks:
    if isinstance(t.source, MethodSource):
      reads.setdefault(t.source.index_dir, set()).add(t.source.method)
  return {str(d): index_fingerprint(d, methods) for d, methods in sorted(reads.items())}


def index_fingerprint(index_dir: Path, methods: Iterable[str]) -> str:
  """sha256 of what `methods` read in `index_dir`: the corpus store (the build manifest's
  `inputs`), their stage fingerprints (options, tokenizer, embedder, lengths; with those of the
  builds a method `reads`, e.g. questshuffled reads quest's) and, for methods
  that embed, the contents of the neighbour lists they read. Not the build's other methods or
  their lists, nor when, how or by which commit it ran: rebuilding an up-to-date index, or
  building other methods into it, keeps the exports made from it."""
  index_dir, methods = Path(index_dir), set(methods)
  methods = sorted(methods | {r for m in methods if m in METHODS
                              for r in getattr(METHODS[m], "reads", ())})
  manifest = io.read_manifest(index_dir)
  stages = manifest.get("stages", {})
  content = {"inputs": manifest.get("inputs"), "stages": {m: stages.get(m) for m in methods}}
  embedding = [m for m in methods if m in METHODS and needs_embedder(METHODS[m])]
  if embedding:
    lists = manifest.get("counts", {}).get("neighbour_lists") or {}
    read = {n for m in embedding for n in neighbours.lists_read(m, _built(index_dir, m))}
    content["neighbour_lists"] = {n: lists.get(n) for n in sorted(read)}
  return io.fingerprint_json(content)


def _built(index_dir: Path, method: str) -> dict[str, Any]:
  """The config of `method`'s finished build in `index_dir`; a clear error if there is none."""
  manifest = io.read_manifest(index_dir / method)
  if manifest is None:
    raise ExportError(f"{index_dir / method}: no finished build of {method!r} (its manifest is "
                      f"missing); run `python -m longjax.synth build --methods {method}` first")
  return manifest["config"]


def shard_name(i: int, shards: int) -> str:
  return f"rows-{i:05d}-of-{shards:05d}.arrayrecord"


def shard_rows(i: int, rows: int, shards: int) -> int:
  return rows // shards + (i < rows % shards)


def packed_rows(source: SeqioBatches, *, shard: int,
                num_shards: int) -> Iterator[tuple[dict[str, np.ndarray], list[Any]]]:
  """(row, provenance of its examples) for `source`'s converted stream of one shard."""
  examples = source.examples(shard=shard, num_shards=num_shards)
  pending: collections.deque = collections.deque()

  def feed():
    for ex in examples.as_numpy_iterator():
      prov = ex.get("provenance")
      pending.append((ex["targets"], None if prov is None else prov.decode("utf-8")))
      yield {"targets": ex["targets"]}
  fed = tf.data.Dataset.from_generator(
      feed, output_signature={"targets": examples.element_spec["targets"]})
  offset = source.id_offset()
  for row in source.converter(fed, source.lengths).as_numpy_iterator():
    row = {"targets": row["decoder_target_tokens"], "segment_ids": row["decoder_segment_ids"],
           "positions": row["decoder_positions"]}
    provenance = _match_provenance(row, pending)  # in seqio's (shifted) ids, as the examples
    yield unshift(row, offset) if offset else row, provenance


def _match_provenance(row: dict[str, np.ndarray], pending: collections.deque) -> list[Any]:
  """Pops the examples packed into `row` (one per segment, in order) and returns provenance."""
  out = []
  for segment in range(1, int(row["segment_ids"].max()) + 1):
    tokens = row["targets"][row["segment_ids"] == segment]
    example, prov = pending.popleft()
    while len(example) == 0:  # an empty example packs into no segment
      example, prov = pending.popleft()
    if not np.array_equal(example[:len(tokens)], tokens) or len(example) < len(tokens):
      raise ExportError(f"segment {segment} of a packed row does not hold its example's tokens "
                        f"({_why_mismatch(example)}); provenance ({str(prov)[:80]}...)")
    out.append(None if prov is None else _json_or_text(prov))
  return out


def _why_mismatch(example: np.ndarray) -> str:
  if (example == 0).any():
    return (f"the example holds token id 0 {int((example == 0).sum())} times, which seqio's "
            "packing takes for padding; the vocabulary should shift its ids "
            "(longjax.tasks.vocabularies.id_offset)")
  return "seqio's packing no longer keeps stream order"


def _json_or_text(text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def write_shard(path: Path, rows: Iterable[tuple[dict, list]], fmt: RowFormat) -> None:
  """Writes one shard atomically: a crash leaves a temporary file, never a short shard."""
  with io.atomic_path(path) as tmp:
    writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    try:
      for row, provenance in rows:
        writer.write(fmt.encode(row, provenance))
    finally:
      writer.close()


def provenance_documents(prov: Any) -> list[int]:
  """Document ids an example's provenance names: its spans' documents (a span ends in
  `doc_id, start, end`; Quest's start with the keyword) or NExtLong's meta-document (its hard
  negatives are chunks of other documents, not counted)."""
  if not isinstance(prov, dict):
    return []
  docs = [int(span[-3]) for span in prov.get("spans", ())]
  return docs + ([int(prov["doc_id"])] if "doc_id" in prov else [])


def summarize_shard(path: Path, fmt: RowFormat) -> dict[str, Any]:
  """Rows, tokens, examples and document ids of a written shard (read back: kept shards too)."""
  reader = ArrayRecordReader(str(path))
  try:
    n = reader.num_records()
    tokens = examples = 0
    documents: set[int] = set()
    for record in reader.read(list(range(n))) if n else []:
      tokens += int(np.count_nonzero(fmt.decode(record)["segment_ids"]))
      for prov in fmt.provenance(record):
        examples += 1
        documents.update(provenance_documents(prov))
  finally:
    reader.close()
  return {"file": path.name, "rows": n, "tokens": tokens, "examples": examples,
          "bytes": path.stat().st_size, "sha256": io.file_sha256(path),
          "documents": documents}


@dataclasses.dataclass(frozen=True)
class Plan:
  """What an export writes: its shards, record format and the manifest's config and inputs."""
  options: ExportOptions
  fmt: RowFormat
  shards: int
  config: dict[str, Any]
  inputs: dict[str, Any]

  @property
  def files(self) -> list[str]:
    return [shard_name(i, self.shards) for i in range(self.shards)]

  def todo(self) -> list[int]:
    """Shards not written yet (a finished shard exists under its name, a partial one never)."""
    return [i for i, f in enumerate(self.files) if not (Path(self.options.out) / f).exists()]


def make_plan(options: ExportOptions) -> Plan:
  vocabulary = seqio.get_mixture_or_task(options.name).output_features["targets"].vocabulary
  vocab_size = vocabulary.vocab_size - id_offset(vocabulary)  # the rows hold unshifted ids
  fmt = RowFormat.make(options.length, vocab_size)
  shards = options.shards or math.ceil(options.rows / max(1, SHARD_BYTES // _row_bytes(fmt)))
  config = {"task": options.name, "length": options.length, "tokens": options.tokens,
            "rows": options.rows, "seed": options.seed, "shards": shards, "pack": True,
            "tokenizer": tokenizer_spec(vocabulary), "vocab_size": vocab_size}
  return Plan(options, fmt, shards, config, {"indexes": index_fingerprints(options.name)})


def _begin(options: ExportOptions) -> tuple[Plan, dict[str, Any] | None]:
  """The plan, and the manifest if the export is already complete (else `out` is claimed)."""
  plan = make_plan(options)
  if io.is_complete(options.out, config=plan.config, inputs=plan.inputs):
    return plan, read_export(options.out)
  _claim(Path(options.out), plan.config, plan.inputs)
  return plan, None


def export(options: ExportOptions,
           progress: Callable[..., Iterable[Any]] = _tqdm) -> dict[str, Any]:
  """Runs the export (or finishes an interrupted one) in this process; returns the manifest."""
  plan, done = _begin(options)
  if done:
    return done
  for i in plan.todo():
    export_shard(plan, i, progress)
  return finish_export(plan)


def export_beam(options: ExportOptions, pipeline_args: Sequence[str] = ()) -> dict[str, Any]:
  """The same export with the missing shards written by Apache Beam workers, one shard per
  element (DirectRunner locally; Dataflow/Flink/Spark for large runs, whose workers must see the
  same Tasks: set LONGJAX_INDEX_DIRS there). The manifest is written here, afterwards."""
  import apache_beam as beam  # pylint: disable=import-outside-toplevel
  plan, done = _begin(options)
  if done:
    return done
  with beam.Pipeline(options=beam.options.pipeline_options.PipelineOptions(
      list(pipeline_args))) as pipeline:
    _ = (pipeline | beam.Create(plan.todo())
         | beam.Map(lambda i, plan=plan: export_shard(plan, i, _no_progress)))
  return finish_export(plan)


def _no_progress(rows: Iterable[Any], **_: Any) -> Iterable[Any]:
  return rows


def export_shard(plan: Plan, i: int, progress: Callable[..., Iterable[Any]] = _tqdm) -> str:
  """Writes output shard `i` (seqio shard i of `plan.shards`); returns its file name."""
  options = plan.options
  source = SeqioBatches(options.name, {"targets": options.length}, seed=options.seed)
  n = shard_rows(i, options.rows, plan.shards)
  rows = itertools.islice(packed_rows(source, shard=i, num_shards=plan.shards), n)
  write_shard(Path(options.out) / plan.files[i],
              progress(rows, total=n, desc=f"{options.name} shard {i + 1}/{plan.shards}"),
              plan.fmt)
  return plan.files[i]


def finish_export(plan: Plan) -> dict[str, Any]:
  """Summarizes the written shards into the export's manifest (written last)."""
  out = Path(plan.options.out)
  summaries = [summarize_shard(out / f, plan.fmt) for f in plan.files]
  documents = set().union(*(s.pop("documents") for s in summaries))
  rows = sum(s["rows"] for s in summaries)
  counts = {"rows": rows, "tokens": rows * plan.fmt.length,
            "non_padding_tokens": sum(s.pop("tokens") for s in summaries),
            "examples": sum(s.pop("examples") for s in summaries),
            "unique_documents": len(documents) if documents else None}
  manifest = io.write_manifest(out, kind=KIND, config=plan.config, inputs=plan.inputs,
                               counts=counts,
                               extra={"format": plan.fmt.to_json(), "shards": summaries})
  (out / PLAN).unlink(missing_ok=True)
  return manifest


def _row_bytes(fmt: RowFormat) -> int:
  return fmt.length * (np.dtype(fmt.token_dtype).itemsize + 2 * np.dtype(fmt.index_dtype).itemsize)


def _claim(out: Path, config: dict[str, Any], inputs: dict[str, Any]) -> None:
  """Records the plan in `out`, or raises if `out` holds (part of) a different export."""
  plan = {"config": config, "inputs": inputs}
  existing = io.read_manifest(out)
  if existing is not None:
    raise ExportError(f"{out} holds a finished export of a different configuration "
                      f"({existing.get('config')}); choose another --out (nothing was changed)")
  if (out / PLAN).exists():
    previous = json.loads((out / PLAN).read_text())
    if previous != json.loads(json.dumps(plan)):
      raise ExportError(f"{out / PLAN}: {out} holds part of an export with a different plan "
                        f"({previous}); choose another --out or delete it (nothing was changed)")
    for litter in out.glob(".tmp-*"):  # left by a killed writer
      litter.unlink()
    return
  if out.exists() and any(out.iterdir()):
    raise ExportError(f"{out} is not empty and holds no export plan; choose another --out")
  io.write_json(out / PLAN, plan)
