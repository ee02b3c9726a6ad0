"""QuestMethod end to end on a hand-built corpus: build accounting, examples, seeds, shards."""

import json

import numpy as np
import pytest
from flax import nnx

from longjax import io
from longjax.models.t5 import T5, T5Config
from longjax.synth.methods.base import BuildContext
from longjax.synth.methods.quest import QuestMethod
from longjax.synth.methods.quest.predict import T5QueryPredictor, describe_predictor
from longjax.synth.methods.quest.queries import predict_queries, read_queries
from tests.helpers.synth import EOS, byte_tokenizer, make_store

L = 128
TOPICS = ["solar panel", "rice cooker", "wind turbine", "coral reef", "jazz piano",
          "mountain bike", "tax return", "black hole", "sourdough bread", "chess opening"]
SIZES = [2, 2, 3, 4, 5, 6, 7, 8, 9, 10]


def _corpus():
  texts, topic_of = [], []
  for topic, n in zip(TOPICS, SIZES):
    for _ in range(n):
      i = len(texts)
      texts.append(f"The {topic} of item{i} and thing{i}.")  # one multi-word phrase: the topic
      topic_of.append(topic)
  for i in range(3):  # single words only: no phrase scores >= 3
    texts.append(f"The item{100 + i} of it.")
    topic_of.append(None)
  for t in ("the of and", "it is the"):  # stopwords only: the predicted query is empty
    texts.append(t)
    topic_of.append(None)
  return texts, topic_of


def _build(index_dir, lengths=(L,), **quest):
  texts, topic_of = _corpus()
  store = make_store(index_dir, texts)
  logs = []
  ctx = BuildContext(store, byte_tokenizer(), None,
                     {"quest": {"predictor": "extractive", **quest}}, index_dir,
                     log=logs.append, lengths=lengths)
  QuestMethod().build(ctx)
  return texts, topic_of, logs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  index_dir = tmp_path_factory.mktemp("quest")
  texts, topic_of, logs = _build(index_dir)
  return index_dir, texts, topic_of, logs


def _examples(index_dir, **kw):
  args = dict(length=L, tokenizer=byte_tokenizer(), shard=0, num_shards=1, seed=3) | kw
  return list(QuestMethod().examples(index_dir, **args))


def test_build_accounts_for_every_document(built):
  index_dir, texts, topic_of, logs = built
  m = io.read_manifest(index_dir / "quest")
  c = m["counts"]
  assert c["documents"] == len(texts) == 61
  assert c["documents_indexed"] == 56 and c["keywords"] == 10
  assert c["without_keyword_reasons"] == {"no_keyword_above_threshold": 3, "no_queries": 2}
  assert c["documents_indexed"] + c["documents_without_keyword"] == c["documents"]
  assert sorted(s["doc_id"] for s in m["skipped"]) == list(range(56, 61))
  assert c["empty_queries"] == 2 and c["docs_without_queries"] == 2
  assert c["short_keywords"] == 2  # ceil(0.2 * 10)
  assert m["predictor"]["kind"] == "extractive"
  assert m["inputs"]["stopwords_sha256"] and m["inputs"]["blacklist_sha256"]
  dry = m["sampler_dry_run"][str(L)]
  assert dry["samples"] > 0 and sum(dry["docs_by_use_count"].values()) == 56
  lines = [json.loads(l) for l in (index_dir / "quest" / "keywords" / "doc_keywords.jsonl").open()]
  assert [r["keyword"] for r in lines] == topic_of
  assert any("without keyword" in line for line in logs)
  assert (index_dir / "quest" / "index_stats.png").read_bytes()[:4] == b"\x89PNG"
  top = json.loads((index_dir / "quest" / "keywords" / "keyword_df_top200.json").read_text())
  assert top[0] == {"keyword": "chess opening", "df": 10}


def test_examples_share_keywords_and_never_repeat_a_document(built):
  index_dir, texts, topic_of, _ = built
  out = _examples(index_dir)
  assert out
  tok = byte_tokenizer()
  for ex in out:
    assert ex["targets"].shape == (L,) and ex["targets"].dtype == np.int32
    prov = json.loads(ex["provenance"])
    docs = [d for _, d, _, _ in prov["spans"]]
    assert len(docs) == len(set(docs))
    for kw, d, s, e in prov["spans"]:
      assert topic_of[d] == kw and kw in texts[d].lower()
    want = np.concatenate([(tok.encode(texts[d]) + [EOS])[s:e] for _, d, s, e in prov["spans"]])
    np.testing.assert_array_equal(ex["targets"], want)
    assert prov["keywords"] == list(dict.fromkeys(k for k, *_ in prov["spans"]))


def test_drop_fill_policy_gives_one_keyword_per_example(tmp_path):
  _build(tmp_path, fill_policy="drop")
  out = _examples(tmp_path)
  assert out and all(len(json.loads(ex["provenance"])["keywords"]) == 1 for ex in out)


