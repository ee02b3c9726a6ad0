"""`synth inspect`: LRD vs a brute-force NLL, boundary counts, re-encoding, the CLI end to end."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from longjax.models import Llama, LlamaConfig, load_hf, save_hf
from longjax.models.tokenizer import Tokenizer, load_tokenizer
from longjax.synth import inspect
from longjax.synth.__main__ import main
from longjax.synth.chunking import open_chunk_store
from longjax.synth.corpus import open_store
from longjax.synth.embed import HashingEmbedder
from longjax.synth.methods import METHODS
from tests.helpers.synth import BOS, EOS, byte_tokenizer

LENGTH = 256


def _tiny_llama(vocab: int = 259) -> Llama:
  cfg = LlamaConfig.preset("tiny", vocab_size=vocab, dtype="float32", param_dtype="float32")
  return Llama(cfg, rngs=nnx.Rngs(0))


def _brute_force_nll(model, x: np.ndarray, first: int, targets: range) -> float:
  """Mean of -log p(x_t | x_first..x_{t-1}) over `targets`, from the full logits in float64."""
  logits = np.asarray(model(jnp.asarray(x[None, first:]))[0], np.float64)
  z = logits - logits.max(-1, keepdims=True)
  logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
  return float(np.mean([-logp[t - first - 1, x[t]] for t in targets]))


def test_scored_nll_equals_brute_force():
  model = _tiny_llama()
  x = np.random.default_rng(1).integers(3, 259, (2, 40)).astype(np.int32)
  got = inspect.scored_nll(model, x, (6, 12))
  span = range(30, 40)  # the last quarter of 40 tokens
  for i in range(2):
    assert got["full"][i] == pytest.approx(_brute_force_nll(model, x[i], 0, span), abs=1e-4)
    for c in (6, 12):
      assert got[f"c{c}"][i] == pytest.approx(_brute_force_nll(model, x[i], 30 - c, span),
                                              abs=1e-4)
  assert not np.allclose(got["full"], got["c6"])  # the contexts really differ
  with pytest.raises(ValueError, match="must be in"):
    inspect.scored_nll(model, x, (30,))


def test_boundary_counts_and_bootstrap_by_hand():
  tok = byte_tokenizer()  # boundaries: EOS after each document; BOS is not in the convention
  assert tok.boundaries.end == (EOS,) and tok.boundaries.start == ()
  sample = [BOS, 70, 71, EOS, 72, EOS, BOS, 73]
  assert inspect.boundary_counts(sample, tok) == {"boundary_start": 0, "boundary_end": 2,
                                                  f"bos {BOS}": 2}
  stat = inspect.mean_interval([1.0, 2.0, 3.0, 10.0])
  assert stat["mean"] == 4.0 and 1.0 <= stat["ci95"][0] < 4.0 < stat["ci95"][1] <= 10.0
  assert inspect.mean_interval([2.5])["ci95"] == [2.5, 2.5]


def _endoftext_byte_tokenizer() -> Tokenizer:
  """Bytes shifted by one id, with a GPT-2 style `<|endoftext|>` = 0 document separator."""
  from tokenizers import Tokenizer as RawTokenizer, decoders, models, pre_tokenizers
  from transformers import PreTrainedTokenizerFast
  vocab = {"<|endoftext|>": 0, "<pad>": 1}
  vocab.update({ch: i + 2 for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))})
  raw = RawTokenizer(models.BPE(vocab=vocab, merges=[]))
  raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  raw.decoder = decoders.ByteLevel()
  fast = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>",
                                 pad_token="<pad>")
  return Tokenizer("eot-bytes", fast, "hf", None, 0, 1)


def test_reencode_maps_texts_and_boundaries():
  src, dst = byte_tokenizer(), _endoftext_byte_tokenizer()
  assert dst.boundaries.end == (0,)
  sample = [EOS] + src.encode("ab") + [EOS] + src.encode("cd")
  # Byte b is id (rank of b) + 3 in the source and + 2 in the target; the cut first document's
  # EOS starts the sample, so nothing precedes "ab"; the separator maps to <|endoftext|>.
  assert src.encode("ab") == [x + 1 for x in dst.encode("ab")]
  assert inspect.reencode(sample, src, dst) == dst.encode("ab") + [0] + dst.encode("cd")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  """An index (standard, knn, nextlong at 256 tokens) whose tokenizer is the tiny model's."""
  root = tmp_path_factory.mktemp("inspect")
  model_dir = root / "model"
  save_hf(_tiny_llama(), model_dir)
  byte_tokenizer()._impl.save_pretrained(str(model_dir))
  rng = np.random.default_rng(0)
  topics = [[f"{t}{j}" for j in range(12)] for t in ("river", "stock", "match", "vote")]
  lines = [json.dumps({"id": f"d{i}", "text": f"Story {i}. " + " ".join(
      rng.choice(topics[i % 4], 12))}) for i in range(40)]
  (root / "c.jsonl").write_text("\n".join(lines) + "\n")
  index = root / "idx"
  assert main(["build", "--corpus", str(root / "c.jsonl"), "--out", str(index), "--methods",
               "standard,knn,nextlong", "--embedder", "hashing-64", "--tokenizer",
               str(model_dir), "--lengths", str(LENGTH)]) == 0
  return index, model_dir


