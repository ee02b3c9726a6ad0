"""Task/Mixture registration over a built index: names, streamed examples, sharding, mixing."""

import json

import numpy as np
import pytest
import seqio

import longjax.tasks
from longjax.synth.methods import METHODS
from longjax.synth.methods.task_names import ENV_INDEX_DIRS, parse_task_name, task_name
from longjax.tasks.vocabularies import HFVocabulary

L = 128


@pytest.fixture(scope="module")
def names(index_dir):
  return longjax.tasks.register(index_dir, replay_ratio=0.25)


def _records(ds):
  return [(ex["targets"].tolist(), ex["provenance"].decode()) for ex in ds.as_numpy_iterator()]


def test_names(names):
  for method in ("standard", "knn", "iclm", "nextlong"):
    assert f"longjax_toy_{method}_128" in names and f"longjax_toy_{method}_128_mix" in names
  assert "longjax_toy_replay_128" in names
  assert parse_task_name("longjax_toy_knn_64k_mix") == ("toy", "knn", 65536, True)
  assert task_name("toy", "iclm", 1 << 20) == "longjax_toy_iclm_1m"
  with pytest.raises(ValueError, match="expected longjax_"):
    parse_task_name("toy_knn_8k")


@pytest.mark.parametrize("method", ["standard", "knn", "iclm", "nextlong"])
def test_task_streams_the_method_examples(names, index_dir, method):
  task = seqio.get_mixture_or_task(f"longjax_toy_{method}_128")
  assert isinstance(task.output_features["targets"].vocabulary, HFVocabulary)
  got = _records(task.get_dataset({"targets": L}, shuffle=False))
  tok = task.output_features["targets"].vocabulary.tokenizer
  want = [(ex["targets"].tolist(), ex["provenance"]) for ex in METHODS[method].examples(
      index_dir, length=L, tokenizer=tok, shard=0, num_shards=1, seed=0)]
  assert got == want and len(got) > 0


def test_seqio_shards_are_disjoint_and_complete(names):
  task = seqio.get_mixture_or_task("longjax_toy_knn_128")
  whole = _records(task.get_dataset({"targets": L}, shuffle=False))
  parts = [_records(task.get_dataset({"targets": L}, shuffle=False,
                                     shard_info=seqio.ShardInfo(i, 3))) for i in range(3)]
  key = lambda p: json.loads(p)["context"]  # shard fields differ; the context id does not
  flat = [key(p) for part in parts for _, p in part]
  assert len(flat) == len(set(flat)) and sorted(flat) == sorted(key(p) for _, p in whole)
  # seqio's own seed (Beam gives each cache shard one) must not change the samples.
  reseeded = _records(task.source.get_dataset(seed=1234, shuffle=False))
  assert reseeded == whole


def test_mixture_token_share_and_packing(names):
  mix = seqio.get_mixture_or_task("longjax_toy_standard_128_mix")
  ds = mix.get_dataset({"targets": L}, shuffle=False, seed=0, num_epochs=None)
  tokens = {"standard": 0, "replay": 0}
  for ex in ds.take(400).as_numpy_iterator():
    tokens[json.loads(ex["provenance"])["method"]] += len(ex["targets"])
  share = tokens["replay"] / sum(tokens.values())
  assert 0.18 < share < 0.32  # replay_ratio = 0.25 of tokens (400 seeded draws)
  # Through the trainer's converter: full samples alone, replay documents packed together.
  packed = seqio.get_dataset("longjax_toy_standard_128_mix", {"targets": L},
                             seqio.LMFeatureConverter(pack=True), shuffle=False, seed=0,
                             num_epochs=None)
  rows = list(packed.take(100).as_numpy_iterator())
  assert all(r["decoder_target_tokens"].shape == (L,) for r in rows)
  assert max(int(r["decoder_segment_ids"].max()) for r in rows) > 1


