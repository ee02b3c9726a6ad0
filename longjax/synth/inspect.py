"""`python -m longjax.synth inspect`: per-method data diagnostics before any training.

On the first N samples (seed 0, shard 0 of 1) of each method an index has built, at one length L:

* structure: tokens and documents per sample (from the provenance: `spans` for Standard, KNN,
  ICLM and Quest; for NExtLong the chunks whose first token lies inside the sample, counted by
  their source documents), and how many tokens of the boundary convention
  (`Tokenizer.boundaries.start` / `.end`) each sample holds, plus, separately, the tokenizer's
  BOS/EOS ids outside the convention: a token only one method emits is a confound;
* adjacent similarity: the mean dot product of the L2-normalised embeddings of consecutive pieces
  (documents; NExtLong: chunks), from the vectors the index stored, else from the index's embedder
  on the store texts; skipped with a note when the index has neither;
* the long-range dependency (LRD) score, below.

Long-range dependency score. A reference causal LM (default SmolLM2-135M) scores each sample of
R tokens x_0..x_{R-1} (R = L, or fewer after re-encoding, below). The scored span is the last
quarter, targets t in [q0, R) with q0 = R - R // 4. NLL_full is the mean of -log p(x_t | x_0..
x_{t-1}) over the span. NLL_c ("only the last c tokens of context") feeds the model the c tokens
right before the span plus the span, x_{q0-c}..x_{R-1}, as a fresh sequence (positions from 0,
nothing prepended), so target t sees x_{q0-c}..x_{t-1}: c tokens for the first target, c + R//4 - 1
for the last. LRD_c = NLL_c - NLL_full per sample; > 0 means the first q0 - c tokens of the sample
help predict its end, i.e. the data rewards long context. Contexts with c >= q0 are dropped.

When the index tokenizer is not the reference model's, each sample is re-encoded: the text
between boundary tokens is decoded and encoded with the reference tokenizer, the boundaries are
written in the reference's convention, and the first L reference tokens are scored (R is the
shortest re-encoded sample, if that is below L; the output says so).

Every mean comes with a 95% percentile-bootstrap interval over samples (seeded).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from longjax.io import atomic_path, format_length, read_manifest, write_json, write_manifest
from longjax.models.tokenizer import Tokenizer, load_tokenizer_spec
from longjax.progress import silent
from longjax.synth import chunking, corpus
from longjax.synth.methods import METHODS
from longjax.synth.methods.task_names import IndexInfo

DEFAULT_SAMPLES = 3
DEFAULT_CONTEXTS = (512, 1024)
BOOTSTRAP_RESAMPLES = 2000
_log = logging.getLogger("longjax.synth")


# ---------------------------------------------------------------------------------------------
# Statistics


def mean_interval(values: Sequence[float], *, seed: int = 0,
                  resamples: int = BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
  """{"mean", "ci95": [lo, hi]}: the 95% percentile-bootstrap interval of the mean over samples."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return {"mean": None, "ci95": [None, None]}
  means = v[np.random.default_rng(seed).integers(0, v.size, (resamples, v.size))].mean(axis=1)
  lo, hi = np.quantile(means, [0.025, 0.975])
  return {"mean": float(v.mean()), "ci95": [float(lo), float(hi)]}


# ---------------------------------------------------------------------------------------------
# Structure: boundaries, documents, adjacent similarity


def boundary_counts(targets: Sequence[int], tokenizer: Tokenizer) -> dict[str, int]:
  """Boundary-convention tokens in a sample, and BOS/EOS ids outside the convention.

  Keys: `boundary_start`, `boundary_end`, and `bos <id>` / `eos <id>` for a tokenizer BOS/EOS
  that is not a boundary token (SmolLM2's chat markers `<|im_start|>` 1, `<|im_end|>` 2).
  """
  t = np.asarray(targets)
  b = tokenizer.boundaries
  out = {"boundary_start": int(np.isin(t, list(b.start)).sum()),
         "boundary_end": int(np.isin(t, list(b.end)).sum())}
  for name, i in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id)):
    if i is not None and i not in b.ids:
      out[f"{name} {i}"] = int((t == i).sum())
  return out


