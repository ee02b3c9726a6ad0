"""`python -m longjax.synth build`: corpus store, then each method's corpus-wide `build(ctx)`.

Output layout (`<out>/`, the `index_dir` every method and SeqIO Task reads):

    corpus/              document store + manifest (every input document: kept or skipped)
    chunks/<size>/       NExtLong chunk store          (made by the methods that need it)
    embeddings/<name>/   vectors.npy                   (methods/neighbours.py)
    index/<name>/        ScaNN index in `--shards` shards, recall@10 in its manifest
    neighbours/<name>/   precomputed top-K lists, their sha256 in its manifest
    <method>/            the method's own build output + manifest
    manifest.json        this build: options, corpus counts, one fingerprint per finished stage,
                         the neighbour lists' sha256 (two builds' lists compare here)

`--runner` (BuildOptions.runner) runs the per-document and per-keyword stages, and the
neighbour-list search shard by shard, as Apache Beam pipelines (synth/pipeline/) that write the
same artifacts before the methods' builds run; without it, everything runs in this process.
The output is the same either way, and the same for any `--shards` when the index is exact.

Resumable: the store reuses a finished identical build, embeddings resume per block, and a
method whose stage fingerprint (corpus content, tokenizer, embedder, its options, lengths) is
recorded here with a finished `<method>/manifest.json` is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from longjax import io
from longjax.models.tokenizer import load_tokenizer_spec
from longjax.progress import Progress, console
from longjax.synth.corpus import DEFAULT_MAX_CHARS, STORE_DIRNAME, DocumentStore, ingest_corpus

log = logging.getLogger("longjax.synth")

# Methods that need document/chunk embeddings unless they say otherwise (`needs_embedder`).
_EMBEDDING_METHODS = frozenset({"knn", "iclm", "nextlong"})


@dataclasses.dataclass(frozen=True)
class BuildOptions:
  """What `synth build` does. `corpus` is a path or `"default"` (the bundled BBC corpus)."""
  corpus: str
  out: Path
  methods: tuple[str, ...] = ()
  embedder: str | None = None
  tokenizer: str = "smollm2"
  lengths: tuple[int, ...] = (8192,)
  max_chars: int = DEFAULT_MAX_CHARS
  text_field: str = "text"
  config: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  embedding_table: Path | None = None  # vectors computed elsewhere (synth/embed_table.py)
  # None: this process does everything. A Beam runner name (DirectRunner, DataflowRunner...):
  # the per-element stages run as Beam pipelines (synth/pipeline/) with these options.
  runner: str | None = None
  pipeline_options: tuple[str, ...] = ()
  # ScaNN searchers per nearest-neighbour index: contiguous row ranges, searched one by one
  # (per shard in Beam with --runner) and merged exactly. Exact shards give the lists of one.
  shards: int = 1

  def __post_init__(self):
    if isinstance(self.shards, bool) or not isinstance(self.shards, int) or self.shards < 1:
      raise ValueError(f"--shards must be an integer >= 1, got {self.shards!r}")
    object.__setattr__(self, "out", Path(self.out))
    object.__setattr__(self, "pipeline_options", tuple(self.pipeline_options))
    if self.pipeline_options and self.runner is None:
      raise ValueError(f"pipeline options {list(self.pipeline_options)} need --runner (e.g. "
                       "DirectRunner); without it the build runs in this process")
    if self.runner is not None and self.corpus == "default":
      raise ValueError("--runner: the bundled default corpus is built in this process; pass a "
                       "corpus path, or leave --runner out")
    if self.embedding_table is not None and self.embedder is None:
      raise ValueError("--embedding-table needs --embedder: the embedder the table was made "
                       "with (e.g. minilm)")
    if self.corpus != "default" and not Path(self.corpus).exists():
      raise FileNotFoundError(f"--corpus {self.corpus}: no such file or directory "
                              "(or pass 'default' for the bundled corpus)")
    if self.max_chars < 1:
      raise ValueError(f"max_chars ({self.max_chars}) must be >= 1")
    if any(n < 2 for n in self.lengths):
      raise ValueError(f"lengths {self.lengths}: every length must be >= 2 tokens")
    unknown = set(self.config) - set(self.methods)
    if unknown:
      raise ValueError(f"config has options for {sorted(unknown)}, which are not being built "
                       f"(methods: {list(self.methods)})")


def needs_embedder(method: Any) -> bool:
  return bool(getattr(method, "needs_embedder", method.name in _EMBEDDING_METHODS))


def resolve_methods(names: Iterable[str]) -> list[Any]:
  """The registered method objects for `names`, in order except that a method another one
  `reads` (quest for questshuffled) comes before it; clear error for unknown names."""
  from longjax.synth.methods import METHODS  # pylint: disable=import-outside-toplevel
  names = list(names)
  for name in names:
    if name not in METHODS:
      raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
  read = {r for n in names for r in getattr(METHODS[n], "reads", ())}
  return [METHODS[n] for n in names if n in read] + [METHODS[n] for n in names if n not in read]


def check_options(methods: Iterable[Any], config: Mapping[str, Mapping[str, Any]]) -> None:
  """Parses every method's options as its `build` will, before anything is built.

  A misspelt name, a value of the wrong type (a string for a float) or out of range is a
  ValueError naming the method and option, instead of an error after the methods before it
  spent their build time.
  """
  for method in methods:
    method.options_type.parse(method.name, config.get(method.name, {}))


def check_samples(method: str, manifest: Mapping[str, Any] | None,
                  lengths: Iterable[int], documents: int) -> None:
  """Raises when the method's manifest budget has no sample at a requested length.

  An empty Task would otherwise be found only by the trainer, as data that ends at once.
  """
  from longjax.io import format_length  # pylint: disable=import-outside-toplevel
  counts = (manifest or {}).get("counts", {})
  for length in lengths:
    budget = counts.get("budget", {}).get(f"L{length}")
    if budget is None or budget["samples"] > 0:
      continue
    if budget["source_tokens"] < length:
      why = (f"the {budget['documents_used']} documents it used hold "
             f"{budget['source_tokens']} tokens, fewer than one sample")
    else:
      why = (f"its {budget['documents_used']} documents ({budget['source_tokens']} tokens) do "
             "not fill one sample: documents too short, or too few neighbours or chunks"
             + (f" ({counts['chunks']} chunks)" if "chunks" in counts else ""))
    raise ValueError(f"{method} made 0 samples of {format_length(length)} ({length} tokens) "
                     f"from a corpus of {documents} documents: {why}; add documents or build "
                     "a shorter --lengths")


def open_corpus(opts: BuildOptions, progress: Progress,
                log_fn: Callable[[str], None] = log.info) -> DocumentStore:
  """Builds or reopens `<out>/corpus` from `opts.corpus`, disjoint from evaluation texts.

  Any corpus, not only the default one, is kept apart from the held-out evaluation documents
  (SOTU, Shakespeare, the reserved BBC items): exact copies are skipped as `heldout`.
  """
  from longjax.synth import default_corpus  # pylint: disable=import-outside-toplevel
  out = opts.out / STORE_DIRNAME
  if opts.corpus == "default":
    return default_corpus.build_default_corpus(out, progress=progress)
  try:
    held = default_corpus.heldout_hashes()
  except FileNotFoundError as e:  # packages absent (e.g. a GPU image): say so, don't hide it
    log_fn(f"WARNING: held-out evaluation texts unavailable ({e}); "
           "the corpus is not checked against them")
    held = set()
  if opts.runner is None:
    store = ingest_corpus(opts.corpus, out, max_chars=opts.max_chars,
                          text_field=opts.text_field, heldout_hashes=held, progress=progress)
  else:
    from longjax.synth.pipeline import ingest  # pylint: disable=import-outside-toplevel
    store = ingest.run(opts, out, held, log_fn)
  store.assert_disjoint(held)
  return store


def make_build_embedder(opts: BuildOptions) -> Any:
  """The embedder `opts` names (or None), reading `--embedding-table` vectors when given.
  Built in this process, and once per Beam worker (synth/pipeline/)."""
  if opts.embedder is None:
    return None
  from longjax.synth.embed import make_embedder  # pylint: disable=import-outside-toplevel
  embedder = make_embedder(opts.embedder)
  if opts.embedding_table is not None:
    from longjax.synth.embed_table import TableEmbedder  # pylint: disable=import-outside-toplevel,line-too-long
    embedder = TableEmbedder(opts.embedding_table, name=embedder.name, dim=embedder.dim)
  return embedder


def run_build(opts: BuildOptions, *,
              progress: Progress = console,
              log_fn: Callable[[str], None] = log.info) -> dict[str, Any]:
  """Runs the build; returns the top-level manifest it wrote."""
  from longjax.synth.chunking import store_fingerprint  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.base import BuildContext  # pylint: disable=import-outside-toplevel

  methods = resolve_methods(opts.methods)
  check_options(methods, opts.config)
  wanting = [m.name for m in methods if needs_embedder(m)]
  if wanting and opts.embedder is None:
    raise ValueError(f"methods {wanting} need an embedder: pass --embedder minilm "
                     "(`hashing` is a test-only stand-in and is never chosen silently)")
  embedder = make_build_embedder(opts)  # fail fast on a bad name, before any corpus work
  opts.out.mkdir(parents=True, exist_ok=True)
  timings: dict[str, float] = {}
  t0 = time.perf_counter()
  store = open_corpus(opts, progress, log_fn)
  timings["corpus"] = time.perf_counter() - t0
  counts = store.manifest["counts"]
  log_fn(f"corpus: {counts['kept']} documents kept of {counts['read']} read; "
         f"skipped {counts['skipped'] or 'none'} -> {store.directory}")
  if len(store) == 0:
    raise ValueError(f"corpus {opts.corpus}: no usable documents "
                     f"(see {store.directory / io.MANIFEST})")
  previous = io.read_manifest(opts.out) or {}
  # an index over another corpus store keeps none of its stages: they describe other documents
  ours = previous.get("kind") == "build" and \
      previous.get("inputs", {}).get("store") == store_fingerprint(store)
  stages: dict[str, str] = dict(previous.get("stages", {})) if ours else {}
  code: dict[str, dict[str, Any]] = dict(previous.get("code", {})) if ours else {}
  top = {"corpus": opts.corpus, "methods": list(opts.methods), "embedder": opts.embedder,
         "tokenizer": opts.tokenizer, "lengths": list(opts.lengths), "max_chars": opts.max_chars,
         "text_field": opts.text_field,
         "embedding_table": str(opts.embedding_table) if opts.embedding_table else None,
         "config": {k: dict(v) for k, v in opts.config.items()}, "shards": opts.shards}
  run = {"runner": opts.runner or "single-process",
         "pipeline_options": list(opts.pipeline_options), "seconds": timings}
  done: list[str] = []
  if methods:
    tokenizer = load_tokenizer_spec(opts.tokenizer)
    ctx = BuildContext(store=store, tokenizer=tokenizer, embedder=embedder, config=opts.config,
                       index_dir=opts.out, lengths=opts.lengths, log=log_fn, progress=progress,
                       shards=opts.shards)
    if opts.runner is not None:
      from longjax.synth.pipeline import stages as beam_stages  # pylint: disable=import-outside-toplevel
      timings.update(beam_stages.run(opts, ctx, methods, log_fn))
    for method in methods:
      key = io.fingerprint_json({
          "store": store_fingerprint(store), "tokenizer": opts.tokenizer,
          "vocab_size": tokenizer.vocab_size,
          "embedder": embedder.name if embedder and needs_embedder(method) else None,
          "shards": opts.shards if needs_embedder(method) else None,
          "config": dict(opts.config.get(method.name, {})), "lengths": list(opts.lengths),
          **_code_key(method, stages)})
      finished = io.read_manifest(ctx.method_dir(method.name))
      if stages.get(method.name) == key and finished and finished.get("complete"):
        log_fn(f"{method.name}: up to date, skipped ({ctx.method_dir(method.name)})")
        _warn_if_code_changed(method, code.get(method.name), ctx.method_dir(method.name),
                              log_fn)
      else:
        log_fn(f"{method.name}: building")
        if stages.pop(method.name, None) is not None:  # not finished until build() returns
          _write_top(opts.out, top, store, stages, code, done, run)
        built_by = method_code(method)
        _clear_if_version_changed(method, code.pop(method.name, None), built_by,
                                  ctx.method_dir(method.name), log_fn)
        t0 = time.perf_counter()
        method.build(ctx)
        timings[method.name] = time.perf_counter() - t0
        check_samples(method.name, io.read_manifest(ctx.method_dir(method.name)),
                      opts.lengths, len(store))
        stages[method.name] = key
        code[method.name] = built_by
        _write_top(opts.out, top, store, stages, code, done + [method.name], run)
      done.append(method.name)
  return _write_top(opts.out, top, store, stages, code, done, run)


def _version(method: Any) -> int | None:
  """The method's `version`, raised by hand whenever a change alters what `build` or `examples`
  produce; None for a method that never needed one."""
  version = getattr(method, "version", None)
  return None if version is None else int(version)


def _code_key(method: Any, stages: Mapping[str, str]) -> dict[str, Any]:
  """What of the method's code its stage key holds: its version, and the stage keys of the builds
  it `reads`, so that it is rebuilt when one of them is. A method without either adds nothing,
  so builds made before a method had a version keep their keys."""
  key: dict[str, Any] = {}
  version = _version(method)
  if version is not None:
    key["version"] = version
  reads = tuple(getattr(method, "reads", ()))
  if reads:
    key["reads"] = {m: stages.get(m) for m in reads}
  return key


def source_fingerprint(method: Any) -> str | None:
  """sha256 of the source of the module that defines `method`'s class, or of every module of its
  package when that is a subpackage of `longjax.synth.methods` (`quest/`): recorded with each
  build, so that a reused build whose code has changed since is reported."""
  module = sys.modules[type(method).__module__]
  if getattr(module, "__file__", None) is None:
    return None
  path = Path(module.__file__)
  own_package = (module.__package__ or "").startswith("longjax.synth.methods.")
  files = sorted(path.parent.glob("*.py")) if own_package else [path]
  return io.fingerprint_json({f.name: f.read_text(encoding="utf-8") for f in files})


def method_code(method: Any) -> dict[str, Any]:
  """What the top manifest records of the code that builds `method`: version and source."""
  return {"version": _version(method), "source": source_fingerprint(method)}


def _clear_if_version_changed(method: Any, recorded: Mapping[str, Any] | None,
                              current: Mapping[str, Any], method_dir: Path,
                              log_fn: Callable[[str], None]) -> None:
  """Deletes the method's earlier build output when its version changed since, so that none of
  its cached steps (NExtLong's plans, Quest's query predictions and keyword stage, whose own keys
  hold options, not code) survives into the new build."""
  if recorded is not None and recorded.get("version") != current["version"] and \
      method_dir.exists():
    log_fn(f"{method.name}: version {recorded.get('version')} -> {current['version']}: "
           f"building from scratch (deleting {method_dir})")
    shutil.rmtree(method_dir)


def _warn_if_code_changed(method: Any, recorded: Mapping[str, Any] | None, method_dir: Path,
                          log_fn: Callable[[str], None]) -> None:
  """Logs a warning when the up-to-date build of `method` was made by other source code."""
  if recorded is not None and recorded.get("source") != source_fingerprint(method):
    log_fn(f"WARNING {method.name}: its source changed since this build, which is reused: the "
           "stage key holds the options, inputs and version, not the code. If the change alters "
           f"its samples, raise `{type(method).__name__}.version` (or delete {method_dir}) so "
           "that it is rebuilt.")


def _write_top(out: Path, config: dict[str, Any], store: DocumentStore, stages: dict[str, str],
               code: dict[str, dict[str, Any]], done: list[str],
               run: dict[str, Any]) -> dict[str, Any]:
  """The top manifest; `run` (runner, stage seconds) and `code` (each build's method version
  and source fingerprint) are kept apart from what an export's fingerprint reads
  (`export.index_fingerprints`), so how a build ran never changes what it built."""
  from longjax.synth.chunking import store_fingerprint  # pylint: disable=import-outside-toplevel
  return io.write_manifest(
      out, kind="build", config=config, inputs={"store": store_fingerprint(store)},
      counts={"corpus": store.manifest["counts"], "methods_done": done,
              "neighbour_lists": _list_fingerprints(out)},
      extra={"stages": stages, "code": code, "run": run})


def _list_fingerprints(out: Path) -> dict[str, str]:
  """sha256 of the ids of every finished neighbour list under `out`, by list name."""
  found = {}
  for directory in sorted((out / "neighbours").glob("*")):
    manifest = io.read_manifest(directory)
    if manifest and manifest.get("complete") and "fingerprints" in manifest:
      found[directory.name] = manifest["fingerprints"]["neighbours"]
  return found


def default_log_setup() -> None:
  logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s",
                      datefmt="%H:%M:%S")
  logging.getLogger("longjax").setLevel(logging.INFO)  # ours at INFO; libraries' chatter not
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