def test_replay_examples_are_whole_documents(names, index_dir):
  task = seqio.get_mixture_or_task("longjax_toy_replay_128")
  tok = task.output_features["targets"].vocabulary.tokenizer
  from longjax.synth import corpus
  store = corpus.open_store(index_dir)
  for targets, prov in _records(task.get_dataset({"targets": L}, shuffle=False))[:10]:
    (doc, start, end), = json.loads(prov)["spans"]
    full = tok.encode(store.text(doc)) + [tok.eos_id]
    assert targets == full[start:end] and len(targets) <= L


def test_register_from_env(index_dir, monkeypatch):
  monkeypatch.setenv(ENV_INDEX_DIRS, str(index_dir))
  seqio.TaskRegistry.remove("longjax_toy_iclm_128")
  assert "longjax_toy_iclm_128" in longjax.tasks.register_from_env()
  assert "longjax_toy_iclm_128" in seqio.TaskRegistry.names()


def test_bad_arguments(index_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="no build manifest"):
    longjax.tasks.register(tmp_path)
  with pytest.raises(ValueError, match="replay_ratio"):
    longjax.tasks.register(index_dir, replay_ratio=1.0)
  with pytest.raises(ValueError, match="unknown methods"):
    longjax.tasks.register(index_dir, methods=["bogus"])
  longjax.tasks.register(index_dir, lengths=["256"], methods=["knn"])
  # tf.data re-raises the generator's FileNotFoundError as UnknownError with the same message.
  with pytest.raises(Exception, match="no context plan for length 256"):
    next(seqio.get_mixture_or_task("longjax_toy_knn_256").get_dataset(
        {"targets": 256}, shuffle=False).as_numpy_iterator())


@pytest.mark.parametrize("method", ["standard", "knn", "iclm", "nextlong", "replay"])
def test_every_task_uses_the_one_boundary_convention(names, index_dir, method):
  """No arm trains a control token the others never see (specs/baselines.md §0): the byte
  tokenizer's convention is EOS after each document and no start token, so no sample holds a
  BOS, and every document end inside a sample is marked by exactly one EOS."""
  task = seqio.get_mixture_or_task(f"longjax_toy_{method}_128")
  tok = task.output_features["targets"].vocabulary.tokenizer
  assert tok.boundaries.start == () and tok.boundaries.end == (tok.eos_id,)
  records = _records(task.get_dataset({"targets": L}, shuffle=False))
  assert records
  for targets, provenance in records:
    assert tok.bos_id not in targets
    spans = json.loads(provenance).get("spans")
    if spans is None:  # nextlong: one synthetic document cut at T, so no end token inside
      assert tok.eos_id not in targets
      continue
    ends = [pos + e - s - 1 for pos, (d, s, e) in zip(
        np.cumsum([0] + [e - s for _, s, e in spans]), spans)
        if e == len(tok.encode(_text(index_dir, d))) + 1]
    assert [i for i, t in enumerate(targets) if t == tok.eos_id] == ends


def _text(index_dir, doc_id):
  from longjax.synth import corpus  # pylint: disable=import-outside-toplevel
  return corpus.open_store(index_dir).text(doc_id)


def test_a_stray_control_token_stops_the_task(index_dir):
  from longjax.synth.methods.base import check_boundaries  # pylint: disable=import-outside-toplevel
  task = seqio.get_mixture_or_task("longjax_toy_standard_128")
  tok = task.output_features["targets"].vocabulary.tokenizer
  check_boundaries(np.array([5, tok.eos_id, 7]), tok, "ok")
  with pytest.raises(ValueError, match=r"control tokens \[1\] outside the boundary convention"):
    check_boundaries(np.array([tok.bos_id, 5, 6]), tok, "sample 0")


