"""The Beam build (`synth build --runner DirectRunner`) against the single-process build.

The single-process build is the reference: the Beam build must write the same store, chunk
stores, embeddings, index, neighbour lists, Quest keyword index and method plans (every file
equal, every manifest equal but for when and how it ran), and every method's Task must yield
the same first samples, whatever the number of workers. Across `--shards` the index is exact
here (85 documents: brute force), so the data (lists, keyword index, plans, samples) is the
same for every shard count too; only the index layout and the manifests that name the shard
count differ.
"""

import gzip
import json
import random
import re

import pytest

from longjax import bundled_texts, io
from longjax.synth import build
from tests.helpers.synth import byte_tokenizer, make_store

METHOD_NAMES = ("standard", "knn", "iclm", "nextlong", "quest")
# The auto blacklist and min_keyword_df exercise the keyword stage's corpus-wide parts (a top-N,
# the document frequencies joined back); precompute_k the chunk collection's lists.
CONFIG = {"quest": {"predictor": "extractive", "blacklist_auto_top_n": 2, "min_keyword_df": 2},
          "nextlong": {"precompute_k": 16}}
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


def _files(root, skip=()):
  return sorted(p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and p.suffix != ".png" and not p.relative_to(root).parts[0] in skip)


def assert_same_files(reference, other):
  """Every file byte-equal (plots aside), every manifest equal but for RUN_FIELDS."""
  ref_files = _files(reference)
  assert ref_files == _files(other)
  for rel in ref_files:
    a, b = reference / rel, other / rel
    if rel.name == io.MANIFEST:
      assert _content(json.loads(a.read_text())) == _content(json.loads(b.read_text())), rel
    else:
      assert a.read_bytes() == b.read_bytes(), rel


def assert_same_build(reference, other):
  """`assert_same_files`, and the same first samples of every method's Task."""
  assert_same_files(reference, other)
  assert _first_task_samples(reference) == _first_task_samples(other)


def assert_same_data(reference, other):
  """Builds with different shard counts over an exact index: every data file equal outside
  `index/` (store, embeddings, neighbour lists, keyword index, plans), the lists' fingerprints
  equal, and the same first samples."""
  ref_files = _files(reference, skip=("index",))
  assert ref_files == _files(other, skip=("index",))
  for rel in ref_files:
    if rel.name != io.MANIFEST:
      assert (reference / rel).read_bytes() == (other / rel).read_bytes(), rel
  lists = sorted(p.name for p in (reference / "neighbours").iterdir())
  assert lists == ["chunks-2048-k16", "docs-k257", "docs-k51"]
  for name in lists:
    assert (io.read_manifest(reference / "neighbours" / name)["fingerprints"]
            == io.read_manifest(other / "neighbours" / name)["fingerprints"])
  fingerprints = io.read_manifest(reference)["counts"]["neighbour_lists"]
  assert sorted(fingerprints) == lists
  assert fingerprints == io.read_manifest(other)["counts"]["neighbour_lists"]
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


@pytest.fixture
def asked_finished(monkeypatch):
  """Makes the methods' builds fail if they find a stage the Beam build should have made
  unfinished (they would compute it in process, and the comparison would prove nothing)."""
  from longjax.synth import retrieval  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods import nextlong  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.quest import keyword_stage  # pylint: disable=import-outside-toplevel
  asked = []

  def check(module, name, finished):
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
      assert finished(*args, **kwargs), f"{name}: not finished by the Beam build"
      asked.append(name)
      return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapped)

  check(retrieval, "neighbour_lists", lambda index, vectors, k, out_dir=None, **_:
        io.is_complete(out_dir, **retrieval.lists_key(index, len(vectors), k)))
  check(nextlong, "build_plans", lambda directory, chunks, tokenizer, cfg, lengths, **_:
        io.is_complete(directory, **nextlong.plans_key(chunks, tokenizer, cfg, lengths)))
  check(keyword_stage, "build_stage", lambda directory, doc_ids, queries, cfg, counts, key, **_:
        io.is_complete(directory, **key))
  return asked


def test_in_process_beam_build_equals_single_process_build(reference, corpus_dir, tokenizer_dir,
                                                           tmp_path, asked_finished):
  top = _build(corpus_dir, tmp_path / "idx", tokenizer_dir, runner="DirectRunner")
  assert sorted(set(asked_finished)) == ["build_plans", "build_stage", "neighbour_lists"]
  assert top["run"]["runner"] == "DirectRunner"
  store = json.loads((reference / "corpus" / io.MANIFEST).read_text())
  assert {s["key"]: s["reason"] for s in store["skipped"]} == {
      "a40": "duplicate", "a5": "duplicate_id", "a42": "empty", "a70": "duplicate",
      "a80": "heldout"}
  assert store["counts"]["read"] == 90
  assert_same_build(reference, tmp_path / "idx")
  again = _build(corpus_dir, tmp_path / "idx", tokenizer_dir, runner="DirectRunner")
  assert set(again["run"]["seconds"]) == {"corpus"}  # nothing per document or per method redone


