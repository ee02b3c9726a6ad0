"""Ingest and exact dedup as a Beam pipeline: the corpus store `corpus.ingest_corpus` writes.

One element per input file: read, validate and hash each item (`corpus.check_document`), exact
dedup grouped by content hash, then the winners grouped by id (`corpus.Dedup` per group, in
input order); then this process writes the store with `corpus.StoreWriter` in input order.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import apache_beam as beam

from longjax import io
from longjax.documents import RawDocument, input_files, iter_file_documents
from longjax.synth import corpus
from longjax.synth.pipeline import runner


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
      # ASCII escapes: a skipped item's title or id may hold an unpaired surrogate (`not_utf8`),
      # which UTF-8 cannot encode but an escape carries back to the driver unchanged.
      lines.append(json.dumps({"source": raw.source, "raw_key": raw.key, "title": raw.title,
                               "text": c.text, "hash": c.hash, "key": c.key,
                               "reason": c.reason, "detail": c.detail}))
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


def run(opts: Any, out: Path, heldout: Iterable[str],
        log_fn: Callable[[str], None]) -> corpus.DocumentStore:
  """The corpus store of `opts.corpus`, as `corpus.ingest_corpus` writes it, read and
  deduplicated by Beam (or reopened when an identical one is finished)."""
  heldout = frozenset(heldout)
  config, inputs = corpus.ingest_config(opts.corpus, max_chars=opts.max_chars,
                                        text_field=opts.text_field, heldout_hashes=heldout)
  if io.is_complete(out, config=config, inputs=inputs):
    return corpus.DocumentStore(out)
  files, text_mode = input_files(opts.corpus)
  scratch = runner.scratch(opts)

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
    runner.write_records((text_skips, by_key) | beam.Flatten()
                         | beam.Filter(lambda r: bool(r[1])), scratch / "skips", "skips")

  seconds = runner.run(opts, "ingest", build, log_fn)
  skips = {tuple(pos): (reason, detail)
           for pos, reason, detail in runner.read_records(scratch / "skips")}
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