def span_pieces(prov: Mapping[str, Any]) -> list[tuple[int, int]] | None:
  """(document, tokens) of each span of a sample built from document spans (`[doc, start, end]`,
  Quest's `[keyword, doc, start, end]`), in sample order; None for other provenance."""
  if "spans" not in prov:
    return None
  return [(int(s[-3]), int(s[-1]) - int(s[-2])) for s in prov["spans"]]


class IndexReader:
  """What the diagnostics read from an index: which pieces make a sample, texts and vectors.

  A piece is a document (span-based methods) or a NExtLong chunk; `unit` names which.
  """

  def __init__(self, index_dir: Path, tokenizer: Tokenizer, embedder: str | None):
    self.index_dir, self.tokenizer, self.embedder_name = index_dir, tokenizer, embedder
    self.store = corpus.open_store(index_dir)

  @functools.cached_property
  def _nextlong(self) -> tuple[chunking.ChunkStore, int]:
    """NExtLong's chunk store and the length in tokens of its piece separator."""
    cfg = read_manifest(self.index_dir / "nextlong")["config"]
    return (chunking.open_chunk_store(self.index_dir, cfg["chunk_size"]),
            len(self.tokenizer.encode(cfg["sep"])))

  def pieces(self, prov: dict[str, Any], length: int) -> tuple[str, list[int], list[int]]:
    """(unit, piece ids in sample order, source document of each piece) of one sample."""
    spans = span_pieces(prov)
    if spans is not None:
      docs = [d for d, _ in spans]
      return "document", docs, docs
    chunks, _ = self._nextlong
    started = [c for c, _ in self._chunk_layout(prov, length)]
    return "chunk", started, [int(chunks.doc_of_chunk[c]) for c in started]

  def token_pieces(self, prov: dict[str, Any], length: int) -> list[tuple[int, int]]:
    """(source document, tokens) of each run of one sample's tokens, in order, covering its
    `length` tokens: its document spans, or NExtLong's start tokens, chunks and the separators
    between them (the layout tokens with document -1)."""
    spans = span_pieces(prov)
    if spans is not None:
      return spans
    chunks, sep = self._nextlong
    runs = [(-1, len(self.tokenizer.boundaries.start))]
    for c, n in self._chunk_layout(prov, length):  # a separator follows every chunk but the
      runs += [(int(chunks.doc_of_chunk[c]), n), (-1, sep)]  # sample's last, which T cuts
    out, total = [], 0
    for doc, n in runs:  # the sample ends at `length`, inside a chunk or the separator after it
      if total < length and n:
        out.append((doc, min(n, length - total)))
        total += out[-1][1]
    return out

  def _chunk_layout(self, prov: dict[str, Any], length: int) -> list[tuple[int, int]]:
    """(chunk, its tokens) of each NExtLong chunk that starts inside the sample, in order.

    NExtLong lays a sample out as boundaries.start, m_1, sep, n_11, sep, ..., each chunk
    tokenized alone (methods/nextlong.py, `assemble_sample`).
    """
    if "meta_chunks" not in prov:
      raise ValueError(f"unknown provenance format (keys {sorted(prov)}): expected 'spans' or "
                       "NExtLong's 'meta_chunks'")
    chunks, sep = self._nextlong
    order = [c for m, negs in zip(prov["meta_chunks"], prov["negatives"]) for c in (m, *negs)]
    pos, started = len(self.tokenizer.boundaries.start), []
    for c in order:
      if pos >= length:
        break
      n = len(self.tokenizer.encode(chunks.text(c)))
      started.append((c, n))
      pos += n + sep
    return started

  def vectors(self, unit: str) -> tuple[Callable[[list[int]], np.ndarray] | None, str]:
    """(ids -> unit vectors [n, d], where they come from); (None, why) when there are none."""
    if unit == "document":
      collection, text = "docs", self.store.text
    else:
      chunks = self._nextlong[0]
      collection, text = f"chunks-{chunks.size}", chunks.text
    stored = self.index_dir / "embeddings" / collection  # neighbours.embed_and_index's layout
    m = read_manifest(stored)
    if m is not None and m.get("complete"):
      vecs = np.load(stored / "vectors.npy", mmap_mode="r")
      return ((lambda ids: np.asarray(vecs[ids])),
              f"stored {m['config']['embedder']} vectors of {unit}s")
    if self.embedder_name is None:
      return None, "none: the index was built without an embedder"
    embedder = self._embedder
    return (lambda ids: embedder.embed([text(i) for i in ids])), f"{embedder.name} on {unit}s"

  @functools.cached_property
  def _embedder(self):
    from longjax.synth.embed import make_embedder  # pylint: disable=import-outside-toplevel
    return make_embedder(self.embedder_name)


