"""NExtLong (Gao et al., arXiv 2501.12766): meta-chunks interleaved with dense hard negatives.

specs/nextlong.md §4-6. For each meta-document (its non-blank 2048-character meta-chunks
m_1..m_p from `synth.chunking`), the sample text is

    m_1 n_11..n_1k  m_2 n_21..n_2k  ...  m_p n_p1..n_pk        (pieces joined by `sep`)

where n_i1..n_ik are the most similar chunks of the whole chunk index, in rank order, excluding
m_i itself, every chunk of the meta-document's source document, chunks already accepted for this
sample, and (optionally) chunks whose normalised text equals a meta-chunk of the sample or an
accepted chunk. The text is tokenized with one BOS at position 0, discarded when shorter than T
tokens, else cut to exactly T.

k = max(0, ceil((T·E·w − S) / (p·s))) by default (the paper's estimate from characters). With
`exact_budget=True`, k comes from real token counts instead: the largest uniform k for blocks
1..p−1 such that m_p still ends inside T, and the last block takes negatives until the sample
reaches T, so truncation only ever cuts the last block's negatives. In that mode each piece is
tokenized on its own and the pieces' tokens are concatenated, which makes the counts exact.

`NExtLongMethod` wires the algorithm to the index: `build` makes the chunk store, chunk
embeddings and ScaNN index (optionally precomputed top-K lists), and `examples` walks a seeded
permutation of the meta-documents (uniform without replacement over documents with at least one
non-blank chunk), each shard a contiguous range, one sample per meta-document or a discard.
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

from longjax.models.tokenizer import Tokenizer
from longjax.synth import artifacts, chunking, corpus
from longjax.synth.methods.base import BuildContext, resolve_options, shard_range

_log = logging.getLogger(__name__)

# search(chunk_id, fetch) -> chunk ids, most similar first (may include the query itself).
SearchFn = Callable[[int, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class NExtLongConfig:
  """NExtLong options; defaults are the spec's (§12)."""
  chunk_size: int = 2048  # s, characters
  chars_per_token: float = 4.0  # E
  overgen: float = 1.5  # w
  sep: str = "\n\n"
  margin: int = 32
  fetch_cap: int = 4096
  dedup_text: bool = True
  exact_budget: bool = False
  precompute_k: int = 0  # > 0: build top-K neighbour lists instead of searching while streaming

  def __post_init__(self):
    for name in ("chunk_size", "fetch_cap"):
      if getattr(self, name) < 1:
        raise ValueError(f"NExtLongConfig.{name} ({getattr(self, name)}) must be >= 1")
    for name in ("chars_per_token", "overgen"):
      if not getattr(self, name) > 0:
        raise ValueError(f"NExtLongConfig.{name} ({getattr(self, name)}) must be > 0")
    if self.margin < 0:
      raise ValueError(f"NExtLongConfig.margin ({self.margin}) must be >= 0")
    if self.precompute_k < 0:
      raise ValueError(f"NExtLongConfig.precompute_k ({self.precompute_k}) must be >= 0")


def num_negatives(target_tokens: int, doc_chars: int, p: int, cfg: NExtLongConfig) -> int:
  """k = max(0, ceil((T·E·w − S) / (p·s))) (§5)."""
  if p < 1:
    raise ValueError(f"a meta-document needs >= 1 non-blank meta-chunk, got p = {p}")
  budget = target_tokens * cfg.chars_per_token * cfg.overgen
  return max(0, math.ceil((budget - doc_chars) / (p * cfg.chunk_size)))


def fetch_size(k: int, used: int, p: int, cfg: NExtLongConfig) -> int:
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
               cfg: NExtLongConfig):
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


def _bos(tokenizer: Tokenizer) -> list[int]:
  if tokenizer.bos_id is None:
    raise ValueError(f"tokenizer {tokenizer.name!r} has no BOS id; NExtLong samples start "
                     "with one BOS (specs/nextlong.md §6)")
  return [int(tokenizer.bos_id)]


