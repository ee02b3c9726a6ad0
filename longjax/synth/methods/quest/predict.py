"""Query predictors for Quest stage 1 (specs/quest.md §2): documents -> one query per segment.

Three pluggable predictors share one interface (`QueryPredictor`):

* `T5QueryPredictor`: a doc2query T5 (e.g. doc2query/msmarco-t5-base-v1) in Flax, jit-compiled,
  batched with length bucketing; top-p sampling keyed by (seed, doc_id, segment).
* `CausalLMQueryPredictor`: prompts a longjax Llama (e.g. SmolLM2) to write a search query.
* `ExtractiveQueryPredictor`: no weights; a segment's query is its top key phrases (whole RAKE
  phrases, or short stopword-free runs with `max_phrase_words`). For tests and weightless
  machines, never a silent fallback: the build records `describe()`.

Documents are cut into windows of <= `max_input_tokens` model tokens; with more than
`max_segments_per_doc` windows, that many evenly spaced ones are kept.

`make_predictor` builds the predictor a build config names; `describe_predictor` gives its
`describe()` without loading weights (the model predictors' settings, `T5Settings` and
`CausalLMSettings`, are separate from their models), for the Beam build's driver.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from longjax.synth.methods.quest import rake


@runtime_checkable
class QueryPredictor(Protocol):
  name: str

  def describe(self) -> dict[str, Any]:
    """What made the queries (kind, checkpoint, decoding options), for the manifest."""
    ...

  def predict(self, docs: Sequence[tuple[int, str]], *, seed: int) -> list[list[str]]:
    """(doc_id, text) pairs -> per document, one query per kept segment (possibly empty)."""
    ...


def select_segments(n_windows: int, max_segments: int) -> list[int]:
  """Indices of the windows to keep: all, or `max_segments` evenly spaced (first and last kept)."""
  if n_windows <= max_segments:
    return list(range(n_windows))
  if max_segments == 1:
    return [0]
  return [round(i * (n_windows - 1) / (max_segments - 1)) for i in range(max_segments)]


def segment(ids: Sequence[int], window: int, max_segments: int) -> list[list[int]]:
  """Consecutive windows of <= `window` ids, thinned to `max_segments` evenly spaced ones."""
  windows = [list(ids[i:i + window]) for i in range(0, len(ids), window)] or [[]]
  return [windows[i] for i in select_segments(len(windows), max_segments)]


# --- T5 doc2query ------------------------------------------------------------------------------

def _bucket(n: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if n <= b:
      return b
  return buckets[-1]


T5_DTYPE = "bfloat16"  # what a T5 checkpoint is loaded in unless the options say otherwise


class T5Settings:
  """A T5 predictor's settings without its model: what `describe()` records, so that a
  checkpoint's predictor can be described without loading it."""
  name = "t5"

  def __init__(self, *, dtype: str, checkpoint: str = "", batch_size: int = 256,
               max_input_tokens: int = 320, max_segments_per_doc: int = 8,
               decode=None, buckets: Sequence[int] = (64, 128, 192, 256, 320)):
    from longjax.models.t5_generate import DecodeConfig
    if max_input_tokens < 2:
      raise ValueError(f"max_input_tokens ({max_input_tokens}) must be >= 2 (text + EOS)")
    self.dtype, self.checkpoint = dtype, checkpoint
    self.batch_size = batch_size
    self.max_input_tokens = max_input_tokens
    self.max_segments_per_doc = max_segments_per_doc
    self.decode = decode or DecodeConfig(max_new_tokens=64, top_p=0.95, temperature=1.0)
    self.buckets = tuple(sorted({min(b, max_input_tokens) for b in buckets} | {max_input_tokens}))

  def describe(self) -> dict[str, Any]:
    return {"kind": self.name, "checkpoint": self.checkpoint,
            "max_input_tokens": self.max_input_tokens,
            "max_segments_per_doc": self.max_segments_per_doc,
            "decode": dataclasses.asdict(self.decode), "dtype": self.dtype,
            "rng": "fold_in(key(seed), doc_id_hi, doc_id_lo, segment), then step"}