def test_cli_writes_json_and_png(built, tmp_path, capsys):
  index, model_dir = built
  out = tmp_path / "out"
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(model_dir), "--samples", "2", "--contexts", "32,64,500", "--out",
               str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| standard | 2 |" in printed and "LRD c=64" in printed
  result = json.loads((out / "inspect.json").read_text())
  assert (out / "inspect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert json.loads((out / "manifest.json").read_text())["kind"] == "inspect"
  assert set(result["methods"]) == {"standard", "knn", "nextlong"}
  assert result["contexts"] == [32, 64] and not result["reencoded"]
  assert result["scored_span"] == [192, 256] and "500" in " ".join(result["notes"])
  assert result["command"].startswith("python -m longjax.synth inspect --index-dir")

  tok, store = load_tokenizer(model_dir), open_store(index)
  model = load_hf(model_dir, dtype="float32")
  for name, m in result["methods"].items():
    examples = METHODS[name].examples(index, length=LENGTH, tokenizer=tok, shard=0,
                                      num_shards=1, seed=0)
    ex = next(iter(examples))
    x, rec = np.asarray(ex["targets"]), m["per_sample"][0]
    span = range(192, 256)
    assert rec["nll_full"] == pytest.approx(_brute_force_nll(model, x, 0, span), abs=1e-4)
    assert rec["lrd_c32"] == pytest.approx(
        _brute_force_nll(model, x, 160, span) - rec["nll_full"], abs=1e-4)
    assert rec["boundary_end"] == int(np.sum(x == EOS)) and rec[f"bos {BOS}"] == 0
    prov = json.loads(ex["provenance"])
    if name == "nextlong":  # every counted chunk starts inside the sample, the next one does not
      chunks, text = open_chunk_store(index), tok.decode(x)
      order = [c for mc, negs in zip(prov["meta_chunks"], prov["negatives"])
               for c in (mc, *negs)]
      docs = {int(chunks.doc_of_chunk[c]) for c in order[:rec["pieces"]]}
      assert all(chunks.text(c)[:24] in text for c in order[:rec["pieces"]])
      assert rec["pieces"] == len(order) or chunks.text(order[rec["pieces"]])[:24] not in text
      texts = [chunks.text(c) for c in order[:rec["pieces"]]]
    else:
      docs = {s[0] for s in prov["spans"]}
      texts = [store.text(s[0]) for s in prov["spans"]]
    assert rec["documents"] == len(docs) > 1
    v = HashingEmbedder(64).embed(texts)
    assert rec["adjacent_similarity"] == pytest.approx(np.mean(np.sum(v[:-1] * v[1:], 1)),
                                                       abs=1e-5)
    assert m["documents"]["mean"] == np.mean([r["documents"] for r in m["per_sample"]])


def test_select_then_score_without_the_index_equals_one_run(built, tmp_path, capsys):
  """`--select-only` where the index is, `--score` where the model is (the index moved away);
  the selection already prints the structure columns, equal to the scored run's."""
  index, model_dir = built
  common = ["--model", str(model_dir), "--samples", "2", "--contexts", "32"]
  whole, split = tmp_path / "whole", tmp_path / "split"
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), *common,
               "--out", str(whole)]) == 0
  capsys.readouterr()
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), *common,
               "--select-only", "--out", str(split)]) == 0
  assert not (split / "inspect.json").exists()
  structure = capsys.readouterr().out
  assert "structure only (not scored yet)" in structure and "LRD" not in structure
  moved = tmp_path / "moved"
  index.rename(moved)
  try:
    assert main(["inspect", "--score", str(split), "--contexts", "32"]) == 0
  finally:
    moved.rename(index)
  a, b = (json.loads((d / "inspect.json").read_text()) for d in (whole, split))
  for name in a["methods"]:
    assert [r["lrd_c32"] for r in b["methods"][name]["per_sample"]] == pytest.approx(
        [r["lrd_c32"] for r in a["methods"][name]["per_sample"]], abs=1e-6)
    assert b["methods"][name]["documents"] == a["methods"][name]["documents"]
    mean = b["methods"][name]["adjacent_similarity"]["mean"]
    assert mean is None or f"{mean:.3f}" in structure