def paper_sample(source: ChunkSource, tokenizer: Tokenizer, *, meta_doc: int,
                 metas: Sequence[int], doc_chars: int, length: int,
                 cfg: NExtLongConfig) -> tuple[np.ndarray | None, dict[str, Any]]:
  """The paper's sample: k from the formula, joined text tokenized once, cut to T.

  Returns (np.int32[length] or None when the text is shorter than T tokens, provenance).
  """
  k = num_negatives(length, doc_chars, len(metas), cfg)
  sel = _Selector(source, meta_doc, metas, cfg)
  blocks = [(m, sel.select(m, k)) for m in metas]
  pieces = [source.text(c) for m, negs in blocks for c in (m, *negs)]
  text = cfg.sep.join(pieces)
  tokens = _bos(tokenizer) + tokenizer.encode(text)
  info = _provenance(meta_doc, blocks, k, sel, len(text), len(tokens))
  if len(tokens) < length:
    return None, info
  # Which meta-chunks survive the cut: compare their character offsets with the kept text.
  kept_chars = len(tokenizer.decode(tokens[1:length]))
  starts = np.cumsum([0] + [len(p) + len(cfg.sep) for p in pieces])
  meta_pos = np.cumsum([0] + [1 + len(negs) for _, negs in blocks])[:-1]
  info["meta_chunks_complete"] = int(sum(starts[i] + len(pieces[i]) <= kept_chars
                                         for i in meta_pos))
  info["blocks_started"] = int(sum(starts[i] < kept_chars for i in meta_pos))
  return np.asarray(tokens[:length], np.int32), info


def exact_budget_sample(source: ChunkSource, tokenizer: Tokenizer, *, meta_doc: int,
                        metas: Sequence[int], doc_chars: int, length: int,
                        cfg: NExtLongConfig) -> tuple[np.ndarray | None, dict[str, Any]]:
  """`exact_budget`: k from real token counts so that every meta-chunk survives the cut."""
  bos = _bos(tokenizer)
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
    blocks, total = [], len(bos)
    for i, m in enumerate(metas):
      negs = sel.select(m, k) if i < len(metas) - 1 else []
      blocks.append((m, negs))
      total += piece_len(m, i == 0) + sum(piece_len(c, False) for c in negs)
    return total, sel, blocks

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
  tokens = list(bos)
  meta_spans = []  # token [start, end) of each meta-chunk
  for i, (m, negs) in enumerate(blocks):
    for j, c in enumerate((m, *negs)):
      if i or j:
        tokens += sep
      if j == 0:
        meta_spans.append((len(tokens), len(tokens) + len(toks(c))))
      tokens += toks(c)
  pieces = [c for m, negs in blocks for c in (m, *negs)]
  chars = sum(len(source.text(c)) for c in pieces) + len(cfg.sep) * (len(pieces) - 1)
  info = _provenance(meta_doc, blocks, k, sel, chars, len(tokens))
  info["k_last"] = len(last_negs)
  if len(tokens) < length:
    return None, info
  info["meta_chunks_complete"] = sum(end <= length for _, end in meta_spans)
  info["blocks_started"] = sum(start < length for start, _ in meta_spans)
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
                chars: int, tokens: int) -> dict[str, Any]:
  return {"doc_id": int(meta_doc), "meta_chunks": [int(m) for m, _ in blocks],
          "negatives": [[int(c) for c in negs] for _, negs in blocks], "k": int(k),
          "p": len(blocks), "chars": int(chars), "tokens_before_truncation": int(tokens),
          "shortfall": int(sel.shortfall)}


