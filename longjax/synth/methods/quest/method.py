"""`QuestMethod`: the Quest synthesis method (specs/quest.md) behind the synthesis protocol.

`build(ctx)` runs stages 1-4 and writes under `<index_dir>/quest/`: `queries/` (resumable
predictions and their RAKE candidates), `keywords/` (stages 2-4: `doc_keywords.jsonl`, per
document its candidates and the chosen keyword or the reason it has none; `index.jsonl`, the
inverted index with short flags and weights; `keyword_df_top200.json`, for blacklist review;
made by `keyword_stage`, here or by the Beam build), `doc_tokens.npy` (tokens with boundary
tokens per doc id, -1 for documents left out), `index_stats.png` (index sizes, document reuse)
and `manifest.json`. The manifest also carries a dry run of the sampler for each `ctx.lengths`
(one shard, the build seed): samples, keywords per sample, short token share and how many
documents are used 0, 1, 2... times.

`examples(...)` plans the samples of its shard (keywords assigned by stable hash) from token
counts, shuffles their order with the seed, and materialises each from the corpus store.
Sampling options are build options (read back from the manifest), so one config governs both.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from longjax import io
from longjax.models.tokenizer import Tokenizer
from longjax.synth import artifacts, corpus
from longjax.synth.methods import contexts, packer
from longjax.synth.methods.base import BuildContext, DocStore, check_shard
from longjax.synth.methods.options import MethodOptions
from longjax.synth.methods.quest import index as qindex
from longjax.synth.methods.quest import keyword_stage
from longjax.synth.methods.quest import keywords as qkw
from longjax.synth.methods.quest import rake
from longjax.synth.methods.quest.predict import PREDICTORS, describe_predictor, make_predictor
from longjax.synth.methods.quest.queries import predict_queries, queries_dir
from longjax.synth.methods.quest.report import plot_index_stats
from longjax.synth.methods.quest.sampler import FILL_POLICIES, LONG_DOC_POLICIES, SampleOptions, \
  Span, plan_samples


@dataclasses.dataclass(frozen=True)
class QuestOptions(MethodOptions):
  """Quest options (`config["quest"]`); defaults are specs/quest.md §10."""
  # Stage 1: query prediction. A model predictor needs `checkpoint`; "extractive" needs none.
  predictor: str = "t5"
  checkpoint: str | None = None
  predictor_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  query_part_size: int = 4096
  seed: int = 0
  # Stage 2: keywords.
  min_score: float = 3.0
  blacklist_file: str | None = None
  blacklist_auto_top_n: int = 0
  min_keyword_df: int = 1            # 1 = the paper: uniform over all surviving keywords
  df_report_top: int = 200
  keywordless: str = "drop"          # or "pool": one Standard-style pool of their own
  # Stage 3-4: index and split ratio.
  split_ratio: float = 0.2
  size_metric: str = "n_docs"
  oversample_mode: str = "target_share"
  target_share: float | None = None
  oversample_factor: float = 2.0
  # Stage 5: sampling.
  max_epochs_short: int = 4
  fill_policy: str = "next_keyword"
  long_doc_policy: str = "split"
  # The paper drops the tail of the document that crosses L; we put it back into its keyword's
  # pool so that Quest, like every arm, keeps (almost) every token (docs/methods.md).
  carry_remainder: bool = True
  num_samples: int | None = None
  token_budget: int | None = None

  def __post_init__(self):
    if self.predictor not in PREDICTORS:
      raise ValueError(f"quest.predictor must be one of {PREDICTORS}, got {self.predictor!r}")
    if self.keywordless not in ("drop", "pool"):
      raise ValueError(f"quest.keywordless must be 'drop' or 'pool', got {self.keywordless!r}")
    if self.fill_policy not in FILL_POLICIES:
      raise ValueError(f"quest.fill_policy must be one of {FILL_POLICIES}, "
                       f"got {self.fill_policy!r}")
    if self.long_doc_policy not in LONG_DOC_POLICIES:
      raise ValueError(f"quest.long_doc_policy must be one of {LONG_DOC_POLICIES}, "
                       f"got {self.long_doc_policy!r}")
    if self.blacklist_auto_top_n < 0:
      raise ValueError(f"quest.blacklist_auto_top_n ({self.blacklist_auto_top_n}) must be >= 0")
    if self.min_keyword_df < 1:
      raise ValueError(f"quest.min_keyword_df ({self.min_keyword_df}) must be >= 1")

  def sample_options(self, length: int) -> SampleOptions:
    return SampleOptions(length=length, fill_policy=self.fill_policy,
                         long_doc_policy=self.long_doc_policy,
                         max_epochs_short=self.max_epochs_short,
                         carry_remainder=self.carry_remainder, num_samples=self.num_samples,
                         token_budget=self.token_budget)


def _shard_quota(total: int | None, shard: int, num_shards: int) -> int | None:
  if total is None:
    return None
  return total // num_shards + (1 if shard < total % num_shards else 0)


def plan_shard(directory: Path, cfg: QuestOptions, doc_tokens: np.ndarray, *, length: int,
               shard: int, num_shards: int, seed: int):
  """The seeded, shuffled sample plans of one shard (and the planner's statistics)."""
  entries = list(qindex.read_index(keyword_stage.stage_dir(directory), shard=shard,
                                   num_shards=num_shards))
  opts = dataclasses.replace(cfg.sample_options(length),
                             num_samples=_shard_quota(cfg.num_samples, shard, num_shards),
                             token_budget=_shard_quota(cfg.token_budget, shard, num_shards))
  rng = np.random.default_rng([seed, shard, num_shards])
  plans, stats = plan_samples([e.keyword for e in entries], [e.doc_ids for e in entries],
                              np.array([e.weight for e in entries]),
                              np.array([e.short for e in entries], bool),
                              lambda d: int(doc_tokens[d]), opts, rng)
  order = rng.permutation(len(plans))
  return [plans[i] for i in order], stats


def quest_budget(plans: list[list[Span]], indexed_tokens: np.ndarray,
                 length: int) -> dict[str, Any]:
  """The manifest budget of one planned pass: a token counts as used when some sample holds it
  (short pools are oversampled, so a document may appear in several samples)."""
  covered: dict[int, list[tuple[int, int]]] = {}
  for spans in plans:
    for _, d, s, e in spans:
      covered.setdefault(d, []).append((s, e))
  used = 0
  for intervals in covered.values():
    end = 0
    for s, e in sorted(intervals):
      used += max(0, e - max(s, end))
      end = max(end, e)
  source = int(indexed_tokens.sum())
  return contexts.budget(samples=len(plans), length=length, documents_used=len(covered),
                         source_tokens=source, source_tokens_dropped=source - used)


def _log_index(ctx: BuildContext, cfg: QuestOptions, counts: Mapping[str, Any]) -> None:
  """The keyword index in a few lines of the build log."""
  reasons = counts["without_keyword_reasons"]
  ctx.log(f"quest: {counts['documents_indexed']}/{counts['documents']} documents indexed under "
          f"{counts['keywords']} keywords; without keyword: {reasons or 0} "
          f"({counts['documents_without_keyword_share']:.1%}, keywordless={cfg.keywordless}); "
          f"docs per keyword {counts['docs_per_keyword']}")
  if cfg.min_keyword_df > 1:
    ctx.log(f"quest: min_keyword_df={cfg.min_keyword_df}: "
            f"{counts['min_keyword_df_fallbacks']} documents had no keyword that common and "
            "drew from all of theirs")


class QuestMethod:
  """Quest (`longjax_<corpus>_quest_<length>`): keyword-grouped, split-ratio oversampled."""
  name = "quest"
  options_type = QuestOptions

  def build(self, ctx: BuildContext) -> None:
    cfg = ctx.options(self)
    out = ctx.method_dir(self.name)
    out.mkdir(parents=True, exist_ok=True)
    doc_ids = np.asarray(ctx.store.doc_ids(), np.int64)
    if len(doc_ids) == 0:
      raise ValueError("quest: the corpus store is empty; nothing to index")
    if not np.array_equal(doc_ids, np.arange(len(doc_ids))):
      raise ValueError("quest: store doc ids must be row numbers 0..n-1 (doc_tokens.npy is "
                       "indexed by them)")
    settings = dict(checkpoint=cfg.checkpoint, **cfg.predictor_options)
    description = describe_predictor(cfg.predictor, **settings)
    ctx.log(f"quest: predicting queries with {description}")
    queries = queries_dir(out)
    q_counts = predict_queries(ctx.store, description,
                               lambda: make_predictor(cfg.predictor, **settings), queries,
                               seed=cfg.seed, part_size=cfg.query_part_size, log=ctx.log,
                               progress=ctx.progress)
    token_counts = contexts.store_token_counts(ctx)
    stage = keyword_stage.build_stage(
        keyword_stage.stage_dir(out), doc_ids, queries, cfg, token_counts,
        keyword_stage.stage_key(cfg, queries, contexts.token_counts_path(
            ctx.index_dir, ctx.store, ctx.tokenizer)), progress=ctx.progress)
    entries = list(qindex.read_index(keyword_stage.stage_dir(out)))
    doc_tokens = np.full(len(doc_ids), -1, np.int64)  # -1: left out of the index
    for e in entries:
      doc_tokens[e.doc_ids] = token_counts[e.doc_ids]
    io.write_npy(out / "doc_tokens.npy", doc_tokens)
    kept = doc_tokens >= 0
    counts = stage["counts"]
    simulations, budgets = {}, {}
    for length in ctx.lengths:
      plans, stats = plan_shard(out, cfg, doc_tokens, length=length, shard=0, num_shards=1,
                                seed=cfg.seed)
      simulations[str(length)] = stats.summary(int(kept.sum()))
      budgets[f"L{length}"] = quest_budget(plans, doc_tokens[kept], length)
      if stats.samples == 0:
        ctx.log(f"quest: WARNING L={length}: no sample can be filled ({counts['index_tokens']} "
                "indexed tokens); this length yields no examples")
      ctx.log(f"quest: L={length}: {stats.samples} samples, keywords/sample "
              f"{dict(sorted(stats.keywords_per_sample.items()))}, short token share "
              f"{simulations[str(length)]['short_token_share']:.3f}")
    _log_index(ctx, cfg, counts)
    plot_index_stats(out / "index_stats.png", np.array([len(e.doc_ids) for e in entries]),
                     np.array([e.short for e in entries], bool), simulations)
    io.write_manifest(
        out, kind=self.name,
        config={**dataclasses.asdict(cfg), "predictor_options": dict(cfg.predictor_options),
                "lengths": list(ctx.lengths),
                "tokenizer": contexts.tokenizer_signature(ctx.tokenizer)},
        inputs={"doc_ids": io.fingerprint_json(doc_ids.tolist()),
                "stopwords_sha256": rake.stopwords_sha256(),
                "blacklist_sha256": qkw.blacklist_sha256(cfg.blacklist_file)},
        counts={**q_counts, **counts, "budget": budgets}, skipped=stage["skipped"],
        extra={"predictor": description, "sampler_dry_run": simulations})

  def examples(self, index_dir: str | Path, *, length: int, tokenizer: Tokenizer, shard: int,
               num_shards: int, seed: int) -> Iterator[dict[str, Any]]:
    check_shard(shard, num_shards)
    directory, cfg, doc_tokens, _ = read_build(index_dir, tokenizer)
    plans, stats = plan_shard(directory, cfg, doc_tokens, length=length, shard=shard,
                              num_shards=num_shards, seed=seed)
    if not plans:
      logging.getLogger("longjax.synth").warning(
          "quest: shard %d/%d yields no examples of length %d (%s)", shard, num_shards, length,
          stats.summary(0))
    return materialize(plans, self.name, directory, doc_tokens, corpus.open_store(index_dir),
                       tokenizer=tokenizer, shard=shard, num_shards=num_shards, seed=seed)


def read_build(index_dir: str | Path,
               tokenizer: Tokenizer) -> tuple[Path, QuestOptions, np.ndarray, dict[str, Any]]:
  """Quest's finished build under `index_dir`: its directory, options, per-document token
  counts and manifest (an error if it is missing or was built with another tokenizer)."""
  directory = Path(index_dir) / QuestMethod.name
  manifest = artifacts.require_built(directory, method=QuestMethod.name)
  contexts.check_tokenizer(manifest, tokenizer, directory)
  options = {k: v for k, v in manifest["config"].items() if k not in ("lengths", "tokenizer")}
  return (directory, QuestOptions.parse(QuestMethod.name, options),
          np.load(directory / "doc_tokens.npy"), manifest)


def materialize(plans: list[list[Span]], method: str, directory: Path, doc_tokens: np.ndarray,
                store: DocStore, *, tokenizer: Tokenizer, shard: int, num_shards: int,
                seed: int) -> Iterator[dict[str, Any]]:
  """The examples of planned samples: each plan's spans assembled from the corpus store, with
  the plan (keywords, spans) as provenance."""
  for i, spans in enumerate(plans):
    cache: dict[int, np.ndarray] = {}

    def tokens_of(d: int) -> np.ndarray:
      if d not in cache:
        cache[d] = contexts.document_tokens(tokenizer, store.text(d))
        if len(cache[d]) != doc_tokens[d]:
          raise ValueError(f"{directory}: document {d} has {len(cache[d])} tokens with "
                           f"boundaries, the build counted {int(doc_tokens[d])}; the store or "
                           "tokenizer changed since the build")
      return cache[d]

    targets = packer.assemble([(d, s, e) for _, d, s, e in spans], tokens_of)
    kws = list(dict.fromkeys(k for k, *_ in spans))
    provenance = {"method": method, "sample_id": f"{shard}/{num_shards}:{i}", "seed": seed,
                  "shard": shard, "num_shards": num_shards, "keywords": kws,
                  "spans": [[k, d, s, e] for k, d, s, e in spans]}
    yield {"targets": targets, "provenance": json.dumps(provenance, ensure_ascii=False)}