def adjacent_similarity(ids: Sequence[int],
                        vectors: Callable[[list[int]], np.ndarray]) -> float | None:
  """Mean dot product of the vectors of consecutive pieces; None with fewer than two pieces."""
  if len(ids) < 2:
    return None
  v = vectors(list(ids))
  return float(np.mean(np.sum(v[:-1] * v[1:], axis=1)))


# ---------------------------------------------------------------------------------------------
# Long-range dependency score


def reencode(targets: Sequence[int], source: Tokenizer, target: Tokenizer) -> list[int]:
  """A sample in `target`'s tokens: texts between boundary tokens re-encoded, and each run of
  boundary tokens written as `target`'s end (after text) and start (before text) tokens."""
  groups = [(is_b, list(g)) for is_b, g in
            itertools.groupby((int(t) for t in targets), source.boundaries.ids.__contains__)]
  out: list[int] = []
  for i, (is_boundary, ids) in enumerate(groups):
    if not is_boundary:
      out += target.encode(source.decode(ids))
      continue
    out += list(target.boundaries.end) if i > 0 else []
    out += list(target.boundaries.start) if i < len(groups) - 1 else []
  return out


def scored_nll(model, tokens: np.ndarray, contexts: Sequence[int], *, batch_size: int = 1,
               progress: Callable[..., Iterable[Any]] = silent,
               desc: str = "") -> dict[str, np.ndarray]:
  """Mean NLL per sample over the last quarter (module docstring), with full and c contexts.

  tokens [N, R] -> {"full": [N], "c<c>": [N] for each c}. One jit per input shape: [b, R] and
  [b, c + R // 4]; the first is shared across calls with the same R.
  """
  from longjax.eval.position_loss import token_nll  # pylint: disable=import-outside-toplevel
  n, r = tokens.shape
  q0 = r - r // 4
  if any(not 0 < c < q0 for c in contexts):
    raise ValueError(f"contexts {list(contexts)} must be in (0, {q0}) for {r} tokens")
  out: dict[str, list[np.ndarray]] = {"full": [], **{f"c{c}": [] for c in contexts}}
  for i in progress(range(0, n, batch_size), desc=desc, unit="batch"):
    x = tokens[i:i + batch_size]
    # token_nll row j scores target j + 1, so target q0 is column q0 - 1 (c - 1 in a window).
    out["full"].append(token_nll(model, x, batch_size=len(x))[:, q0 - 1:].mean(axis=1))
    for c in contexts:
      window = token_nll(model, x[:, q0 - c:], batch_size=len(x))
      out[f"c{c}"].append(window[:, c - 1:].mean(axis=1))
  return {k: np.concatenate(v) for k, v in out.items()}