class NExtLongMethod:
  """NExtLong (`longjax_<corpus>_nextlong_<length>`)."""
  name = "nextlong"

  def build(self, ctx: BuildContext) -> None:
    from longjax.synth.methods import neighbours  # embedding + ScaNN; heavy imports

    defaults = dataclasses.asdict(NExtLongConfig())
    cfg = NExtLongConfig(**resolve_options(self.name, ctx.method_config(self.name), defaults))
    chunks = chunking.build_chunk_store(
        ctx.store, chunking.chunk_dir(ctx.index_dir, cfg.chunk_size), size=cfg.chunk_size,
        progress=ctx.progress)
    inputs = {"chunks": artifacts.fingerprint_json(chunks.manifest["inputs"]),
              "chunk_size": cfg.chunk_size}
    collection = f"chunks-{cfg.chunk_size}"
    vectors, index = neighbours.embed_and_index(ctx, collection, chunks, inputs)
    if cfg.precompute_k:
      from longjax.synth import retrieval
      retrieval.neighbour_lists(index, vectors, cfg.precompute_k, progress=ctx.progress,
                                out_dir=_lists_dir(ctx.index_dir, cfg))
    p = np.diff(chunks.doc_chunk_offsets)
    meta_docs = np.flatnonzero(p > 0).astype(np.int64)
    out = ctx.method_dir(self.name)
    artifacts.write_npy(out / "meta_docs.npy", meta_docs)
    chars = np.array([len(ctx.store.text(int(d))) for d in meta_docs], np.int64)
    stats: dict[str, Any] = {
        "documents": len(p), "meta_documents": len(meta_docs), "chunks": len(chunks),
        "p": _summary(p[meta_docs])}
    for length in ctx.lengths:
      ks = [num_negatives(length, c, int(n), cfg) for c, n in zip(chars, p[meta_docs])]
      stats[f"k_L{length}"] = _summary(np.asarray(ks))
    skipped = [{"doc_id": int(d), "reason": "no non-blank meta-chunk: cannot be a meta-document "
                "(its text is not in the chunk index either)"} for d in np.flatnonzero(p == 0)]
    artifacts.write_manifest(
        out, kind=self.name, config={**dataclasses.asdict(cfg), "collection": collection},
        inputs={"store": chunking.store_fingerprint(ctx.store), **inputs}, counts=stats,
        skipped=skipped, extra={"embedder": ctx.embedder.name,
                                "index": index.manifest.get("counts")})
    ctx.log(f"nextlong: {stats}")

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    index_dir = Path(index_dir)
    out = index_dir / self.name
    manifest = artifacts.read_manifest(out)
    if manifest is None:
      raise FileNotFoundError(f"{out}: no manifest.json; run `python -m longjax.synth build` "
                              "with method 'nextlong' first")
    cfg_dict = {k: v for k, v in manifest["config"].items() if k != "collection"}
    cfg = NExtLongConfig(**cfg_dict)
    store = corpus.open_store(index_dir)
    chunks = chunking.open_chunk_store(index_dir, cfg.chunk_size)
    search = _search_fn(index_dir, manifest["config"]["collection"], cfg)
    meta_docs = np.load(out / "meta_docs.npy")
    order = np.random.default_rng(seed).permutation(meta_docs)
    make = exact_budget_sample if cfg.exact_budget else paper_sample
    made = discarded = shortfall = 0
    for pos in shard_range(len(order), shard, num_shards):
      doc = int(order[pos])
      source = ChunkSource(chunks.text, chunks.doc_of_chunk, cached_search(search))
      tokens, info = make(source, tokenizer, meta_doc=doc, metas=list(chunks.chunks_of(doc)),
                          doc_chars=len(store.text(doc)), length=length, cfg=cfg)
      shortfall += info["shortfall"]
      if tokens is None:
        discarded += 1
        continue
      made += 1
      info.update(method=self.name, seed=seed, shard=shard, num_shards=num_shards,
                  exact_budget=cfg.exact_budget)
      yield {"targets": tokens, "provenance": json.dumps(info)}
    rate = discarded / max(1, made + discarded)
    _log.log(logging.WARNING if rate > 0.05 else logging.INFO,
             "nextlong shard %d/%d L=%d: %d samples, %d discarded as shorter than T (%.1f%%%s); "
             "%d negatives short of k (fetch cap or index size)", shard, num_shards, length, made,
             discarded, 100 * rate, "; above 5%: raise overgen (w)" if rate > 0.05 else "",
             shortfall)


def _lists_dir(index_dir: Path, cfg: NExtLongConfig) -> Path:
  return Path(index_dir) / "neighbours" / f"chunks-{cfg.chunk_size}-k{cfg.precompute_k}"


def _search_fn(index_dir: Path, collection: str, cfg: NExtLongConfig) -> SearchFn:
  """Chunk neighbours: a slice of the precomputed lists, or a live ScaNN search."""
  if cfg.precompute_k:
    table = np.load(_lists_dir(index_dir, cfg) / "neighbours.npy", mmap_mode="r")
    return lambda chunk, fetch: np.asarray(table[chunk, :fetch], np.int64)
  from longjax.synth.methods import neighbours

  vectors, index = neighbours.chunk_searcher(index_dir, collection)
  return lambda chunk, fetch: index.search(np.asarray(vectors[chunk:chunk + 1]), fetch)[0][0]


def _summary(values: np.ndarray) -> dict[str, float]:
  if len(values) == 0:
    return {"min": 0, "mean": 0.0, "max": 0}
  return {"min": int(values.min()), "mean": round(float(values.mean()), 3),
          "max": int(values.max())}