def test_same_seed_same_examples(built):
  index_dir = built[0]
  a, b, c = _examples(index_dir), _examples(index_dir), _examples(index_dir, seed=4)
  assert [e["provenance"] for e in a] == [e["provenance"] for e in b]
  assert [e["targets"].tolist() for e in a] == [e["targets"].tolist() for e in b]
  assert [e["provenance"] for e in a] != [e["provenance"] for e in c]


def test_shards_are_disjoint(built):
  index_dir = built[0]
  kws, docs = [], []
  for shard in range(3):
    spans = [s for ex in _examples(index_dir, shard=shard, num_shards=3)
             for s in json.loads(ex["provenance"])["spans"]]
    kws.append({k for k, *_ in spans})
    docs.append({d for _, d, _, _ in spans})
  for i in range(3):
    for j in range(i + 1, 3):
      assert not kws[i] & kws[j] and not docs[i] & docs[j]
  with pytest.raises(ValueError, match="shard"):
    _examples(index_dir, shard=3, num_shards=3)


def test_corpus_smaller_than_one_sample(tmp_path):
  _, _, logs = _build(tmp_path, lengths=(100_000,))
  m = io.read_manifest(tmp_path / "quest")
  assert m["sampler_dry_run"]["100000"]["samples"] == 0
  assert any("no sample can be filled" in line for line in logs)
  assert _examples(tmp_path, length=100_000) == []


def test_keywordless_pool_option(tmp_path):
  _build(tmp_path, keywordless="pool")
  m = io.read_manifest(tmp_path / "quest")
  assert m["counts"]["documents_indexed"] == 61 and m["skipped"] == []
  lines = (tmp_path / "quest" / "keywords" / "index.jsonl").read_text().splitlines()
  pool = [json.loads(l) for l in lines if json.loads(l)["keyword"] == "<no-keyword>"]
  assert pool[0]["doc_ids"] == list(range(56, 61))


def test_min_keyword_df_fallbacks_are_counted(tmp_path, built):
  # Every document has one candidate (its topic); "solar panel" and "rice cooker" have df 2,
  # so with min_keyword_df=3 their 4 documents fall back to it, and nothing else changes.
  _build(tmp_path, min_keyword_df=3)
  m = io.read_manifest(tmp_path / "quest")
  default = io.read_manifest(built[0] / "quest")
  assert m["config"]["min_keyword_df"] == 3 and default["config"]["min_keyword_df"] == 1
  assert m["counts"]["min_keyword_df_fallbacks"] == 4
  assert default["counts"]["min_keyword_df_fallbacks"] == 0
  rows = [json.loads(l) for l in (tmp_path / "quest" / "keywords" / "doc_keywords.jsonl").open()]
  assert [r["doc_id"] for r in rows if r["df_fallback"]] == [0, 1, 2, 3]
  assert (tmp_path / "quest" / "keywords" / "index.jsonl").read_text() == \
    (built[0] / "quest" / "keywords" / "index.jsonl").read_text()
  # Index sizes 2, 2, 3, ..., 10: median 5.5; a document's median group has 7 (docs 23-29).
  sizes = m["counts"]["docs_per_keyword"]
  assert (sizes["min"], sizes["median"], sizes["max"]) == (2, 5.5, 10)
  assert sizes["doc_weighted_median"] == 7.0
  with pytest.raises(ValueError, match="min_keyword_df"):
    _build(tmp_path / "bad", min_keyword_df=0)


def test_bad_config_and_missing_build(tmp_path):
  store = make_store(tmp_path, ["a b c", "d e f"])
  with pytest.raises(ValueError, match="checkpoint"):
    QuestMethod().build(BuildContext(store, byte_tokenizer(), None, {}, tmp_path))
  with pytest.raises(ValueError, match="quest: unknown option 'split'; known: "):
    QuestMethod().build(BuildContext(store, byte_tokenizer(), None,
                                     {"quest": {"predictor": "extractive", "split": 1}}, tmp_path))
  with pytest.raises(FileNotFoundError, match="synth build"):
    _examples(tmp_path / "nowhere")


class _Flaky:
  """A predictor that fails on its second call, to interrupt a run."""
  name = "flaky"

  def __init__(self, fail_at):
    self.calls, self.fail_at = 0, fail_at

  def describe(self):
    return {"kind": "flaky"}

  def predict(self, docs, *, seed):
    self.calls += 1
    if self.calls == self.fail_at:
      raise RuntimeError("interrupted")
    return [[f"query {d}", ""] for d, _ in docs]


def test_query_prediction_resumes(tmp_path):
  store = make_store(tmp_path, [f"text {i}" for i in range(10)])
  flaky = _Flaky(fail_at=2)
  with pytest.raises(RuntimeError, match="interrupted"):
    predict_queries(store, flaky.describe(), lambda: flaky, tmp_path / "q", seed=0, part_size=3)
  again = _Flaky(fail_at=0)
  counts = predict_queries(store, again.describe(), lambda: again, tmp_path / "q", seed=0,
                           part_size=3, log=lambda _: None)
  assert counts["parts"] == 4 and counts["parts_predicted_now"] == 3 and again.calls == 3
  assert read_queries(tmp_path / "q", [9, 0]) == [["query 9", ""], ["query 0", ""]]
  # every part done: the predictor (model weights, for a model predictor) is not even loaded
  counts = predict_queries(store, again.describe(), lambda: pytest.fail("loaded"), tmp_path / "q",
                           seed=0, part_size=3, log=lambda _: None)
  assert counts["parts_predicted_now"] == 0