def test_id_zero_documents_survive_seqio_packing(tmp_path):
  """A tokenizer whose document separator is id 0 (SmolLM2's `<|endoftext|>`): seqio packs and
  pads with 0, so without the shift a packed row lost tokens and segments at every separator.
  The trainer's rows must equal the method's samples token for token, one segment each."""
  from tokenizers import Tokenizer as RawTokenizer, decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  from transformers import PreTrainedTokenizerFast  # pylint: disable=import-outside-toplevel
  from longjax.synth import build  # pylint: disable=import-outside-toplevel
  from longjax.tasks.input import SeqioBatches  # pylint: disable=import-outside-toplevel
  alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
  vocab = {"<|endoftext|>": 0, "<pad>": 1, **{ch: i + 2 for i, ch in enumerate(alphabet)}}
  raw = RawTokenizer(models.BPE(vocab=vocab, merges=[]))
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  raw.decoder = decoders.ByteLevel()
  tok_dir = tmp_path / "sep0"
  PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                          pad_token="<pad>").save_pretrained(tok_dir)
  corpus = tmp_path / "c.jsonl"
  corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": f"story {i}: " + "ab " * (5 + i)})
                            + "\n" for i in range(30)))
  index = tmp_path / "idx"
  build.run_build(build.BuildOptions(corpus=str(corpus), out=index, methods=("standard",),
                                     tokenizer=str(tok_dir), lengths=(64,)),
                  progress=lambda x, **_: x, log_fn=lambda _: None)
  longjax.tasks.register(index, corpus="sep0", lengths=[64], methods=["standard"])
  from longjax.synth.methods import METHODS as ALL  # pylint: disable=import-outside-toplevel
  from longjax.models.tokenizer import load_tokenizer  # pylint: disable=import-outside-toplevel
  tok = load_tokenizer(tok_dir)
  assert tok.boundaries.end == (0,)
  want = [ex["targets"] for ex in ALL["standard"].examples(index, length=64, tokenizer=tok,
                                                           shard=0, num_shards=1, seed=0)][:4]
  source = SeqioBatches("longjax_sep0_standard_64", {"targets": 64}, shuffle=False)
  batch = next(source.batches(start=0, rows=slice(0, 4), global_batch=4))
  np.testing.assert_array_equal(batch["decoder_target_tokens"], np.stack(want))
  assert (batch["decoder_segment_ids"] == 1).all()
  assert (batch["decoder_target_tokens"] == 0).sum() > 0  # the separators are there
  np.testing.assert_array_equal(batch["decoder_input_tokens"][:, 1:], np.stack(want)[:, :-1])
  # An export records the ids its (unshifted) rows hold: the tokenizer's, not seqio's shifted
  # count (a model of the tokenizer's vocab_size must be able to train on it).
  from longjax.tasks import export  # pylint: disable=import-outside-toplevel
  plan = export.make_plan(export.ExportOptions("longjax_sep0_standard_64", length=64, tokens=64,
                                               out=tmp_path))
  assert plan.config["vocab_size"] == tok.vocab_size


@pytest.mark.parametrize("method", ["knn", "nextlong"])
def test_full_rows_equal_seqio_packing(names, method):
  """A method's Task alone fills every row with one example: the converter that skips seqio's
  packing window (L examples per window: 16,384 samples before the first 16K row) gives
  exactly the rows packing gives; a `_mix` Mixture (short replay documents) is still packed."""
  from longjax.tasks.input import FullRowsConverter, SeqioBatches  # pylint: disable=import-outside-toplevel
  name = f"longjax_toy_{method}_128"
  source = SeqioBatches(name, {"targets": L}, seed=3)
  assert isinstance(source.converter, FullRowsConverter)
  assert not isinstance(SeqioBatches(f"{name}_mix", {"targets": L}).converter, FullRowsConverter)
  packed = seqio.get_dataset(name, {"targets": L}, seqio.LMFeatureConverter(pack=True),
                             shuffle=True, seed=3, num_epochs=None)
  rows = list(source.dataset(shard=0, num_shards=1).take(6).as_numpy_iterator())
  want = list(packed.take(6).as_numpy_iterator())
  assert len(rows) == len(want) == 6
  for row, ref in zip(rows, want):
    assert row.keys() == ref.keys()
    for key in ref:
      np.testing.assert_array_equal(row[key], ref[key], err_msg=key)
