"""Quest stage 1 storage: predicted queries per document, written in resumable parts.

`<index_dir>/quest/queries/` (`queries_dir`) holds `config.json` (the predictor's description,
seed, part size) and `part-NNNNN.jsonl` files, each the records `{"doc_id", "queries": [...]}`
of one slice of the store's doc ids, written atomically; `rake-<min_score>/part-NNNNN.jsonl`
holds each part's RAKE candidates `{"doc_id", "candidates": [...]}`. A re-run with the same
config skips finished parts, so an interrupted prediction resumes where it stopped; a
different config starts over (logged).
This is the expensive stage (specs/quest.md §9), hence the parts and the progress display.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from longjax import io
from longjax.progress import Progress, silent
from longjax.synth.methods.base import DocStore
from longjax.synth.methods.quest.predict import QueryPredictor

CONFIG_FILE = "config.json"


def queries_dir(quest_dir: str | Path) -> Path:
  """Where Quest's method directory keeps its queries (the in-process and Beam builds)."""
  return Path(quest_dir) / "queries"


def _part_path(directory: Path, i: int) -> Path:
  return directory / f"part-{i:05d}.jsonl"


def predict_queries(store: DocStore, description: dict[str, Any],
                    load_predictor: Callable[[], QueryPredictor], directory: str | Path, *,
                    seed: int, part_size: int = 4096,
                    log: Callable[[str], None] = print,
                    progress: Progress = silent) -> dict[str, Any]:
  """Predicts queries for every document of `store` into `directory`; returns counts.
  `description` is the predictor's `describe()`; `load_predictor` (which may load model
  weights) is called only when a part is still to predict."""
  directory = Path(directory)
  doc_ids = np.asarray(store.doc_ids(), np.int64)
  todo = prepare(directory, description, doc_ids, seed=seed, part_size=part_size, log=log)
  n_parts = (len(doc_ids) + part_size - 1) // part_size
  predictor = load_predictor() if todo else None
  for i in progress(todo, desc="quest: predicting queries", total=len(todo)):
    predict_part(store, predictor, directory, doc_ids, i, seed=seed, part_size=part_size)
  return {"parts": n_parts, "parts_predicted_now": len(todo), "documents": len(doc_ids)}


def prepare(directory: Path, description: dict[str, Any], doc_ids: np.ndarray, *, seed: int,
            part_size: int, log: Callable[[str], None] = print) -> list[int]:
  """Writes the prediction config (discarding predictions made under another one) and returns
  the parts still to predict. `description`: the predictor's `describe()`, which the Beam
  build's driver gets without loading weights (`predict.describe_predictor`)."""
  if part_size < 1:
    raise ValueError(f"part_size ({part_size}) must be >= 1")
  config = {"predictor": description, "seed": seed, "part_size": part_size,
            "doc_ids": io.fingerprint_json(doc_ids.tolist())}
  cfg_path = directory / CONFIG_FILE
  if cfg_path.exists():
    old = json.loads(cfg_path.read_text())
    if io.fingerprint_json(old) != io.fingerprint_json(config):
      log(f"quest: query config changed; discarding the predictions in {directory}")
      shutil.rmtree(directory)
  directory.mkdir(parents=True, exist_ok=True)
  io.write_json(cfg_path, config)
  n_parts = (len(doc_ids) + part_size - 1) // part_size
  todo = [i for i in range(n_parts) if not _part_path(directory, i).exists()]
  if len(todo) < n_parts:
    log(f"quest: resuming query prediction, {n_parts - len(todo)}/{n_parts} parts already done")
  return todo


def predict_part(store: DocStore, predictor: QueryPredictor, directory: Path,
                 doc_ids: np.ndarray, i: int, *, seed: int, part_size: int) -> None:
  """Predicts and writes part `i` (the unit of resumption, and of work in the Beam build)."""
  ids = doc_ids[i * part_size:(i + 1) * part_size]
  preds = predictor.predict([(int(d), store.text(int(d))) for d in ids], seed=seed)
  if len(preds) != len(ids):
    raise RuntimeError(f"predictor {predictor.name!r} returned {len(preds)} query lists for "
                       f"{len(ids)} documents")
  text = "".join(json.dumps({"doc_id": int(d), "queries": list(q)}, ensure_ascii=False) + "\n"
                 for d, q in zip(ids, preds))
  io.write_text(_part_path(directory, i), text)


