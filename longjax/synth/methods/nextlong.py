"""NExtLong (Gao et al., arXiv 2501.12766): meta-chunks interleaved with dense hard negatives.

specs/nextlong.md §4-6. A meta-document is a run of consecutive non-blank 2048-character
meta-chunks m_1..m_p of one corpus document (`synth.chunking`); its sample is

    start  m_1 n_11..n_1k  m_2 n_21..n_2k  ...  m_p n_p1..n_pk'        (pieces joined by `sep`)

where `start` is the tokenizer's document-start tokens (`Tokenizer.boundaries`; empty for most
tokenizers: the comparison's one boundary convention, not the paper's BOS), and n_i1..n_ik are
the most similar chunks of the whole chunk index, in rank order, excluding m_i itself, every
chunk of the meta-document's source document, chunks already accepted for this sample, and
(optionally) chunks whose normalised text equals a meta-chunk of the sample or an accepted chunk.

Assembly is in tokens, so a sample keeps every meta-chunk of its meta-document (the paper
estimates k from characters and cuts the tokenized text at T, which loses later meta-chunks
whenever the estimate is off; docs/methods.md): each piece is tokenized on its own, k starts at
the paper's k = max(0, ceil((T·E·w − S) / (p·s))) and is then set to the largest uniform k for
blocks 1..p−1 such that m_p still ends inside T; the last block takes negatives until the sample
reaches T, and only those are cut. A sample shorter than T (the index ran out of negatives) is
discarded.

Long documents are split into several meta-documents, each at most half of L tokens
(`max_meta_share`): the method is meta-chunks *interleaved* with negatives, and the uniform k
above falls to 0 once the meta-chunks fill about half of T (the sample is then the document
verbatim with the negatives of its last block behind it: 10.5 % of 3,000 Wikipedia articles'
meta-documents of two or more chunks at 16K with meta-documents of up to L tokens, 2.3 % with
this cap; experiments/bench/plan_structure.py). The paper's meta-documents are
short beside T (S ≪ T·E·w), so the cap only touches documents longer than the paper's. `build`
groups each document's meta-chunks, in order, into meta-documents of at most that many tokens
(whole chunks; one chunk longer than L alone is the only case that loses text) and stores them
per length in `nextlong/plans/` with every chunk's token count; `examples` walks a
seeded permutation of them, each shard a contiguous range. The plans are per document
(`split_document`), so the Beam build computes them on its workers (synth/pipeline/stages.py)
and `build` finds them finished. `build` also assembles a sample of them to report the shares
of samples discarded and of samples that lost a meta-chunk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from longjax import io
from longjax.models.tokenizer import Tokenizer
from longjax.progress import Progress, silent
from longjax.synth import artifacts, chunking
from longjax.synth.methods import contexts, neighbours
from longjax.synth.methods.base import BuildContext, shard_range
from longjax.synth.methods.options import MethodOptions

_log = logging.getLogger(__name__)

# search(chunk_id, fetch) -> chunk ids, most similar first (may include the query itself).
SearchFn = Callable[[int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class NExtLongOptions(MethodOptions):
  """NExtLong options (`config["nextlong"]`); defaults are the spec's (§12)."""
  chunk_size: int = 2048  # s, characters
  chars_per_token: float = 4.0  # E
  overgen: float = 1.5  # w
  sep: str = "\n\n"
  margin: int = 32
  fetch_cap: int = 4096
  dedup_text: bool = True
  max_meta_share: float = 0.5  # a meta-document holds at most this share of L tokens
  precompute_k: int = 0  # > 0: build top-K neighbour lists instead of searching while streaming
  check_samples: int = 64  # samples `build` assembles to measure discards and lost meta-chunks

  def __post_init__(self):
    for name in ("chunk_size", "fetch_cap"):
      if getattr(self, name) < 1:
        raise ValueError(f"nextlong.{name} ({getattr(self, name)}) must be >= 1")
    for name in ("chars_per_token", "overgen"):
      if not getattr(self, name) > 0:
        raise ValueError(f"nextlong.{name} ({getattr(self, name)}) must be > 0")
    if not 0 < self.max_meta_share <= 1:
      raise ValueError(f"nextlong.max_meta_share ({self.max_meta_share}) must be in (0, 1]")
    if self.margin < 0:
      raise ValueError(f"nextlong.margin ({self.margin}) must be >= 0")
    for name in ("precompute_k", "check_samples"):
      if getattr(self, name) < 0:
        raise ValueError(f"nextlong.{name} ({getattr(self, name)}) must be >= 0")


