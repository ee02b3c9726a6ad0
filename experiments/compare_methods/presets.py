"""Comparison presets: which corpus, tokenizer, model and budgets one method comparison uses.

Every method gets the same documents, tokenizer, sequence length, token budget, model and
optimizer; only the arrangement of documents differs (specs/baselines.md §0).
"""

import dataclasses
from typing import Any, Mapping

METHODS = ("standard", "knn", "iclm", "quest", "nextlong")  # the papers' arms, the default
# Control arms a preset may add: `questshuffled` is Quest's documents without its grouping.
# Tables list every arm in this order.
ARMS = ("standard", "knn", "iclm", "quest", "questshuffled", "nextlong")
REPLAY_SHARE = 0.1  # share of replay tokens in a `_mix` Mixture (longjax.tasks.register's default)


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One method comparison.

  Attributes:
    corpus: 'default' (bundled BBC news), a corpus path `synth build` reads, or a glob of files
      (linked into one directory named `corpus_name`, which then names the Tasks).
    corpus_name: the `<corpus>` part of the Task names when `corpus` is a glob.
    methods: the arms (METHODS, or ARMS with the controls), in table order.
    length: training sequence length in tokens (the Tasks' `<length>`).
    embedder: embedder for knn/iclm/nextlong ('minilm' is the real one here).
    tokenizer: 'spm:<vocab>' trains a SentencePiece model on the corpus (small models), or a
      tokenizer spec `synth build` accepts ('smollm2', an HF dir).
    synth_config: per-method build options ({method: {option: value}}).
    train_gin: the gin experiment file (model, mesh, optimizer, steps, batch). The arms' token
      budget, TRAIN_STEPS x BATCH_SIZE x `length`, is declared there (or in `train_bindings`)
      and nowhere else: the export stage reads it with gin, as the trainer will.
    train_bindings: extra gin bindings applied to every arm.
    eval_lengths / eval_tasks / eval_samples: the eval suite run on every trained arm.
    loss_sequences: held-out sequences for the loss-by-position diagnostic.
    gold_loglik: also score each task's gold answer teacher-forced (a smooth signal for models
      too small to generate the answer).
    inspect_samples / inspect_contexts / inspect_model: `synth inspect` before training (the
      data diagnostics and long-range dependency score; SmolLM2 scores ~400 tokens/s on 2 CPU
      cores, so the demo affords a few samples per method).
    replay: train each arm on its `_mix` Mixture (the method plus short-document replay, packed
      several to a row, so the gin file must keep document masks on); False trains on the
      method's Task alone, as the papers compare methods (one sample per row: the trainer
      checks that, which lets a GPU run unmasked cuDNN attention).
    cpu_devices: simulated CPU devices (None: use the real accelerators).
    embed_elsewhere: the embedder runs on an accelerator machine, not in the index stage: that
      stage writes OUT/embedding_table/inputs.npz and stops until the table's vectors are
      there (`python -m longjax.synth embed-table`, docs/synthesis.md), then builds from them.
    eval_heldout: a documents file (.jsonl.gz) for the eval's text haystack and loss
      sequences, instead of the packaged held-out sources; the export stage writes its first
      `eval_heldout_chars` characters per document to OUT/heldout/ (which travels with
      OUT/data), and every arm is evaluated on that extract.
    eval_batch_size / eval_prefill_chunk: prompts generated together, and the prefill chunk
      (>= the longest eval length: the whole prompt at once, the accelerator setting).
    fresh_samples: seed k also draws the synthesized samples (each arm's Tasks registered with
      synthesis seed k for its export), so the seeds replicate over draws of data as well as
      training order. False: every seed reads synthesis seed 0's samples in its own order (two
      seeds' exports then share most rows, `seed_rows.py`), as the committed wiki16k runs did.
  """
  corpus: str
  length: int
  embedder: str
  tokenizer: str
  train_gin: str
  corpus_name: str | None = None
  methods: tuple[str, ...] = METHODS
  synth_config: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  train_bindings: tuple[str, ...] = ()
  eval_lengths: str = "4k"
  eval_tasks: str = "all"
  eval_samples: int = 100
  loss_sequences: int = 4
  gold_loglik: bool = False
  inspect_samples: int = 32
  inspect_contexts: str = "512,1024"
  inspect_model: str = "smollm2"
  replay: bool = True
  cpu_devices: int | None = None
  embed_elsewhere: bool = False
  eval_heldout: str | None = None
  eval_heldout_chars: int = 200_000
  eval_batch_size: int = 1
  eval_prefill_chunk: int = 512
  fresh_samples: bool = False

  def __post_init__(self):
    unknown = set(self.methods) - set(ARMS)
    if unknown:
      raise ValueError(f"methods {sorted(unknown)} unknown; expected a subset of {ARMS}")
    if self.tokenizer.startswith("spm:") and not self.tokenizer[4:].isdigit():
      raise ValueError(f"tokenizer {self.tokenizer!r}: expected spm:<vocab size>, e.g. spm:4096")

  @property
  def replay_share(self) -> float:
    """The share of every arm's training tokens that is replay (0 without `replay`)."""
    return REPLAY_SHARE if self.replay else 0.0