def load_reference(spec: str, dtype: str = "float32"):
  """(model, its tokenizer) from `smollm2` or an HF Llama checkpoint directory. float32 on a
  CPU; bfloat16 on a GPU runs the fused attention kernel (what `--dtype` picks)."""
  import jax  # pylint: disable=import-outside-toplevel
  from longjax.models import load_hf, smollm2_checkpoint  # pylint: disable=import-outside-toplevel
  path = smollm2_checkpoint() if spec == "smollm2" else Path(spec)
  # Forward only: on a CPU the dense attention is ~10x faster than the blockwise kernel here
  # (SmolLM2 at 1,249 tokens: 3.3 s against 30 s on 2 cores).
  impl = "reference" if jax.default_backend() == "cpu" else None
  return load_hf(path, dtype=dtype, attention_impl=impl), load_tokenizer_spec(spec)


def score_under(result: dict[str, Any], model: str) -> None:
  """Makes `model` the reference that scores a selection (`--score DIR --model M`): a model
  trained from the selection's reference, e.g. at a longer context. The samples are token ids
  in the selection's reference tokenizer (re-encoded to it or not), so M's tokenizer must have
  the same piece at every id and the same document boundaries."""
  if _same_tokenizer(model, result["model"]):
    return
  chosen, selected = (load_tokenizer_spec(s) for s in (model, result["model"]))
  if (chosen.pieces() != selected.pieces()
      or chosen.boundaries.signature() != selected.boundaries.signature()):
    raise ValueError(f"--model {model}: its tokenizer ({chosen.vocab_size} ids) is not the one "
                     f"the samples were encoded with ({result['model']}'s, "
                     f"{selected.vocab_size} ids); select them again with --model {model}")
  result["notes"].append(f"selected with {result['model']}, scored under {model} "
                         "(the same tokenizer)")
  result["model"] = model


def _same_tokenizer(a: str, b: str) -> bool:
  return a == b or (Path(a).exists() and Path(a).resolve() == Path(b).resolve())


# ---------------------------------------------------------------------------------------------
# The command


def _check_request(info: IndexInfo, length: int, methods: Sequence[str] | None) -> list[str]:
  """The methods to inspect; a ValueError for an unknown or unbuilt method or an unbuilt length."""
  built = [m for m in METHODS if length in info.built.get(m, ())]
  if not built and info.built:
    lengths = sorted({n for ns in info.built.values() for n in ns})
    raise ValueError(f"{info.index_dir}: length {length} was not built (built: {lengths}); "
                     "rebuild with --lengths including it")
  if methods is None:
    if not built:
      raise ValueError(f"{info.index_dir}: no synthesis method was built")
    return built
  for m in methods:
    if m not in METHODS:
      raise ValueError(f"unknown method {m!r}; known: {sorted(METHODS)}")
    if m not in built:
      at = f" at length {length} (built at {list(info.built[m])})" if m in info.built else ""
      raise ValueError(f"{info.index_dir}: method {m!r} was not built{at} (built: {built})")
  return list(methods)


def _method_structure(name: str, examples: list[dict[str, Any]], reader: IndexReader,
                      length: int) -> tuple[list[dict[str, Any]], str]:
  """Per-sample structure records of one method, and where similarities came from."""
  records, source = [], ""
  for ex in examples:
    prov = json.loads(ex["provenance"])
    unit, ids, docs = reader.pieces(prov, length)
    vectors, source = reader.vectors(unit)
    n_docs = len(set(docs))
    records.append({"tokens": len(ex["targets"]), "documents": n_docs,
                    "tokens_per_document": len(ex["targets"]) / max(n_docs, 1),
                    "unit": unit, "pieces": len(ids),
                    "adjacent_similarity": vectors and adjacent_similarity(ids, vectors),
                    **boundary_counts(ex["targets"], reader.tokenizer)})
  _log.info("%s: %d samples read; similarity from %s", name, len(records), source)
  return records, source


def _summary(records: list[dict[str, Any]], seed: int) -> dict[str, Any]:
  """Mean and interval of every numeric per-sample field over the samples that have it."""
  return {k: mean_interval([r[k] for r in records if r[k] is not None], seed=seed)
          for k in records[0] if k != "unit"}