def num_negatives(target_tokens: int, doc_chars: int, p: int, cfg: NExtLongOptions) -> int:
  """k = max(0, ceil((T·E·w − S) / (p·s))) (§5)."""
  if p < 1:
    raise ValueError(f"a meta-document needs >= 1 non-blank meta-chunk, got p = {p}")
  budget = target_tokens * cfg.chars_per_token * cfg.overgen
  return max(0, math.ceil((budget - doc_chars) / (p * cfg.chunk_size)))


def fetch_size(k: int, used: int, p: int, cfg: NExtLongOptions) -> int:
  """Candidates to retrieve so that k survive the exclusions (§4)."""
  return min(k + used + p + cfg.margin, cfg.fetch_cap)


def normalized_hash(text: str) -> str:
  """Hash of the text with case and whitespace runs normalised (exclusion (d))."""
  return hashlib.blake2b(" ".join(text.split()).lower().encode(), digest_size=16).hexdigest()


@dataclasses.dataclass
class ChunkSource:
  """What sample assembly reads: chunk texts, owners and a neighbour search."""
  text: Callable[[int], str]
  doc_of_chunk: np.ndarray  # int64 [num_chunks]
  search: SearchFn


class _Selector:
  """Hard-negative selection for one sample; remembers what the sample already holds."""

  def __init__(self, source: ChunkSource, meta_doc: int, metas: Sequence[int],
               cfg: NExtLongOptions):
    self.source, self.meta_doc, self.metas, self.cfg = source, meta_doc, list(metas), cfg
    self.used: set[int] = set()
    self.shortfall = 0  # negatives missing against the requested counts
    self._hash: dict[int, str] = {}
    # Exclusion (d) covers every meta-chunk of the sample, not only m_i: a copy of m_1 in block 2
    # repeats m_1 just as m_1 itself would, and (b) already excludes m_1 from every block.
    self.used_hashes = {self._h(m) for m in self.metas} if cfg.dedup_text else set()

  def _h(self, chunk: int) -> str:
    if chunk not in self._hash:
      self._hash[chunk] = normalized_hash(self.source.text(chunk))
    return self._hash[chunk]

  def candidates(self, meta: int, want: int):
    """Yields acceptable candidates for `meta` in rank order; fetches more when exhausted."""
    fetch = fetch_size(want, len(self.used), len(self.metas), self.cfg)
    seen = 0
    while True:
      ranked = self.source.search(meta, fetch)
      for c in ranked[seen:]:
        c = int(c)
        if (c == meta or c < 0 or c in self.used or
            int(self.source.doc_of_chunk[c]) == self.meta_doc):
          continue
        if self.cfg.dedup_text and self._h(c) in self.used_hashes:
          continue
        yield c
      seen = len(ranked)
      if len(ranked) < fetch or fetch >= self.cfg.fetch_cap:
        return  # the index (or a precomputed list) has no more; or the cap is reached
      fetch = min(2 * fetch, self.cfg.fetch_cap)

  def accept(self, chunk: int) -> None:
    self.used.add(chunk)
    if self.cfg.dedup_text:
      self.used_hashes.add(self._h(chunk))

  def select(self, meta: int, k: int) -> list[int]:
    """Up to k negatives for `meta` (fewer only when the candidates run out)."""
    out: list[int] = []
    if k > 0:
      for c in self.candidates(meta, k):
        self.accept(c)
        out.append(c)
        if len(out) == k:
          break
    self.shortfall += k - len(out)
    return out


def split_document(doc: int, chunks: range, tokens: Sequence[int], *, length: int,
                   start_tokens: int, sep_tokens: int) -> list[tuple[int, int, int]]:
  """One document's meta-documents: (doc, first_chunk, end_chunk) rows, half-open, in order.

  `chunks`: its chunk ids; `tokens`: their token counts, aligned. A meta-document's size is
  `start_tokens` + its chunks' tokens + one `sep` between chunks, i.e. the sample's length
  through its last meta-chunk with no negatives, at most `length` (the meta-document cap,
  `meta_tokens`). Chunks are taken greedily in order; a chunk longer than `length` on its own is
  a meta-document of its own.
  """
  rows = []
  first, size = None, 0
  for c, n in zip(chunks, tokens):
    add = int(n) + (sep_tokens if first is not None else start_tokens)
    if first is not None and size + add > length:
      rows.append((doc, first, c))
      first, add = None, int(n) + start_tokens
    if first is None:
      first, size = c, 0
    size += add
  if first is not None:
    rows.append((doc, first, chunks.stop))
  return rows


