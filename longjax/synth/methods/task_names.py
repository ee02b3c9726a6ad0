"""Task naming and index-directory discovery, shared by `longjax.tasks` and `synth preview`.

TF-free, so the preview command (in `synth`) resolves a Task name without importing seqio.
Names: `longjax_<corpus>_<method>_<length>` (Task), `..._mix` (Mixture: the Task plus the replay
stream). `<corpus>` is lower-case alphanumeric; `<length>` uses k/m suffixes (8k, 64k, 1m).

An index directory written by `python -m longjax.synth build` describes itself in its top-level
`manifest.json` (corpus, tokenizer spec, lengths); `IndexInfo.read` turns that into what Task
registration needs. `LONGJAX_INDEX_DIRS` (paths separated by `os.pathsep`) lists the index
directories that `import longjax.tasks` registers automatically.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from longjax.io import format_length, parse_length, read_manifest

ENV_INDEX_DIRS = "LONGJAX_INDEX_DIRS"
PREFIX = "longjax"
MIX_SUFFIX = "_mix"


def corpus_name(text: str) -> str:
  """'default' -> 'default'; 'data/BBC-news.jsonl.gz' -> 'bbcnews' (stem, alphanumerics)."""
  stem = Path(text).name.split(".")[0] if text != "default" else text
  name = re.sub(r"[^a-z0-9]", "", stem.lower())
  if not name:
    raise ValueError(f"cannot derive a corpus name from {text!r}; pass corpus= explicitly")
  return name


def task_name(corpus: str, method: str, length: int) -> str:
  if not re.fullmatch(r"[a-z0-9]+", corpus):
    raise ValueError(f"corpus name {corpus!r} must be lower-case alphanumeric")
  return f"{PREFIX}_{corpus}_{method}_{format_length(length)}"


def parse_task_name(name: str) -> tuple[str, str, int, bool]:
  """`longjax_<corpus>_<method>_<length>[_mix]` -> (corpus, method, length, is_mixture)."""
  mix = name.endswith(MIX_SUFFIX)
  parts = (name[:-len(MIX_SUFFIX)] if mix else name).split("_")
  if len(parts) != 4 or parts[0] != PREFIX:
    raise ValueError(f"task name {name!r}: expected longjax_<corpus>_<method>_<length>[_mix]")
  return parts[1], parts[2], parse_length(parts[3]), mix


@dataclasses.dataclass(frozen=True)
class IndexInfo:
  """What an index directory's build manifest says about the Tasks it can serve.

  `lengths` are the last build command's; `built` maps every method with a finished build in the
  index (that command's or an earlier one's over the same corpus store) to the lengths it was
  built for, read from its own manifest's per-length budgets.
  """
  index_dir: Path
  corpus: str
  tokenizer: str
  lengths: tuple[int, ...]
  built: dict[str, tuple[int, ...]]

  @classmethod
  def read(cls, index_dir: str | os.PathLike) -> "IndexInfo":
    index_dir = Path(index_dir)
    m = read_manifest(index_dir)
    if m is None or m.get("kind") != "build":
      raise FileNotFoundError(f"{index_dir}: no build manifest.json; run "
                              f"`python -m longjax.synth build --out {index_dir}` first")
    c = m["config"]
    return cls(index_dir, corpus_name(c["corpus"]), c["tokenizer"],
               tuple(int(n) for n in c["lengths"]), _finished_builds(index_dir, m))


def _finished_builds(index_dir: Path, top: dict) -> dict[str, tuple[int, ...]]:
  """Each method whose build stage the top manifest records (not only the last command's
  `methods_done`: building more methods into an index keeps the earlier ones) and whose own
  manifest is complete, with the lengths of its budgets."""
  built = {}
  for method in top.get("stages", {}):
    manifest = read_manifest(index_dir / method)
    if manifest and manifest.get("complete"):
      budgets = manifest.get("counts", {}).get("budget", {})
      built[method] = tuple(sorted(int(k[1:]) for k in budgets if k.startswith("L")))
  return built


def index_dirs_from_env() -> list[Path]:
  value = os.environ.get(ENV_INDEX_DIRS, "")
  return [Path(p) for p in value.split(os.pathsep) if p.strip()]


def find_index_dir(corpus: str) -> Path:
  """The index directory in `LONGJAX_INDEX_DIRS` whose corpus is `corpus`."""
  dirs = index_dirs_from_env()
  for d in dirs:
    if IndexInfo.read(d).corpus == corpus:
      return d
  raise FileNotFoundError(f"no index dir for corpus {corpus!r} in ${ENV_INDEX_DIRS} "
                          f"({[str(d) for d in dirs]}); pass the index dir explicitly")