def rake_part(directory: Path, i: int, *, min_score: float) -> None:
  """RAKE candidates (`keywords.doc_candidates`) of query part `i`, written beside it: stage 2's
  per-document half, resumable per part like the predictions (and a Beam task after them)."""
  from longjax.synth.methods.quest.keywords import doc_candidates  # pylint: disable=import-outside-toplevel
  lines = []
  for r in _records(_part_path(directory, i)):
    lines.append(json.dumps({"doc_id": int(r["doc_id"]),
                             "candidates": doc_candidates(r["queries"], min_score=min_score)},
                            ensure_ascii=False) + "\n")
  io.write_text(_part_path(_rake_dir(directory, min_score), i), "".join(lines))


def rake_candidates(directory: str | Path, doc_ids: Sequence[int], *, min_score: float,
                    progress: Progress = silent) -> list[list[str]]:
  """Each document's RAKE candidates, aligned with `doc_ids`; parts not yet scored are scored
  now (after `predict_queries` finished every part)."""
  directory = Path(directory)
  parts = _predicted(directory)
  todo = rake_todo(directory, min_score=min_score)
  for i in progress(todo, desc="quest: RAKE", total=len(todo)):
    rake_part(directory, i, min_score=min_score)
  found = {int(r["doc_id"]): list(r["candidates"]) for i in parts
           for r in _records(_part_path(_rake_dir(directory, min_score), i))}
  return [found[int(d)] for d in doc_ids]


def _predicted(directory: Path) -> list[int]:
  return sorted(int(p.stem.split("-")[1]) for p in directory.glob("part-*.jsonl"))


def rake_todo(directory: str | Path, *, min_score: float) -> list[int]:
  """The predicted parts whose RAKE candidates at `min_score` are not written yet."""
  directory = Path(directory)
  return [i for i in _predicted(directory)
          if not _part_path(_rake_dir(directory, min_score), i).exists()]


def part_records(directory: str | Path, i: int, *,
                 min_score: float) -> Iterator[tuple[int, list[str], list[str]]]:
  """(doc_id, queries, RAKE candidates) of every document of query part `i`, in order: what
  the Beam build's keyword stage reads per part (`rake_part` must have scored it)."""
  directory = Path(directory)
  candidates = _records(_part_path(_rake_dir(directory, min_score), i))
  for r, c in zip(_records(_part_path(directory, i)), candidates, strict=True):
    if int(r["doc_id"]) != int(c["doc_id"]):
      raise ValueError(f"{directory}: part {i} holds doc {r['doc_id']} where its RAKE part "
                       f"holds {c['doc_id']}; delete {_rake_dir(directory, min_score)}")
    yield int(r["doc_id"]), [str(q) for q in r["queries"]], list(c["candidates"])


def _rake_dir(directory: Path, min_score: float) -> Path:
  return directory / f"rake-{min_score:g}"


def _records(path: Path) -> Iterator[dict[str, Any]]:
  with open(path, encoding="utf-8") as f:
    for line_no, line in enumerate(f, 1):
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line_no}: malformed record ({e})") from e


def read_queries(directory: str | Path, doc_ids: Sequence[int]) -> list[list[str]]:
  """Queries per document, aligned with `doc_ids` (every id must have been predicted)."""
  directory = Path(directory)
  found: dict[int, list[str]] = {}
  for path in sorted(directory.glob("part-*.jsonl")):
    with open(path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        try:
          r = json.loads(line)
          found[int(r["doc_id"])] = [str(q) for q in r["queries"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
          raise ValueError(f"{path}:{line_no}: malformed query record ({e})") from e
  missing = [int(d) for d in doc_ids if int(d) not in found]
  if missing:
    raise ValueError(f"{directory}: no predicted queries for {len(missing)} documents "
                     f"(e.g. {missing[:5]}); re-run the quest build to finish prediction")
  return [found[int(d)] for d in doc_ids]


def query_counts(queries: Sequence[Sequence[str]]) -> Mapping[str, int]:
  """Totals for the manifest: queries, empty queries, documents whose queries are all empty."""
  flat = [q for qs in queries for q in qs]
  return {"queries": len(flat), "empty_queries": sum(1 for q in flat if not q.strip()),
          "docs_without_queries": sum(1 for qs in queries if not any(q.strip() for q in qs))}