def meta_documents(doc_chunks: Sequence[range], chunk_tokens: np.ndarray, *, length: int,
                   start_tokens: int, sep_tokens: int, first_doc: int = 0,
                   first_chunk: int = 0) -> np.ndarray:
  """`split_document` of documents `first_doc`, `first_doc + 1`... (their chunk ids in
  `doc_chunks`; chunk c's tokens at `chunk_tokens[c - first_chunk]`, so that a slice of the
  corpus needs only its own counts): int64 [M, 3] rows (doc_id, first_chunk, end_chunk)."""
  rows = [row for i, chunks in enumerate(doc_chunks)
          for row in split_document(first_doc + i, chunks,
                                    chunk_tokens[chunks.start - first_chunk:
                                                 chunks.stop - first_chunk],
                                    length=length, start_tokens=start_tokens,
                                    sep_tokens=sep_tokens)]
  return np.asarray(rows, np.int64).reshape(-1, 3)


PLANS = "plans"  # <index_dir>/nextlong/plans/: chunk_tokens.npy, L<length>.meta_docs.npy


def piece_tokens(tokenizer: Tokenizer, cfg: NExtLongOptions) -> tuple[int, int]:
  """(start tokens, `sep` tokens): what a meta-document adds to its chunks' tokens."""
  return len(tokenizer.boundaries.start), len(tokenizer.encode(cfg.sep))


def plans_key(chunks: chunking.ChunkStore, tokenizer: Tokenizer, cfg: NExtLongOptions,
              lengths: Sequence[int]) -> dict[str, Any]:
  """`config` and `inputs` of the plans (what `io.is_complete` compares)."""
  return {"config": {"chunk_size": cfg.chunk_size, "sep": cfg.sep, "lengths": list(lengths),
                     "max_meta_share": cfg.max_meta_share,
                     "tokenizer": contexts.tokenizer_signature(tokenizer)},
          "inputs": {"chunks": io.fingerprint_json(chunks.manifest["inputs"])}}


def build_plans(directory: Path, chunks: chunking.ChunkStore, tokenizer: Tokenizer,
                cfg: NExtLongOptions, lengths: Sequence[int], *,
                progress: Progress = silent) -> None:
  """Every chunk's token count and the meta-documents per length, unless an identical finished
  set is there (one the Beam build made, or an earlier run)."""
  key = plans_key(chunks, tokenizer, cfg, lengths)
  if io.is_complete(directory, **key):
    return
  n_docs = len(chunks.doc_chunk_offsets) - 1
  tokens, plans = slice_plans(chunks, tokenizer, cfg, lengths, 0, n_docs, progress=progress)
  write_plans(directory, key, tokens, plans)


def slice_plans(chunks: chunking.ChunkStore, tokenizer: Tokenizer, cfg: NExtLongOptions,
                lengths: Sequence[int], start: int, stop: int, *,
                progress: Progress = silent) -> tuple[np.ndarray, dict[int, np.ndarray]]:
  """The plans of documents [start, stop): the token counts of their chunks (ids
  `doc_chunk_offsets[start]` to `[stop]`) and their meta-documents per length. `build_plans`
  takes every document; a Beam task takes one slice (the driver concatenates them in order)."""
  first, end = int(chunks.doc_chunk_offsets[start]), int(chunks.doc_chunk_offsets[stop])
  tokens = contexts.count_tokens(chunks, np.arange(first, end), tokenizer, progress,
                                 with_boundaries=False)
  start_tokens, sep_tokens = piece_tokens(tokenizer, cfg)
  doc_chunks = [chunks.chunks_of(d) for d in range(start, stop)]
  return tokens, {n: meta_documents(doc_chunks, tokens, length=meta_tokens(n, cfg),
                                    start_tokens=start_tokens, sep_tokens=sep_tokens,
                                    first_doc=start, first_chunk=first)
                  for n in lengths}


def meta_tokens(length: int, cfg: NExtLongOptions) -> int:
  """The most tokens a meta-document of samples of `length` tokens holds."""
  return max(1, int(length * cfg.max_meta_share))