def test_score_under_another_model_with_the_same_tokenizer(built, tmp_path, capsys):
  """`--score DIR --model M` scores the selection under M (a model trained from the selection's
  reference, e.g. at 16K): the NLL is M's own, by hand; a model with another tokenizer is
  refused, since the samples are token ids."""
  index, model_dir = built
  split, trained = tmp_path / "split", tmp_path / "trained"
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(model_dir), "--samples", "1", "--methods", "standard", "--select-only",
               "--out", str(split)]) == 0
  cfg = LlamaConfig.preset("tiny", vocab_size=259, dtype="float32", param_dtype="float32")
  save_hf(Llama(cfg, rngs=nnx.Rngs(1)), trained)  # other weights, the same tokenizer
  byte_tokenizer()._impl.save_pretrained(str(trained))
  out = tmp_path / "out"
  assert main(["inspect", "--score", str(split), "--model", str(trained), "--contexts", "32",
               "--out", str(out)]) == 0
  result = json.loads((out / "inspect.json").read_text())
  assert result["model"] == str(trained) and "scored under" in " ".join(result["notes"])
  _, tokens = inspect.read_selection(split)
  x, q0 = tokens["standard"][0], LENGTH - LENGTH // 4
  for name, model in (("trained", load_hf(trained, dtype="float32")),
                      ("selection's", load_hf(model_dir, dtype="float32"))):
    want = _brute_force_nll(model, x, 0, range(q0, LENGTH))
    got = result["methods"]["standard"]["per_sample"][0]["nll_full"]
    assert (got == pytest.approx(want, abs=1e-4)) == (name == "trained")
  other = tmp_path / "eot_model"
  save_hf(_tiny_llama(vocab=258), other)
  _endoftext_byte_tokenizer()._impl.save_pretrained(str(other))
  capsys.readouterr()
  assert main(["inspect", "--score", str(split), "--model", str(other), "--contexts", "32",
               "--out", str(tmp_path / "o")]) == 2
  assert "select them again with --model" in capsys.readouterr().err


def test_score_under_checks_the_tokenizer_the_ids_are_in(built, tmp_path, capsys):
  """Samples re-encoded to the reference's tokenizer hold its ids, not the index's: a model with
  the reference's tokenizer may score them, one with the index's tokenizer may not."""
  index, model_dir = built
  eot, eot_trained, split = tmp_path / "eot", tmp_path / "eot_trained", tmp_path / "split"
  for path, seed in ((eot, 0), (eot_trained, 1)):
    cfg = LlamaConfig.preset("tiny", vocab_size=258, dtype="float32", param_dtype="float32")
    save_hf(Llama(cfg, rngs=nnx.Rngs(seed)), path)
    _endoftext_byte_tokenizer()._impl.save_pretrained(str(path))
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(eot), "--samples", "1", "--methods", "standard", "--select-only",
               "--out", str(split)]) == 0
  result, _ = inspect.read_selection(split)
  assert result["reencoded"]
  inspect.score_under(result, str(eot_trained))
  assert result["model"] == str(eot_trained)
  result, _ = inspect.read_selection(split)
  with pytest.raises(ValueError, match="select them again"):
    inspect.score_under(result, str(model_dir))  # the index's tokenizer: other ids


def test_prefix_scores_only_the_first_tokens(built, tmp_path):
  """--prefix P scores each sample's first P tokens: the LRD of a sample cut to P, by hand."""
  index, model_dir = built
  out, p = tmp_path / "out", LENGTH // 2
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(model_dir), "--samples", "1", "--methods", "standard", "--contexts", "16",
               "--prefix", str(p), "--out", str(out)]) == 0
  result = json.loads((out / "inspect.json").read_text())
  q0 = p - p // 4
  assert result["scored_length"] == p and result["scored_span"] == [q0, p]
  assert "--prefix" in " ".join(result["notes"])
  ex = next(iter(METHODS["standard"].examples(index, length=LENGTH, tokenizer=load_tokenizer(
      model_dir), shard=0, num_shards=1, seed=0)))
  x, model = np.asarray(ex["targets"][:p]), load_hf(model_dir, dtype="float32")
  rec = result["methods"]["standard"]["per_sample"][0]
  assert rec["tokens"] == LENGTH and result["selected_length"] == LENGTH  # structure: whole
  assert rec["nll_full"] == pytest.approx(_brute_force_nll(model, x, 0, range(q0, p)), abs=1e-4)
  assert rec["nll_c16"] == pytest.approx(_brute_force_nll(model, x, q0 - 16, range(q0, p)),
                                         abs=1e-4)
  with pytest.raises(ValueError, match="--prefix"):
    inspect.score_samples(*inspect.select_samples(index, length=LENGTH, model=str(model_dir),
                                                  samples=1, methods=["standard"]),
                          contexts=[16], prefix=LENGTH + 1)


