"""What every Beam pipeline of the build shares: options, running one, its scratch directory.

Workers write each result at a path named by its unit of work, or as text records; the driver
reads them back in a fixed order, so nothing depends on how many workers ran or in what order.
Where: the results the driver assembles (ingested items, token counts, chunks, NExtLong plans,
keyword and neighbour-list records, task rates) under `<out>/.beam/` (the scratch directory,
emptied by every run); the artifacts that are finished as they are written, where the build
keeps and resumes them: embedding blocks under `<out>/embeddings/<collection>/`
(`embed.block_path`), Quest's query parts and their RAKE parts under `<out>/quest/queries/`
(`queries.queries_dir`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

SCRATCH = ".beam"  # under the index directory; removed when the build's pipelines finished


def options_for(opts: Any) -> PipelineOptions:
  """Beam options: `--runner` plus the pass-through options (`--direct_num_workers=2`,
  Dataflow's `--project`, `--region`, `--temp_location`...)."""
  return PipelineOptions(["--runner", opts.runner, *opts.pipeline_options])


def run(opts: Any, name: str, build: Callable[[beam.Pipeline], None],
        log_fn: Callable[[str], None]) -> float:
  """Builds a pipeline with `build(p)`, runs it to the end; returns its wall seconds."""
  t0 = time.perf_counter()
  with beam.Pipeline(options=options_for(opts)) as p:
    build(p)
  seconds = time.perf_counter() - t0
  log_fn(f"pipeline {name}: {seconds:.1f}s on {opts.runner}")
  return seconds


def scratch(opts: Any) -> Path:
  """An empty scratch directory (a killed run's leftovers are never reused)."""
  path = Path(opts.out) / SCRATCH
  shutil.rmtree(path, ignore_errors=True)
  path.mkdir(parents=True)
  return path


def write_records(pcoll: beam.PCollection, directory: Path, label: str) -> None:
  """Writes `pcoll` as JSON lines under `directory` (any number of files, any order)."""
  _ = (pcoll | f"{label} to json" >> beam.Map(json.dumps)
       | f"write {label}" >> beam.io.WriteToText(str(directory / "part")))


def read_records(directory: Path) -> Iterator[Any]:
  """The records `write_records` wrote under `directory`."""
  for path in sorted(directory.glob("part-*")):
    with open(path, encoding="utf-8") as f:
      for line in f:
        yield json.loads(line)


def read_one(directory: Path) -> Any:
  """The one record `write_records` wrote under `directory`: a global combine's result (a
  clear error when the pipeline left none, or more than one, there)."""
  records = list(read_records(directory))
  if len(records) != 1:
    raise ValueError(f"{directory}: expected exactly one record (a global combine's result) in "
                     f"its part-* files, found {len(records)}")
  return records[0]


def slices(n: int, size: int) -> list[tuple[int, int]]:
  """[start, stop) ranges of `size` rows covering `n`."""
  return [(s, min(s + size, n)) for s in range(0, n, size)]