def test_t5_predictor_segments_and_keys_queries(tmp_path):
  tok = byte_tokenizer()
  cfg = T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                 num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                 eos_token_id=EOS)
  model = T5(cfg, rngs=nnx.Rngs(0))
  pred = T5QueryPredictor(model, tok, batch_size=4, max_input_tokens=16, max_segments_per_doc=3)
  docs = [(7, "short doc"), (8, "x" * 100), (9, "")]
  out = pred.predict(docs, seed=1)
  assert [len(q) for q in out] == [1, 3, 1]  # 100 bytes -> 7 windows of 15 -> 3 kept
  assert all(isinstance(q, str) for qs in out for q in qs)
  assert pred.predict(docs[::-1], seed=1) == out[::-1]  # keyed by (seed, doc, segment)
  assert pred.describe()["decode"]["top_p"] == 0.95
  assert pred.describe() == T5QueryPredictor.describe_checkpoint(
      "", dtype=cfg.dtype, max_input_tokens=16, max_segments_per_doc=3)


def test_causal_lm_predictor_prompts_a_llama():
  from longjax.models import Llama, LlamaConfig, generate
  from longjax.synth.methods.quest.predict import CausalLMQueryPredictor
  tok = byte_tokenizer()
  model = Llama(LlamaConfig.preset("tiny", vocab_size=tok.vocab_size), rngs=nnx.Rngs(0))
  pred = CausalLMQueryPredictor(model, tok, max_input_tokens=24, max_segments_per_doc=2,
                                max_new_tokens=6, batch_size=2)
  docs = [(0, "solar panels on roofs"), (1, "y" * 60), (2, "wind")]
  out = pred.predict(docs, seed=0)
  assert [len(q) for q in out] == [1, 2, 1]
  prompts = pred.prompt_ids(docs[1][1])
  assert prompts[0][0] == tok.bos_id and "Passage: " + "y" * 24 in tok.decode(prompts[0])
  # Batched, padded prediction equals one-prompt-at-a-time greedy generation.
  want = pred.reply(generate(model, prompts[1], 6, eos_id=tok.eos_id))
  assert out[1][1] == want
  assert pred.describe()["kind"] == "causal_lm"
  assert pred.describe() == CausalLMQueryPredictor.describe_checkpoint(
      "", max_input_tokens=24, max_segments_per_doc=2, max_new_tokens=6)


def test_build_with_a_t5_checkpoint(tmp_path):
  """The real-run path: predictor='t5' loads an HF checkpoint dir (weights + tokenizer)."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  tok = byte_tokenizer()
  ckpt = tmp_path / "t5"
  torch.manual_seed(0)
  hf = transformers.T5Config(vocab_size=tok.vocab_size, d_model=32, d_kv=8, d_ff=48,
                             num_layers=1, num_heads=2, feed_forward_proj="gated-gelu",
                             eos_token_id=EOS, pad_token_id=0, decoder_start_token_id=0)
  transformers.T5ForConditionalGeneration(hf).save_pretrained(ckpt)
  tok._impl.save_pretrained(ckpt)
  texts, _ = _corpus()
  index_dir = tmp_path / "idx"
  store = make_store(index_dir, texts[:12])
  options = {"predictor": "t5", "checkpoint": str(ckpt),
             "predictor_options": {"batch_size": 8, "dtype": "float32", "max_input_tokens": 24}}
  QuestMethod().build(BuildContext(store, tok, None, {"quest": options}, index_dir,
                                   lengths=(64,)))
  m = io.read_manifest(index_dir / "quest")
  assert m["predictor"]["kind"] == "t5" and m["predictor"]["checkpoint"] == str(ckpt)
  # What the Beam build's driver records without loading the checkpoint.
  assert m["predictor"] == describe_predictor("t5", checkpoint=str(ckpt),
                                              **options["predictor_options"])
  c = m["counts"]
  assert c["documents"] == 12 == c["documents_indexed"] + c["documents_without_keyword"]
  # 24 model tokens per window (23 text + EOS): every test text fits one or two windows.
  want = sum(len(range(0, len(tok.encode(t)), 23)) for t in texts[:12])
  assert c["queries"] == want


def test_describing_a_missing_checkpoint_is_a_clear_error(tmp_path):
  """The build describes its predictor before it writes the query config (which discards the
  parts predicted under another description): a mistyped checkpoint must fail right there."""
  for kind in ("t5", "causal_lm"):
    with pytest.raises(ValueError, match="no_such_checkpoint.*no config.json"):
      describe_predictor(kind, checkpoint=str(tmp_path / "no_such_checkpoint"))