def write_plans(directory: Path, key: dict[str, Any], chunk_tokens: np.ndarray,
                plans: dict[int, np.ndarray]) -> None:
  """Writes the plans (`build_plans` here, the Beam build's assembly alike)."""
  directory = io.begin_stage(directory)
  io.write_npy(directory / "chunk_tokens.npy", np.asarray(chunk_tokens, np.int64))
  for length, plan in plans.items():
    io.write_npy(directory / f"L{length}.meta_docs.npy", plan)
  io.write_manifest(directory, kind="nextlong_plans",
                    counts={"chunks": len(chunk_tokens),
                            **{f"L{n}": {"meta_documents": len(p)} for n, p in plans.items()}},
                    **key)


def assemble_sample(source: ChunkSource, tokenizer: Tokenizer, *, meta_doc: int,
                    metas: Sequence[int], length: int,
                    cfg: NExtLongOptions) -> tuple[np.ndarray | None, dict[str, Any]]:
  """One sample in tokens (module docstring): every meta-chunk that fits in T survives the cut.

  Returns (np.int32[length], or None when the negatives ran out before T; provenance).
  """
  start = list(tokenizer.boundaries.start)
  sep = tokenizer.encode(cfg.sep)
  cache: dict[int, list[int]] = {}

  def toks(c: int) -> list[int]:
    if c not in cache:
      cache[c] = tokenizer.encode(source.text(c))
    return cache[c]

  def piece_len(c: int, first: bool) -> int:
    return len(toks(c)) + (0 if first else len(sep))

  def through_last_meta(k: int) -> tuple[int, _Selector, list[tuple[int, list[int]]]]:
    """Tokens up to the end of m_p when blocks 1..p-1 get k negatives each."""
    sel = _Selector(source, meta_doc, metas, cfg)
    blocks, total = [], len(start)
    for i, m in enumerate(metas):
      negs = sel.select(m, k) if i < len(metas) - 1 else []
      blocks.append((m, negs))
      total += piece_len(m, i == 0) + sum(piece_len(c, False) for c in negs)
    return total, sel, blocks

  doc_chars = sum(len(source.text(m)) for m in metas) + len(cfg.sep) * (len(metas) - 1)
  k = num_negatives(length, doc_chars, len(metas), cfg) if len(metas) > 1 else 0
  total, sel, blocks = through_last_meta(k)
  while k > 0 and total > length:  # too long: m_p would be cut
    k -= 1
    total, sel, blocks = through_last_meta(k)
  while len(metas) > 1:  # grow while m_p still fits
    nxt = through_last_meta(k + 1)
    if nxt[0] > length or nxt[1].shortfall > sel.shortfall:
      break
    k += 1
    total, sel, blocks = nxt
  last, last_negs = blocks[-1]
  for c in sel.candidates(last, max(k, 1)):  # the last block fills the rest of T
    if total >= length:
      break
    sel.accept(c)
    last_negs.append(c)
    total += piece_len(c, False)
  tokens = list(start)
  meta_spans = []  # token [start, end) of each meta-chunk
  for i, (m, negs) in enumerate(blocks):
    for j, c in enumerate((m, *negs)):
      if i or j:
        tokens += sep
      if j == 0:
        meta_spans.append((len(tokens), len(tokens) + len(toks(c))))
      tokens += toks(c)
  info = _provenance(meta_doc, blocks, k, sel, len(tokens))
  info["k_last"] = len(last_negs)
  info["meta_chunks_complete"] = sum(end <= length for _, end in meta_spans)
  if len(tokens) < length:
    return None, info
  return np.asarray(tokens[:length], np.int32), info


def cached_search(search: SearchFn) -> SearchFn:
  """Memoises `search` per query chunk, serving smaller fetches from the largest one made."""
  cache: dict[int, tuple[int, np.ndarray]] = {}  # chunk -> (fetch asked, result)

  def wrapped(chunk: int, fetch: int) -> np.ndarray:
    asked, have = cache.get(chunk, (0, None))
    if fetch > asked and (have is None or len(have) == asked):  # more may exist: search again
      have = np.asarray(search(chunk, fetch))
      cache[chunk] = (fetch, have)
    return have[:fetch]

  return wrapped


def _provenance(meta_doc: int, blocks: Sequence[tuple[int, list[int]]], k: int, sel: _Selector,
                tokens: int) -> dict[str, Any]:
  return {"doc_id": int(meta_doc), "meta_chunks": [int(m) for m, _ in blocks],
          "negatives": [[int(c) for c in negs] for _, negs in blocks], "k": int(k),
          "p": len(blocks), "tokens_before_truncation": int(tokens),
          "shortfall": int(sel.shortfall)}