def select_samples(index_dir: str | Path, *, length: int, model: str = "smollm2",
                   samples: int = DEFAULT_SAMPLES, methods: Sequence[str] | None = None,
                   seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The index half: every requested method's samples, their structure, and their tokens in the
  reference model's tokenizer (int32 [n, R], all cut to the shortest R <= L).

  Needs the index (and only the reference's tokenizer, not its weights), so it runs where the
  index is; `score_samples` runs anywhere the model fits (`--select-only` / `--score`).
  """
  start = time.perf_counter()
  info = IndexInfo.read(index_dir)
  names = _check_request(info, length, methods)
  if samples < 1:
    raise ValueError(f"--samples ({samples}) must be >= 1")
  top = read_manifest(info.index_dir)
  tokenizer = load_tokenizer_spec(info.tokenizer)
  reader = IndexReader(info.index_dir, tokenizer, top["config"].get("embedder"))
  result: dict[str, Any] = {
      "index_dir": str(info.index_dir), "corpus": info.corpus, "length": length,
      "tokenizer": info.tokenizer, "boundaries": {**tokenizer.boundaries.signature(),
                                                  "rule": tokenizer.boundaries.rule},
      "index_inputs": top["inputs"], "model": model, "samples_requested": samples, "seed": seed,
      "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "methods": {}, "notes": [], "seconds": {}}
  picked: dict[str, list[dict[str, Any]]] = {}
  for name in names:
    t = time.perf_counter()
    examples = METHODS[name].examples(info.index_dir, length=length, tokenizer=tokenizer,
                                      shard=0, num_shards=1, seed=seed)
    picked[name] = list(itertools.islice(examples, samples))
    if not picked[name]:
      result["notes"].append(f"{name}: no samples of length {length}; left out")
      continue
    records, source = _method_structure(name, picked[name], reader, length)
    result["methods"][name] = {"samples": len(records), "similarity_source": source,
                               "per_sample": records, "seconds": {"examples":
                                                                  time.perf_counter() - t}}
  reencoded = not _same_tokenizer(info.tokenizer, model)
  ref_tokenizer = load_tokenizer_spec(model) if reencoded else tokenizer
  seqs = {n: [reencode(ex["targets"], tokenizer, ref_tokenizer) if reencoded
              else list(ex["targets"]) for ex in picked[n]] for n in result["methods"]}
  scored = min([length] + [len(s) for v in seqs.values() for s in v])
  if reencoded:
    result["notes"].append(f"samples re-encoded from {info.tokenizer} to {model}'s tokenizer; "
                           f"the first {scored} reference tokens are scored")
  result.update(reencoded=reencoded, scored_length=scored)
  result["seconds"]["select"] = time.perf_counter() - start
  return result, {n: np.asarray([s[:scored] for s in v], np.int32) for n, v in seqs.items()}


def score_samples(result: dict[str, Any], tokens: dict[str, np.ndarray], *,
                  contexts: Sequence[int] = DEFAULT_CONTEXTS, dtype: str = "float32",
                  prefix: int | None = None,
                  progress: Callable[..., Iterable[Any]] = silent) -> dict[str, Any]:
  """The model half: the LRD score of every method's samples (`select_samples`' output), the
  summaries with intervals; returns `result`, completed.

  `prefix` scores only each sample's first `prefix` tokens: the way to score samples longer
  than the reference was trained on (the structure columns still describe whole samples).
  """
  start = time.perf_counter()
  if prefix is not None:
    tokens = _prefix(result, tokens, prefix)
  scored = result["scored_length"]
  q0 = scored - scored // 4
  kept = sorted(c for c in set(contexts) if 0 < c < q0)
  if kept != sorted(set(contexts)):
    result["notes"].append(f"contexts {sorted(set(contexts) - set(kept))} dropped: they must "
                           f"be shorter than the {q0} tokens before the scored quarter")
  result.update(scored_span=[q0, scored], contexts=kept, dtype=dtype)
  ref_model, _ = load_reference(result["model"], dtype)
  trained = ref_model.config.max_position_embeddings
  if scored > trained:
    raise ValueError(f"reference {result['model']} was trained to {trained} positions, but the "
                     f"samples are scored at {scored}: past its window the full-context NLL is "
                     f"meaningless (SmolLM2 at 16K: 6.6 nats/token against 3.3 within its "
                     f"window); inspect a length <= {trained}, score a --prefix <= {trained} "
                     f"or pass a longer-context --model")
  result["seconds"]["model_load"] = time.perf_counter() - start
  for name, entry in result["methods"].items():
    t, cpu = time.perf_counter(), time.process_time()
    nll = scored_nll(ref_model, tokens[name], kept, progress=progress, desc=f"{name} LRD")
    for i, rec in enumerate(entry["per_sample"]):
      rec["nll_full"] = float(nll["full"][i])
      for c in kept:
        rec[f"nll_c{c}"] = float(nll[f"c{c}"][i])
        rec[f"lrd_c{c}"] = rec[f"nll_c{c}"] - rec["nll_full"]
    entry["seconds"].update(lrd=time.perf_counter() - t, lrd_cpu=time.process_time() - cpu)
    entry.update(_summary(entry["per_sample"], result["seed"]))
    _log.info("%s: LRD %s (%.1f s)", name, {c: round(entry[f"lrd_c{c}"]["mean"], 4)
                                             for c in kept}, entry["seconds"]["lrd"])
  result["seconds"]["total"] = result["seconds"]["select"] + time.perf_counter() - start
  return result


def _prefix(result: dict[str, Any], tokens: dict[str, np.ndarray],
            prefix: int) -> dict[str, np.ndarray]:
  """Each sample's first `prefix` tokens; `result` records the cut in its notes."""
  whole = result["scored_length"]
  if not 0 < prefix <= whole:
    raise ValueError(f"--prefix ({prefix}) must be in 1..{whole}, the selected samples' length")
  if prefix < whole:
    result["notes"].append(f"scored the first {prefix} of each sample's {whole} tokens "
                           f"(--prefix); the structure columns describe whole samples")
  result.update(scored_length=prefix, prefix=prefix, selected_length=whole)
  return {name: t[:, :prefix] for name, t in tokens.items()}


def inspect_index(index_dir: str | Path, *, length: int, model: str = "smollm2",
                  samples: int = DEFAULT_SAMPLES, contexts: Sequence[int] = DEFAULT_CONTEXTS,
                  methods: Sequence[str] | None = None, seed: int = 0,
                  progress: Callable[..., Iterable[Any]] = silent) -> dict[str, Any]:
  """The diagnostics of every requested method (module docstring), as a JSON-ready dict."""
  result, tokens = select_samples(index_dir, length=length, model=model, samples=samples,
                                  methods=methods, seed=seed)
  return score_samples(result, tokens, contexts=contexts, progress=progress)


def write_selection(result: dict[str, Any], tokens: dict[str, np.ndarray],
                    out: str | Path) -> Path:
  """`out/selection.json` + `out/samples.npz`: what `score_samples` needs, without the index.

  Token ids are stored as uint16 where the vocabulary allows (half the bytes to ship).
  """
  out = Path(out)
  small = all(t.size == 0 or int(t.max()) < 1 << 16 for t in tokens.values())
  with atomic_path(out / "samples.npz") as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **{n: t.astype(np.uint16 if small else np.int32) for n, t in tokens.items()})
  write_json(out / "selection.json", result)
  return out