PRESETS = {
    # `make demo`: the whole comparison in miniature on 2 CPU cores, 8 simulated devices, in
    # <= 10 minutes: MiniLM truncated at 64 pieces (a quarter of the embedding time), the
    # diagnostics on 2 samples per method with one truncated context, tiny arms (8 steps)
    # evaluated at 2K (4 samples and 12 steps took 12.0 min on a slow day of this machine:
    # README).
    "demo": Comparison(
        corpus="default", length=2048, embedder="minilm-64", tokenizer="spm:2048",
        # The model-free query stand-in: short recurring phrases, keywords shared by >= 6 docs
        # (docs/quest.md, "Keyword sharing"); without it almost every doc is its own keyword.
        synth_config={"quest": {"predictor": "extractive",
                                "predictor_options": {"max_phrase_words": 2,
                                                      "phrases_per_query": 12,
                                                      "window_words": 120},
                                "min_keyword_df": 6}},
        train_gin="gin/experiments/compare_demo.gin",
        eval_lengths="2k", eval_tasks="niah_single_1,vt", eval_samples=6,
        loss_sequences=2, gold_loglik=True, inspect_samples=2, inspect_contexts="512",
        cpu_devices=8),
    # One GPU/TPU host: SmolLM2-135M continued pretraining to 8K on the Wikipedia pool
    # (../shared/corpora), doc2query queries predicted by a causal LM.
    "wiki_smollm2_8k": Comparison(
        corpus="../shared/corpora/wiki_en_2019-*.jsonl.gz", corpus_name="wiki", length=8192,
        embedder="minilm", tokenizer="smollm2",
        synth_config={"quest": {"predictor": "causal_lm", "checkpoint": "smollm2"}},
        train_gin="gin/experiments/compare_smollm2_8k.gin", replay=False,
        eval_lengths="2k,4k,8k,16k", eval_samples=100, loss_sequences=16, fresh_samples=True),
    # The scaled-down replication on one GPU (README "What the comparison shows"): SmolLM2-135M
    # continued pretraining at 16K on the Wikipedia pool, each arm on its Task alone with the
    # same 20,971,520 tokens; MiniLM vectors computed on the GPU; Quest's queries from the
    # extractive stand-in with keywords shared by >= 20 documents (docs/quest.md: at df >= 6
    # the median keyword has one document); evaluated on held-out ELTeC novels. The control
    # `questshuffled` separates Quest's grouping from its choice of documents.
    "wiki_smollm2_16k": Comparison(
        corpus="../shared/corpora/wiki_en_2019-*.jsonl.gz", corpus_name="wiki", length=16384,
        methods=ARMS,
        embedder="minilm", tokenizer="smollm2", embed_elsewhere=True,
        synth_config={"quest": {"predictor": "extractive",
                                "predictor_options": {"max_phrase_words": 2,
                                                      "phrases_per_query": 12,
                                                      "window_words": 120},
                                "min_keyword_df": 20}},
        train_gin="gin/experiments/compare_smollm2_16k.gin", replay=False,
        eval_lengths="4k,8k,16k", eval_tasks="ruler,json_kv", eval_samples=100,
        loss_sequences=16, eval_heldout="../shared/corpora/eltec_eng_novels.jsonl.gz",
        eval_batch_size=50, eval_prefill_chunk=16384,
        inspect_samples=48, inspect_contexts="512,1024,4096"),
}