def stream_samples(plan: np.ndarray, order: Sequence[int], source: ChunkSource,
                   tokenizer: Tokenizer, *, length: int,
                   cfg: NExtLongOptions) -> Iterator[tuple[np.ndarray | None, dict[str, Any]]]:
  """(tokens or None, provenance) for the meta-documents `plan[order]`, in that order."""
  for i in order:
    doc, first, end = (int(x) for x in plan[i])
    tokens, info = assemble_sample(source, tokenizer, meta_doc=doc, metas=list(range(first, end)),
                                   length=length, cfg=cfg)
    info["meta_document"] = int(i)
    yield tokens, info


class NExtLongMethod:
  """NExtLong (`longjax_<corpus>_nextlong_<length>`)."""
  name = "nextlong"
  options_type = NExtLongOptions

  def build(self, ctx: BuildContext) -> None:
    cfg = ctx.options(self)
    chunks = chunking.build_chunk_store(
        ctx.store, chunking.chunk_dir(ctx.index_dir, cfg.chunk_size), size=cfg.chunk_size,
        progress=ctx.progress)
    collection, source, inputs = neighbours.chunk_collection(chunks)
    vectors, index = neighbours.embed_and_index(ctx, collection, source, inputs)
    if cfg.precompute_k:
      from longjax.synth import retrieval
      retrieval.neighbour_lists(index, vectors, cfg.precompute_k, progress=ctx.progress,
                                out_dir=_lists_dir(ctx.index_dir, cfg))
    out = ctx.method_dir(self.name)
    build_plans(out / PLANS, chunks, ctx.tokenizer, cfg, ctx.lengths, progress=ctx.progress)
    chunk_tokens = np.load(out / PLANS / "chunk_tokens.npy")
    p = np.diff(chunks.doc_chunk_offsets)
    start_tokens, sep_tokens = piece_tokens(ctx.tokenizer, cfg)
    search = cached_search(lambda c, fetch: index.search(np.asarray(vectors[c:c + 1]), fetch)[0][0])
    source = ChunkSource(chunks.text, chunks.doc_of_chunk, search)
    stats: dict[str, Any] = {"documents": len(p), "documents_with_chunks": int((p > 0).sum()),
                             "chunks": len(chunks), "budget": {}}
    for length in ctx.lengths:
      plan = np.load(out / PLANS / f"L{length}.meta_docs.npy")
      stats[f"L{length}"] = self._length_stats(plan, chunk_tokens, length, start_tokens,
                                               sep_tokens)
      stats[f"L{length}"]["check"] = self._check(plan, source, ctx, length, cfg)
      source_tokens = int(chunk_tokens.sum())
      stats["budget"][f"L{length}"] = contexts.budget(
          samples=len(plan), length=length, documents_used=len(np.unique(plan[:, 0])),
          source_tokens=source_tokens,
          source_tokens_dropped=stats[f"L{length}"]["meta_chunk_tokens_cut"])
      ctx.log(f"nextlong L={length}: {stats[f'L{length}']}")
    skipped = [{"doc_id": int(d), "reason": "no non-blank meta-chunk: cannot be a meta-document "
                "(its text is not in the chunk index either)"} for d in np.flatnonzero(p == 0)]
    io.write_manifest(
        out, kind=self.name,
        config={**dataclasses.asdict(cfg), "collection": collection,
                "tokenizer": contexts.tokenizer_signature(ctx.tokenizer),
                "lengths": list(ctx.lengths)},
        inputs={"store": chunking.store_fingerprint(ctx.store), **inputs}, counts=stats,
        skipped=skipped, extra={"embedder": ctx.embedder.name,
                                "index": index.manifest.get("counts")})

  @staticmethod
  def _length_stats(plan: np.ndarray, chunk_tokens: np.ndarray, length: int, start_tokens: int,
                    sep_tokens: int) -> dict[str, Any]:
    """Meta-documents per length, and the text the split cannot keep (chunks longer than L)."""
    sizes = np.array([start_tokens + chunk_tokens[f:e].sum() + sep_tokens * (e - f - 1)
                      for _, f, e in plan], np.int64)
    p = plan[:, 2] - plan[:, 1]
    return {"meta_documents": len(plan), "p": _summary(p),
            "tokens_through_last_meta_chunk": _summary(sizes),
            "meta_documents_losing_a_meta_chunk": int((sizes > length).sum()),
            "meta_chunk_tokens_cut": int(np.maximum(sizes - length, 0).sum())}

  @staticmethod
  def _check(plan: np.ndarray, source: ChunkSource, ctx: BuildContext, length: int,
             cfg: NExtLongOptions) -> dict[str, Any]:
    """Assembles the first `check_samples` meta-documents of seed 0's order (what the Task
    streams first) to measure the discard and meta-chunk-loss shares."""
    order = np.random.default_rng(0).permutation(len(plan))[:cfg.check_samples]
    discarded = lost = 0
    ks = []  # negatives after each meta-chunk but the last, of samples with 2+ meta-chunks
    for tokens, info in ctx.progress(
        stream_samples(plan, order, source, ctx.tokenizer, length=length, cfg=cfg),
        desc=f"nextlong check L={length}", total=len(order)):
      discarded += tokens is None
      lost += tokens is not None and info["meta_chunks_complete"] < info["p"]
      if tokens is not None and info["p"] > 1:
        ks.append(info["k"])
    n = max(1, len(order))
    ks_arr = np.asarray(ks, np.int64)
    return {"samples": len(order), "discarded_share": discarded / n,
            "lost_a_meta_chunk_share": lost / n, "k": _summary(ks_arr),
            "no_interleaving_share": float((ks_arr == 0).mean()) if len(ks) else 0.0}

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    index_dir = Path(index_dir)
    out = index_dir / self.name
    manifest = artifacts.require_built(out, method=self.name)
    contexts.check_tokenizer(manifest, tokenizer, out)
    options = {k: v for k, v in manifest["config"].items()
               if k not in ("collection", "tokenizer", "lengths")}
    cfg = NExtLongOptions.parse(self.name, options)
    plan_path = out / PLANS / f"L{length}.meta_docs.npy"
    if not plan_path.exists():
      raise FileNotFoundError(f"{out}: no meta-documents for length {length} (built lengths: "
                              f"{manifest['config']['lengths']}); rebuild with "
                              f"`python -m longjax.synth build --lengths {length}`")
    plan = np.load(plan_path)
    chunks = chunking.open_chunk_store(index_dir, cfg.chunk_size)
    search = _search_fn(index_dir, manifest["config"]["collection"], cfg)
    order = np.random.default_rng(seed).permutation(len(plan))
    mine = order[shard_range(len(order), shard, num_shards)]
    made = discarded = shortfall = 0
    source = ChunkSource(chunks.text, chunks.doc_of_chunk, cached_search(search))
    for tokens, info in stream_samples(plan, mine, source, tokenizer, length=length, cfg=cfg):
      shortfall += info["shortfall"]
      if tokens is None:
        discarded += 1
        continue
      made += 1
      info.update(method=self.name, seed=seed, shard=shard, num_shards=num_shards)
      yield {"targets": tokens, "provenance": json.dumps(info)}
    rate = discarded / max(1, made + discarded)
    _log.log(logging.WARNING if rate > 0.05 else logging.INFO,
             "nextlong shard %d/%d L=%d: %d samples, %d discarded as shorter than T (%.1f%%); "
             "%d negatives short of k (fetch cap or index size)", shard, num_shards, length, made,
             discarded, 100 * rate, shortfall)


def _lists_dir(index_dir: Path, cfg: NExtLongOptions) -> Path:
  return neighbours.lists_dir(index_dir, f"chunks-{cfg.chunk_size}", cfg.precompute_k)


def _search_fn(index_dir: Path, collection: str, cfg: NExtLongOptions) -> SearchFn:
  """Chunk neighbours: a slice of the precomputed lists, or a live ScaNN search."""
  if cfg.precompute_k:
    table = np.load(_lists_dir(index_dir, cfg) / "neighbours.npy", mmap_mode="r")
    return lambda chunk, fetch: np.asarray(table[chunk, :fetch], np.int64)
  vectors, index = neighbours.chunk_searcher(index_dir, collection)
  return lambda chunk, fetch: index.search(np.asarray(vectors[chunk:chunk + 1]), fetch)[0][0]


def _summary(values: np.ndarray) -> dict[str, float]:
  if len(values) == 0:
    return {"min": 0, "mean": 0.0, "max": 0}
  return {"min": int(values.min()), "mean": round(float(values.mean()), 3),
          "max": int(values.max())}