class T5QueryPredictor(T5Settings):
  """doc2query with the Flax T5 of `longjax.models.t5`."""

  def __init__(self, model, tokenizer, **settings: Any):
    """`settings`: `T5Settings`' keywords but `dtype`, which is the model's."""
    super().__init__(dtype=model.config.dtype, **settings)
    self.model, self.tokenizer = model, tokenizer
    self.eos_id = model.config.eos_token_id
    self.pad_id = model.config.pad_token_id

  @classmethod
  def from_checkpoint(cls, path: str, *, dtype: str = T5_DTYPE, **kwargs) -> "T5QueryPredictor":
    """Loads an HF T5 checkpoint directory (weights + tokenizer files)."""
    from longjax.models.t5 import load_hf_t5
    from longjax.models.tokenizer import load_tokenizer
    return cls(load_hf_t5(path, dtype=dtype, param_dtype=dtype), load_tokenizer(path),
               checkpoint=str(path), **kwargs)

  @staticmethod
  def describe_checkpoint(path: str, *, dtype: str = T5_DTYPE, **kwargs) -> dict[str, Any]:
    """`from_checkpoint(path, ...).describe()`, without loading the checkpoint."""
    return T5Settings(dtype=dtype, checkpoint=str(path), **kwargs).describe()

  def segments(self, ids: Sequence[int]) -> list[list[int]]:
    """A document's model-token windows, each ending in EOS as the T5 tokenizer would."""
    return [w + [self.eos_id] for w in segment(ids, self.max_input_tokens - 1,
                                               self.max_segments_per_doc)]

  def generate_ids(self, rows: Sequence[tuple[int, int, Sequence[int]]], *,
                   seed: int) -> list[list[int]]:
    """(doc_id, segment, input ids) rows -> generated ids per row (EOS and padding removed).

    Rows are grouped by length bucket and run in full batches (padded with dummy rows), so
    only one program per bucket is compiled. All batches are dispatched before any result is
    read, which overlaps host work with the device.
    """
    from longjax.models.t5_generate import generate, row_keys
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][2]))
    pending = []
    for bucket in self.buckets:
      idx = [i for i in order if _bucket(len(rows[i][2]), self.buckets) == bucket]
      for start in range(0, len(idx), self.batch_size):
        chunk = idx[start:start + self.batch_size]
        ids = np.full((self.batch_size, bucket), self.pad_id, np.int32)
        mask = np.zeros((self.batch_size, bucket), np.int32)
        doc_ids = np.zeros(self.batch_size, np.int64)
        segs = np.zeros(self.batch_size, np.int64)
        for r, i in enumerate(chunk):
          doc_id, seg, toks = rows[i]
          toks = list(toks)[:bucket]
          ids[r, :len(toks)] = toks
          mask[r, :len(toks)] = 1
          doc_ids[r], segs[r] = doc_id, seg
        mask[len(chunk):, 0] = 1  # dummy rows attend to one pad token
        out = generate(self.model, ids, mask, row_keys(seed, doc_ids, segs), self.decode)
        pending.append((chunk, out))
    result: list[list[int]] = [[] for _ in rows]
    for chunk, out in pending:
      out = np.asarray(out)
      for r, i in enumerate(chunk):
        toks = out[r].tolist()
        if self.eos_id in toks:
          toks = toks[:toks.index(self.eos_id)]
        result[i] = [t for t in toks if t != self.pad_id]
    return result

  def predict(self, docs: Sequence[tuple[int, str]], *, seed: int) -> list[list[str]]:
    rows, owner = [], []
    encoded = self.tokenizer.encode_batch([text for _, text in docs]) if docs else []
    for d, ((doc_id, _), doc_ids) in enumerate(zip(docs, encoded)):
      for s, ids in enumerate(self.segments(doc_ids)):
        rows.append((doc_id, s, ids))
        owner.append(d)
    out: list[list[str]] = [[] for _ in docs]
    for d, ids in zip(owner, self.generate_ids(rows, seed=seed)):
      out[d].append(self.tokenizer.decode(ids).strip())
    return out


# --- causal LM (longjax Llama) -----------------------------------------------------------------

DEFAULT_PROMPT = ("Write one short web search query that this passage answers.\n\n"
                  "Passage: {passage}\n\nQuery:")


class CausalLMSettings:
  """A causal-LM predictor's settings without its model: what `describe()` records."""
  name = "causal_lm"

  def __init__(self, *, checkpoint: str = "", prompt: str = DEFAULT_PROMPT,
               max_input_tokens: int = 320, max_segments_per_doc: int = 8,
               max_new_tokens: int = 32, batch_size: int = 64):
    if "{passage}" not in prompt:
      raise ValueError("prompt must contain '{passage}'")
    self.checkpoint = checkpoint
    self.prompt = prompt
    self.max_input_tokens = max_input_tokens
    self.max_segments_per_doc = max_segments_per_doc
    self.max_new_tokens = max_new_tokens
    self.batch_size = batch_size

  def describe(self) -> dict[str, Any]:
    return {"kind": self.name, "checkpoint": self.checkpoint, "prompt": self.prompt,
            "max_input_tokens": self.max_input_tokens,
            "max_segments_per_doc": self.max_segments_per_doc,
            "max_new_tokens": self.max_new_tokens, "decode": "greedy"}