def read_selection(directory: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """The inverse of `write_selection`."""
  directory = Path(directory)
  path = directory / "selection.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found; write it with `inspect --select-only`")
  result = json.loads(path.read_text())
  with np.load(directory / "samples.npz") as npz:
    tokens = {n: npz[n].astype(np.int32) for n in result["methods"]}
  return result, tokens


def _cell(stat: dict[str, Any] | None, digits: int) -> str:
  if stat is None or stat["mean"] is None:
    return "-"
  lo, hi = stat["ci95"]
  return f"{stat['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown_table(result: dict[str, Any]) -> str:
  """One row per method: mean [95% interval] of each diagnostic (the structure columns alone
  for a `--select-only` result, which has no scores yet)."""
  scored = "contexts" in result
  cs = result["contexts"] if scored else []
  others = sorted({k for m in result["methods"].values() for k in m["per_sample"][0]
                   if k.startswith(("bos ", "eos "))})
  head = (["method", "n", "docs/sample", "tokens/doc", "start tok", "end tok"] + others
          + ["adj. sim"] + (["NLL full"] if scored else []) + [f"LRD c={c}" for c in cs])
  rows = [head, ["---"] * len(head)]
  for name, m in result["methods"].items():
    m = m if scored else {**m, **_summary(m["per_sample"], result["seed"])}
    rows.append([name, str(m["samples"]), _cell(m["documents"], 1),
                 _cell(m["tokens_per_document"], 0), _cell(m["boundary_start"], 1),
                 _cell(m["boundary_end"], 1)] + [_cell(m.get(k), 1) for k in others]
                + [_cell(m.get("adjacent_similarity"), 3)]
                + ([_cell(m["nll_full"], 3)] if scored else [])
                + [_cell(m[f"lrd_c{c}"], 4) for c in cs])
  what = (f"reference {result['model']}, scored tokens {result['scored_span'][0]}-"
          f"{result['scored_span'][1]}" if scored else "structure only (not scored yet)")
  title = (f"{result['corpus']} at L={format_length(result['length'])}, {what}, mean [95% "
           "bootstrap interval] over samples")
  return "\n".join([title, ""] + ["| " + " | ".join(r) + " |" for r in rows])