def test_cli_reencodes_for_a_model_with_another_tokenizer(built, tmp_path):
  index, model_dir = built
  other = tmp_path / "eot_model"
  save_hf(_tiny_llama(vocab=258), other)
  _endoftext_byte_tokenizer()._impl.save_pretrained(str(other))
  out = tmp_path / "out"
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(other), "--samples", "1", "--methods", "standard", "--contexts", "32",
               "--out", str(out)]) == 0
  result = json.loads((out / "inspect.json").read_text())
  assert result["reencoded"] and "re-encoded" in " ".join(result["notes"])
  src, dst = load_tokenizer(model_dir), load_tokenizer(other)
  ex = next(iter(METHODS["standard"].examples(index, length=LENGTH, tokenizer=src, shard=0,
                                              num_shards=1, seed=0)))
  x = np.asarray(inspect.reencode(ex["targets"], src, dst))
  r = result["scored_length"]
  assert r == min(LENGTH, len(x)) and (x == 0).sum() == (ex["targets"] == EOS).sum()
  q0 = r - r // 4
  assert result["methods"]["standard"]["per_sample"][0]["nll_full"] == pytest.approx(
      _brute_force_nll(load_hf(other, dtype="float32"), x[:r], 0, range(q0, r)), abs=1e-4)


@pytest.mark.parametrize("argv,message", [
    (["--methods", "bogus"], "unknown method 'bogus'"),
    (["--methods", "iclm"], "method 'iclm' was not built"),
    (["--length", "512"], "length 512 was not built"),
    (["--index-dir", "/nonexistent/idx"], "no build manifest.json"),
])
def test_cli_errors_exit_2(built, tmp_path, capsys, argv, message):
  index, model_dir = built
  base = {"--index-dir": str(index), "--length": str(LENGTH), "--model": str(model_dir),
          "--out": str(tmp_path / "o")}
  base.update(zip(argv[::2], argv[1::2]))
  assert main(["inspect"] + [a for kv in base.items() for a in kv]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and message in err
  assert not (tmp_path / "o").exists()


def test_samples_longer_than_the_references_window_are_refused(built, tmp_path, capsys):
  """Past its trained positions a model's full-context NLL is meaningless (SmolLM2 at 16K):
  the score refuses such samples instead of reporting a huge negative LRD."""
  index, model_dir = built
  short = tmp_path / "short_window"
  model = load_hf(model_dir, dtype="float32")
  cfg = json.loads((model_dir / "config.json").read_text())
  save_hf(model, short)
  cfg["max_position_embeddings"] = LENGTH // 2
  (short / "config.json").write_text(json.dumps(cfg))
  byte_tokenizer()._impl.save_pretrained(str(short))
  assert main(["inspect", "--index-dir", str(index), "--length", str(LENGTH), "--model",
               str(short), "--samples", "1", "--contexts", "32", "--out",
               str(tmp_path / "o")]) == 2
  assert f"trained to {LENGTH // 2} positions" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["nextlong", "standard"])
def test_token_pieces_walk_the_real_sample(built, method):
  """IndexReader.token_pieces covers every token of a real sample, in order: each run of a
  document is that document's (chunk's) own tokens, each layout run the start or separator
  tokens."""
  index, model_dir = built
  tok = load_tokenizer(model_dir)
  reader = inspect.IndexReader(index, tok, None)
  examples = iter(METHODS[method].examples(index, length=LENGTH, tokenizer=tok, shard=0,
                                           num_shards=1, seed=0))
  for _ in range(3):
    ex = next(examples)
    x, prov = np.asarray(ex["targets"]), json.loads(ex["provenance"])
    runs = reader.token_pieces(prov, LENGTH)
    assert sum(n for _, n in runs) == LENGTH
    if method == "standard":
      assert runs == [(s[0], s[2] - s[1]) for s in prov["spans"]]
      continue
    chunks = open_chunk_store(index)
    sep = tok.encode(json.loads((index / "nextlong" / "manifest.json").read_text())["config"]["sep"])
    order = iter(c for m, negs in zip(prov["meta_chunks"], prov["negatives"])
                 for c in (m, *negs))
    pos = 0
    for doc, n in runs:
      got = x[pos:pos + n].tolist()
      if doc == -1:
        assert got == (list(tok.boundaries.start) if pos == 0 else sep[:n])
      else:
        c = next(order)
        assert doc == int(chunks.doc_of_chunk[c]) and got == tok.encode(chunks.text(c))[:n]
      pos += n
    # A shorter T cuts the same layout anywhere, the separator after a chunk included: cut one
    # token before, at and after every run's end, the runs still cover exactly T tokens.
    ends = np.cumsum([n for _, n in runs])
    for cut in sorted({e + d for e in ends[:-1] for d in (-1, 0, 1)}):
      cut_runs = reader.token_pieces(prov, int(cut))
      assert sum(n for _, n in cut_runs) == cut and cut_runs[:-1] == runs[:len(cut_runs) - 1]