def _causal_lm_path(path: str) -> str:
  """An HF Llama-family directory, or for `smollm2` the packaged SmolLM2-135M-Instruct one
  (converted on first use)."""
  from longjax.models import smollm2_checkpoint
  return str(smollm2_checkpoint()) if path == "smollm2" else str(path)


class CausalLMQueryPredictor(CausalLMSettings):
  """Prompts a longjax Llama for a search query per segment; greedy, first line of the reply."""

  def __init__(self, model, tokenizer, **settings: Any):
    """`settings`: `CausalLMSettings`' keywords."""
    super().__init__(**settings)
    self.model, self.tokenizer = model, tokenizer

  @classmethod
  def from_checkpoint(cls, path: str, **kwargs) -> "CausalLMQueryPredictor":
    """Loads an HF Llama-family directory, or `smollm2` (the packaged SmolLM2-135M-Instruct)."""
    from longjax.models import load_hf
    from longjax.models.tokenizer import load_tokenizer
    path = _causal_lm_path(path)
    return cls(load_hf(path), load_tokenizer(path), checkpoint=path, **kwargs)

  @staticmethod
  def describe_checkpoint(path: str, **kwargs) -> dict[str, Any]:
    """`from_checkpoint(path, ...).describe()`, without loading the checkpoint."""
    return CausalLMSettings(checkpoint=_causal_lm_path(path), **kwargs).describe()

  def prompt_ids(self, text: str) -> list[list[int]]:
    """One prompt (BOS + instruction + passage window) per kept segment of a document."""
    tok = self.tokenizer
    bos = [tok.bos_id] if tok.bos_id is not None else []
    return [bos + tok.encode(self.prompt.format(passage=tok.decode(w).strip()))
            for w in segment(tok.encode(text), self.max_input_tokens, self.max_segments_per_doc)]

  def reply(self, new_ids: Sequence[int]) -> str:
    """The first line of the generated text, without EOS."""
    ids = list(new_ids)
    if self.tokenizer.eos_id in ids:
      ids = ids[:ids.index(self.tokenizer.eos_id)]
    text = self.tokenizer.decode(ids).strip()
    return text.splitlines()[0].strip() if text else ""

  def predict(self, docs: Sequence[tuple[int, str]], *, seed: int) -> list[list[str]]:
    del seed  # greedy decoding: deterministic without a key
    from longjax.models import generate
    prompts, owner = [], []
    for d, (_, text) in enumerate(docs):
      for p in self.prompt_ids(text):
        prompts.append(p)
        owner.append(d)
    out: list[list[str]] = [[] for _ in docs]
    for start in range(0, len(prompts), self.batch_size):
      batch = prompts[start:start + self.batch_size]
      new = generate(self.model, batch, self.max_new_tokens, eos_id=self.tokenizer.eos_id)
      for d, ids in zip(owner[start:start + self.batch_size], new):
        out[d].append(self.reply(ids))
    return out


# --- extractive (no weights) -------------------------------------------------------------------

_WORD = re.compile(r"\S+")
# Words of news prose that a search query does not contain: reporting verbs and hedges. Short
# phrases break at them as at stopwords, or 'said mr', 'also said', 'spokesman said', 'could
# also' become the most shared "keywords" of a news corpus.
NON_QUERY_WORDS = frozenset({"said", "says", "told", "also", "could", "would"})


def _runs(phrase: tuple[str, ...]) -> list[tuple[str, ...]]:
  """`phrase` split at NON_QUERY_WORDS (which are dropped)."""
  out, run = [], []
  for w in phrase:
    if w not in NON_QUERY_WORDS:
      run.append(w)
    elif run:
      out.append(tuple(run))
      run = []
  if run:
    out.append(tuple(run))
  return out


def _short_phrases(text: str, max_words: int) -> list[str]:
  """Stopword-free runs of 2..max_words words in `text`, most salient first.

  The runs are the contiguous sub-phrases of RAKE's candidate phrases (split at
  NON_QUERY_WORDS), so they hold no stopword or punctuation. Salience: occurrences in `text`,
  then the mean occurrence count of their words in the candidate phrases (a phrase of the
  text's topic words beats a one-off), then alphabetical.
  """
  phrases = [r for p in rake.candidate_phrases(text) for r in _runs(p)]
  word_count = Counter(w for p in phrases for w in p)
  runs: Counter[tuple[str, ...]] = Counter()
  for p in phrases:
    for n in range(2, max_words + 1):
      for i in range(len(p) - n + 1):
        runs[p[i:i + n]] += 1
  ranked = sorted(runs.items(), key=lambda kv: (-kv[1], -sum(word_count[w] for w in kv[0])
                                                / len(kv[0]), kv[0]))
  return [" ".join(r) for r, _ in ranked]