def test_beam_ingest_skips_unpaired_surrogates_as_the_single_process_ingest_does(tmp_path):
  """A title or id holding half a UTF-16 pair (a JSON escape such as "\\ud83d") cannot be
  stored as UTF-8: both ingests skip that document as `not_utf8` and write the same store."""
  corpus_dir = tmp_path / "corpus"
  corpus_dir.mkdir()
  (corpus_dir / "part-0.jsonl").write_text(
      '{"id": "a", "text": "first text"}\n'
      '{"id": "b", "title": "cut \\ud83d", "text": "second text"}\n'
      '{"id": "c\\udc00", "text": "third text"}\n'
      '{"id": "d", "title": "caf\u00e9", "text": "fourth text, na\u00efve"}\n',
      encoding="utf-8")
  for name, runner in (("single", None), ("beam", "DirectRunner")):
    build.run_build(build.BuildOptions(corpus=str(corpus_dir), out=tmp_path / name,
                                       runner=runner))
  store = io.read_manifest(tmp_path / "beam" / "corpus")
  assert [(s["key"], s["reason"], s["detail"].split(" has ")[0]) for s in store["skipped"]] \
      == [("b", "not_utf8", "title"), ("c\udc00", "not_utf8", "id")]
  assert store["counts"]["read"] == 4 and store["counts"]["kept"] == 2
  assert_same_files(tmp_path / "single" / "corpus", tmp_path / "beam" / "corpus")


def test_the_driver_describes_the_query_predictor_without_loading_it(tmp_path):
  """Quest's query tasks are planned from the predictor's description: a T5 checkpoint
  directory without weights (nothing the driver could load) still gives them."""
  # pylint: disable=import-outside-toplevel,protected-access
  from longjax.synth.methods.base import BuildContext
  from longjax.synth.methods.quest import QuestOptions, queries
  from longjax.synth.pipeline import stages
  store = make_store(tmp_path, ["one text", "two texts", "three texts"])
  absent = str(tmp_path / "no-t5")  # a config and no weights
  (tmp_path / "no-t5").mkdir()
  (tmp_path / "no-t5" / "config.json").write_text("{}")
  cfg = QuestOptions(predictor="t5", checkpoint=absent, query_part_size=2)
  tasks = stages._query_tasks(BuildContext(store, byte_tokenizer(), None, {}, tmp_path), cfg,
                              lambda _: None)
  directory = queries.queries_dir(tmp_path / "quest")
  assert tasks == [("queries", directory, 0), ("queries", directory, 1)]
  config = json.loads((directory / queries.CONFIG_FILE).read_text())
  assert config["predictor"]["checkpoint"] == absent and config["part_size"] == 2


def test_a_combine_result_missing_or_repeated_is_a_clear_error(tmp_path):
  from longjax.synth.pipeline import runner  # pylint: disable=import-outside-toplevel
  with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}: expected exactly one "
                     r"record .* found 0$"):
    runner.read_one(tmp_path)
  (tmp_path / "part-00000-of-00002").write_text("[1]\n")
  assert runner.read_one(tmp_path) == [1]
  (tmp_path / "part-00001-of-00002").write_text("[2]\n")
  with pytest.raises(ValueError, match="found 2$"):
    runner.read_one(tmp_path)


def _cli_build(corpus_dir, out, tokenizer_dir, *options):
  """`python -m longjax.synth build` with this file's methods and config; its manifest."""
  from longjax.synth.__main__ import main  # pylint: disable=import-outside-toplevel
  assert main(["build", "--corpus", str(corpus_dir), "--out", str(out), "--methods",
               ",".join(METHOD_NAMES), "--embedder", "hashing-64", "--tokenizer",
               str(tokenizer_dir), "--lengths", "2048", "--config", json.dumps(CONFIG),
               *options]) == 0
  return io.read_manifest(out)


def test_two_worker_beam_build_with_shards_equals_single_process_build(
    reference, corpus_dir, tokenizer_dir, tmp_path):
  """Two worker processes, three index shards searched as Beam tasks, from the CLI: the same
  build as one process with three shards, and the same data as one process with one."""
  single = _cli_build(corpus_dir, tmp_path / "single", tokenizer_dir, "--shards", "3")
  beam = _cli_build(corpus_dir, tmp_path / "beam", tokenizer_dir, "--shards", "3", "--runner",
                    "DirectRunner", "--direct_num_workers=2",
                    "--direct_running_mode=multi_processing")
  assert single["config"]["shards"] == beam["config"]["shards"] == 3
  assert beam["run"]["runner"] == "DirectRunner"
  assert beam["run"]["pipeline_options"] == ["--direct_num_workers=2",
                                             "--direct_running_mode=multi_processing"]
  assert {"pipeline_per_document", "pipeline_per_chunk", "pipeline_corpus_wide",
          "plans_rows"} <= set(beam["run"]["seconds"])
  assert sorted(p.name for p in (tmp_path / "beam" / "index" / "docs" / "scann").iterdir()) \
      == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]
  assert_same_build(tmp_path / "single", tmp_path / "beam")
  assert_same_data(reference, tmp_path / "beam")


def test_beam_options_need_a_runner(tmp_path, capsys):
  from longjax.synth.__main__ import main  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    main(["build", "--corpus", "default", "--out", str(tmp_path / "a"), "--methods", "none",
          "--direct_num_workers=2"])
  assert "accepted only by `build --runner" in capsys.readouterr().err
  assert main(["build", "--corpus", "default", "--out", str(tmp_path / "b"), "--methods", "none",
               "--runner", "DirectRunner"]) == 2
  assert "bundled default corpus is built in this process" in capsys.readouterr().err
  assert main(["build", "--corpus", "default", "--out", str(tmp_path / "c"), "--methods", "none",
               "--shards", "0"]) == 2
  assert "--shards must be an integer >= 1, got 0" in capsys.readouterr().err


def test_more_shards_than_vectors_is_refused(corpus_dir, tokenizer_dir, tmp_path, capsys):
  from longjax.synth.__main__ import main  # pylint: disable=import-outside-toplevel
  assert main(["build", "--corpus", str(corpus_dir), "--out", str(tmp_path / "idx"), "--methods",
               "knn", "--embedder", "hashing-64", "--tokenizer", str(tokenizer_dir),
               "--lengths", "2048", "--shards", "86"]) == 2
  assert "--shards (86) must be at most the 85 vectors of 'docs'" in capsys.readouterr().err