def plot(result: dict[str, Any], path: str | Path) -> None:
  """inspect.png: LRD per method and context, documents, tokens/document, adjacent similarity.

  Error bars are the 95% bootstrap intervals.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  names = list(result["methods"])
  x = np.arange(len(names))
  fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))

  def bars(ax, key, offset=0.0, width=0.8, label=None):
    stats = [result["methods"][n][key] for n in names]
    mean = np.array([s["mean"] for s in stats])
    err = np.abs(np.array([s["ci95"] for s in stats]).T - mean)
    ax.bar(x + offset, mean, width, yerr=err, capsize=3, label=label)

  width = 0.8 / max(len(result["contexts"]), 1)
  for i, c in enumerate(result["contexts"]):
    bars(axes[0], f"lrd_c{c}", (i - (len(result["contexts"]) - 1) / 2) * width, width,
         f"c = {c}")
  axes[0].axhline(0, color="k", lw=0.5)
  axes[0].set(title=f"LRD: NLL(last c tokens) - NLL(full), nats/token\n{result['model']}, "
              f"last quarter of {result['scored_length']} tokens", ylabel="nats / token")
  axes[0].legend()
  bars(axes[1], "documents")
  axes[1].set(title="documents per sample")
  bars(axes[2], "tokens_per_document")
  axes[2].set(title="tokens per document")
  if all(result["methods"][n]["adjacent_similarity"]["mean"] is not None for n in names):
    bars(axes[3], "adjacent_similarity")
  axes[3].set(title="adjacent similarity (embedding dot product)")
  for ax in axes:
    ax.set_xticks(x, names)
  fig.suptitle(f"{result['corpus']}, L = {result['length']}, {result['samples_requested']} "
               "samples per method (95% bootstrap intervals)")
  fig.tight_layout()
  with atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=110)
  plt.close(fig)


def write_outputs(result: dict[str, Any], out: str | Path) -> Path:
  """`out/inspect.json`, `out/inspect.png` and `out/manifest.json` (written last)."""
  out = Path(out)
  write_json(out / "inspect.json", result)
  plot(result, out / "inspect.png")
  write_manifest(
      out, kind="inspect", config={k: result[k] for k in (
          "index_dir", "length", "model", "samples_requested", "contexts", "seed")}
      | {"prefix": result.get("prefix")},
      inputs={"index": result["index_inputs"]},
      counts={n: m["samples"] for n, m in result["methods"].items()},
      extra={"command": result.get("command")})
  return out