class ExtractiveQueryPredictor:
  """A segment's 'query' is `phrases_per_query` key phrases joined by ', ' (one RAKE unit each).

  `max_phrase_words=None`: the segment's top RAKE phrases (by RAKE score, which favours long,
  one-off phrases such as 'liberal democrat chairman matthew taylor said'). `max_phrase_words=n`
  (>= 2): the segment's most frequent stopword-free runs of 2..n words (`_short_phrases`), which
  look like search-query keywords ('tony blair', 'six nations') and recur across documents.
  Every such phrase survives RAKE's 3.0 threshold on the joined query: with only multi-word
  phrases in a unit, each word's degree / frequency is >= 2, so a phrase scores >= 4.
  """
  name = "extractive"

  def __init__(self, *, window_words: int = 240, max_segments_per_doc: int = 8,
               phrases_per_query: int = 3, max_phrase_words: int | None = None):
    if max_phrase_words is not None and max_phrase_words < 2:
      raise ValueError(f"max_phrase_words ({max_phrase_words}) must be None or >= 2 (RAKE's "
                       "3.0 threshold drops one-word phrases)")
    if phrases_per_query < 1:
      raise ValueError(f"phrases_per_query ({phrases_per_query}) must be >= 1")
    self.window_words = window_words
    self.max_segments_per_doc = max_segments_per_doc
    self.phrases_per_query = phrases_per_query
    self.max_phrase_words = max_phrase_words

  def describe(self) -> dict[str, Any]:
    out = {"kind": self.name, "window_words": self.window_words,
           "max_segments_per_doc": self.max_segments_per_doc,
           "phrases_per_query": self.phrases_per_query,
           "note": "model-free stand-in: queries are top RAKE phrases of each segment"}
    if self.max_phrase_words is not None:  # absent by default: old query parts stay valid
      out["max_phrase_words"] = self.max_phrase_words
      out["note"] = ("model-free stand-in: queries are the most frequent stopword-free "
                     f"2..{self.max_phrase_words}-word runs of each segment")
    return out

  def _phrases(self, text: str) -> list[str]:
    if self.max_phrase_words is not None:
      return _short_phrases(text, self.max_phrase_words)
    scores = rake.score_phrases(text)
    return [p for p, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]

  def predict(self, docs: Sequence[tuple[int, str]], *, seed: int) -> list[list[str]]:
    del seed  # deterministic
    out = []
    for _, text in docs:
      words = _WORD.findall(text)
      out.append([", ".join(self._phrases(" ".join(window))[:self.phrases_per_query])
                  for window in segment(words, self.window_words, self.max_segments_per_doc)])
    return out


PREDICTORS = ("t5", "causal_lm", "extractive")


def make_predictor(kind: str, *, checkpoint: str | None = None, **options) -> QueryPredictor:
  """Builds the predictor a build config names. A model predictor needs its checkpoint."""
  cls = _model_predictor(kind, checkpoint)
  if cls is None:
    return ExtractiveQueryPredictor(**options)
  return cls.from_checkpoint(checkpoint, **options)


def describe_predictor(kind: str, *, checkpoint: str | None = None,
                       **options) -> dict[str, Any]:
  """`make_predictor(...).describe()` without loading weights: what the Beam build's driver
  records for the query parts its workers predict (each worker loads the predictor)."""
  cls = _model_predictor(kind, checkpoint)
  if cls is None:
    return ExtractiveQueryPredictor(**options).describe()
  description = cls.describe_checkpoint(checkpoint, **options)
  _require_checkpoint(description["checkpoint"])
  return description


def _require_checkpoint(path: str) -> None:
  """Stops unless `path` is an HF checkpoint directory: a build that described a mistyped
  checkpoint would discard the query parts predicted under the right one."""
  if not (Path(path) / "config.json").is_file():
    raise ValueError(f"quest: query predictor checkpoint {path!r} is not an HF checkpoint "
                     "directory (no config.json there)")


def _model_predictor(kind: str, checkpoint: str | None
                     ) -> type[T5QueryPredictor] | type[CausalLMQueryPredictor] | None:
  """The model predictor class `kind` names, or None for the extractive one; a model predictor
  needs its checkpoint."""
  if kind not in PREDICTORS:
    raise ValueError(f"quest predictor must be one of {PREDICTORS}, got {kind!r}")
  if kind == "extractive":
    return None
  if not checkpoint:
    raise ValueError(f"quest predictor {kind!r} needs `checkpoint` (an HF checkpoint directory); "
                     "use predictor='extractive' explicitly to run without weights")
  return T5QueryPredictor if kind == "t5" else CausalLMQueryPredictor
