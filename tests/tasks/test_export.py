"""`python -m longjax.tasks export`: rows equal SeqioBatches', provenance, resume, refusals, CLI."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import seqio
from array_record.python.array_record_module import ArrayRecordReader

import longjax.tasks
from longjax.tasks import export as export_lib
from longjax.tasks.input import SeqioBatches
from longjax.train.arrayrecord import ArrayRecordSource, ExportError, RowFormat
from longjax.train.data import complete

L = 128
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registered(index_dir):
  longjax.tasks.register(index_dir, methods=["standard"])
  return index_dir


def _export(out, name, *, rows, shards, seed=0, **kw):
  return export_lib.export(export_lib.ExportOptions(
      name=name, length=L, tokens=rows * L, out=out, seed=seed, shards=shards), **kw)


def _stored_rows(out, rows):
  """The export's rows in storage order (shard 0's, then shard 1's...), completed as the
  trainer completes them."""
  it = ArrayRecordSource(out, shuffle=False).batches(start=0, rows=slice(0, rows),
                                                      global_batch=rows)
  return complete(next(iter(it)))


def _seqio_rows(name, *, seed, shard, shards, rows):
  """The reference: the first `rows` rows SeqioBatches gives host `shard` of `shards`."""
  it = SeqioBatches(name, {"targets": L}, seed=seed).batches(
      start=0, rows=slice(shard, shard + 1), global_batch=shards)
  batches = [b for _, b in zip(range(rows), it)]
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_exported_rows_equal_seqio_batches(registered, tmp_path):
  """Mixture with replay (packed rows), two shards: shard i is SeqioBatches' host i of 2."""
  name, seed = "longjax_toy_standard_128_mix", 3
  manifest = _export(tmp_path / "mix", name, rows=40, shards=2, seed=seed)
  assert manifest["counts"]["rows"] == 40 and len(manifest["shards"]) == 2
  assert manifest["format"]["token_dtype"] == "uint16"  # vocabulary of 259 ids
  assert manifest["config"]["vocab_size"] == 259 and manifest["config"]["seed"] == seed
  assert list(manifest["inputs"]["indexes"]) == [str(registered)]
  got = _stored_rows(tmp_path / "mix", 40)
  want = [_seqio_rows(name, seed=seed, shard=i, shards=2, rows=20) for i in range(2)]
  assert set(got) == set(want[0])  # all five trainer features, token for token
  for k in got:
    np.testing.assert_array_equal(got[k], np.concatenate([w[k] for w in want]), err_msg=k)


def test_packed_rows_carry_their_examples_provenance(registered, tmp_path):
  """Replay documents are short, so rows pack several: each row lists its examples' provenance,
  in the order of the Task's own example stream."""
  name = "longjax_toy_replay_128"
  manifest = _export(tmp_path / "replay", name, rows=6, shards=1)
  fmt = RowFormat.from_manifest(manifest)
  records = ArrayRecordReader(str(tmp_path / "replay" / manifest["shards"][0]["file"]))
  per_row = [fmt.provenance(r) for r in records.read(list(range(6)))]
  assert max(len(p) for p in per_row) > 1  # packed
  stream = seqio.get_mixture_or_task(name).get_dataset(
      {"targets": L}, shuffle=True, seed=0, num_epochs=None).as_numpy_iterator()
  flat = [p for row in per_row for p in row]
  want = [json.loads(next(stream)["provenance"]) for _ in flat]
  assert flat == want
  assert manifest["counts"]["examples"] == len(flat)
  docs = {span[0] for p in flat for span in p["spans"]}
  assert manifest["counts"]["unique_documents"] == len(docs)


def test_interrupted_export_resumes_and_other_configs_are_refused(registered, tmp_path):
  name = "longjax_toy_standard_128"
  fresh = _export(tmp_path / "fresh", name, rows=9, shards=3)
  out = tmp_path / "out"
  calls = []
  real = export_lib.write_shard

  def crash_on_second(path, rows, fmt):
    calls.append(path.name)
    if len(calls) == 2:
      next(iter(rows))
      raise KeyboardInterrupt  # as Ctrl-C in the middle of shard 2
    real(path, rows, fmt)
  export_lib.write_shard = crash_on_second
  try:
    with pytest.raises(KeyboardInterrupt):
      _export(out, name, rows=9, shards=3)
  finally:
    export_lib.write_shard = real
  first = out / export_lib.shard_name(0, 3)
  assert sorted(p.name for p in out.iterdir()) == [export_lib.PLAN, first.name]  # no litter
  before = first.stat().st_mtime_ns

  written = []
  resumed = _export(out, name, rows=9, shards=3,
                    progress=lambda rows, **kw: written.append(kw["desc"]) or rows)
  assert written == [f"{name} shard 2/3", f"{name} shard 3/3"]  # shard 1 kept, not recomputed
  assert first.stat().st_mtime_ns == before
  assert resumed["shards"] == fresh["shards"] and resumed["counts"] == fresh["counts"]
  assert not (out / export_lib.PLAN).exists()

  snapshot = {p.name: p.read_bytes() for p in out.iterdir()}
  with pytest.raises(ExportError, match="different configuration"):
    _export(out, name, rows=9, shards=3, seed=1)
  assert {p.name: p.read_bytes() for p in out.iterdir()} == snapshot  # nothing overwritten


def test_token_id_zero_in_examples_is_refused_with_the_reason():
  """seqio's packing takes id 0 for padding (it drops a token from the example's end per 0 and
  puts the zeros in segment 0); the exporter refuses such rows instead of writing them."""
  import collections  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  example = np.array([5, 0, 7, 8], np.int32)
  ds = tf.data.Dataset.from_tensors({"targets": example})
  row = next(seqio.LMFeatureConverter(pack=True)(ds, {"targets": 6}).as_numpy_iterator())
  np.testing.assert_array_equal(row["decoder_target_tokens"], [5, 0, 7, 0, 0, 0])  # 8 is gone
  row = {"targets": row["decoder_target_tokens"], "segment_ids": row["decoder_segment_ids"]}
  with pytest.raises(ExportError, match="holds token id 0 1 times, which seqio.s packing takes"):
    export_lib._match_provenance(row, collections.deque([(example, "{}")]))  # pylint: disable=protected-access


def test_beam_direct_runner_writes_the_same_shards(registered, tmp_path):
  name = "longjax_toy_standard_128_mix"
  options = lambda out: export_lib.ExportOptions(name, length=L, tokens=10 * L,  # noqa: E731
                                                 out=out, shards=3)
  local = export_lib.export(options(tmp_path / "local"), progress=lambda rows, **_: rows)
  beam = export_lib.export_beam(options(tmp_path / "beam"), ["--runner=DirectRunner"])
  assert beam["shards"] == local["shards"] and beam["counts"] == local["counts"]


def test_cli_exports_and_rejects_bad_input(registered, tmp_path):
  env = {**os.environ, "LONGJAX_INDEX_DIRS": ""}
  base = [sys.executable, "-m", "longjax.tasks", "export", "--index-dir", str(registered),
          "--length", "128", "--out", str(tmp_path / "cli")]
  ok = subprocess.run(base + ["longjax_toy_standard_128", "--tokens", "1k"], cwd=REPO, env=env,
                      capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert json.loads(ok.stdout.splitlines()[-1])["rows"] == 8
  assert "shard 1/1" in ok.stderr  # progress
  bad = subprocess.run(base[:-1] + [str(tmp_path / "bad"), "longjax_toy_nope_128", "--tokens",
                                    "1k"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
  assert bad.returncode == 2 and "error: " in bad.stderr and "longjax_toy_nope_128" in bad.stderr


def test_provenance_documents_of_every_method():
  """The manifest's unique documents read every method's provenance layout (a Quest span leads
  with its keyword: the export once stopped on `int('modern welsh')`)."""
  assert export_lib.provenance_documents({"spans": [[4, 0, 10], [9, 0, 5]]}) == [4, 9]
  assert export_lib.provenance_documents({"spans": [["modern welsh", 7, 0, 3]]}) == [7]
  assert export_lib.provenance_documents({"doc_id": 3, "negatives": [[11, 12]]}) == [3]
  assert export_lib.provenance_documents("replay row") == []


def test_an_up_to_date_rebuild_keeps_the_exports(registered, corpus_file, byte_tokenizer_dir,
                                                 tmp_path):
  """Rebuilding an index whose stages are all up to date rewrites its manifest (time, commit),
  and building another subset of methods into it rewrites its method list: the exports made
  from it stay valid; a changed stage of the Task's own method does not, nor do changed
  neighbour lists for a method that reads them."""
  from longjax.io import read_manifest, write_manifest
  from longjax.synth import build
  name = "longjax_toy_standard_128"
  before = export_lib.index_fingerprints(name)
  time.sleep(1.1)  # the rewritten manifest gets another `created` second
  build.run_build(build.BuildOptions(
      corpus=str(corpus_file), out=registered, methods=("standard", "knn", "iclm", "nextlong"),
      embedder="hashing-64", tokenizer=str(byte_tokenizer_dir), lengths=(128,),
      config={"nextlong": {"chunk_size": 40, "chars_per_token": 1.0}}),
      progress=lambda x, **_: x, log_fn=lambda _: None)
  assert export_lib.index_fingerprints(name) == before
  longjax.tasks.register(registered, methods=["knn"])
  knn_before = export_lib.index_fingerprints("longjax_toy_knn_128")
  build.run_build(build.BuildOptions(
      corpus=str(corpus_file), out=registered, methods=("standard",),
      tokenizer=str(byte_tokenizer_dir), lengths=(128,)),
      progress=lambda x, **_: x, log_fn=lambda _: None)
  assert read_manifest(registered)["counts"]["methods_done"] == ["standard"]
  assert export_lib.index_fingerprints(name) == before
  m = read_manifest(registered)
  lists = {**m["counts"], "neighbour_lists": {"docs-k10": "other lists"}}
  write_manifest(registered, kind=m["kind"], config=m["config"], inputs=m["inputs"],
                 counts=lists, extra={"stages": m["stages"]})
  assert export_lib.index_fingerprints(name) == before  # standard reads no neighbour list
  assert export_lib.index_fingerprints("longjax_toy_knn_128") != knn_before
  changed = {**m["stages"], "standard": "another key"}
  write_manifest(registered, kind=m["kind"], config=m["config"], inputs=m["inputs"],
                 counts=m["counts"], extra={"stages": changed})
  assert export_lib.index_fingerprints(name) != before
  write_manifest(registered, kind=m["kind"], config=m["config"], inputs=m["inputs"],
                 counts=m["counts"], extra={"stages": m["stages"]})


def test_other_methods_lists_leave_a_method_fingerprint_alone(corpus_file, byte_tokenizer_dir,
                                                                tmp_path):
  """NExtLong built alone, then KNN (k_nn 5), then ICLM (k_nn 3, window 2) into the same index: each
  build adds a document neighbour list, and neither changes what an earlier method's exports
  depend on (the wiki16k index refused its finished NExtLong exports once KNN and ICLM were
  built into it); changing the list KNN reads does change KNN's."""
  from longjax.io import read_manifest, write_manifest
  from longjax.synth import build
  index = tmp_path / "idx"

  def add(method, **config):
    build.run_build(build.BuildOptions(
        corpus=str(corpus_file), out=index, methods=(method,), embedder="hashing-64",
        tokenizer=str(byte_tokenizer_dir), lengths=(128,),
        config={method: config}),
        progress=lambda x, **_: x, log_fn=lambda _: None)
    return read_manifest(index)["counts"]["neighbour_lists"]

  assert add("nextlong", chunk_size=40, chars_per_token=1.0) == {}
  nextlong = export_lib.index_fingerprint(index, ["nextlong"])
  assert list(add("knn", k_nn=5)) == ["docs-k6"]
  assert export_lib.index_fingerprint(index, ["nextlong"]) == nextlong
  knn = export_lib.index_fingerprint(index, ["knn"])
  assert sorted(add("iclm", k_nn=3, window=2)) == ["docs-k4", "docs-k6"]
  assert export_lib.index_fingerprint(index, ["nextlong"]) == nextlong
  assert export_lib.index_fingerprint(index, ["knn"]) == knn
  iclm = export_lib.index_fingerprint(index, ["iclm"])
  m = read_manifest(index)
  other = {**m["counts"], "neighbour_lists": {**m["counts"]["neighbour_lists"], "docs-k6": "x"}}
  write_manifest(index, kind=m["kind"], config=m["config"], inputs=m["inputs"], counts=other,
                 extra={"stages": m["stages"]})
  assert export_lib.index_fingerprint(index, ["knn"]) != knn
  assert export_lib.index_fingerprint(index, ["iclm"]) == iclm


def test_questshuffled_fingerprint_follows_the_quest_build_it_reads(corpus_file,
                                                                    byte_tokenizer_dir, tmp_path):
  """`questshuffled` reads Quest's build: asked for first, it is still built after Quest; a
  changed Quest build changes its exports' fingerprint and rebuilds it; Standard's stays."""
  from longjax.io import read_manifest
  from longjax.synth import build
  index = tmp_path / "idx"
  logs = []

  def run(**quest):
    logs.clear()
    build.run_build(build.BuildOptions(
        corpus=str(corpus_file), out=index, methods=("questshuffled", "quest", "standard"),
        tokenizer=str(byte_tokenizer_dir), lengths=(128,),
        config={"quest": {"predictor": "extractive", **quest}}),
        progress=lambda x, **_: x, log_fn=logs.append)

  run()
  assert read_manifest(index)["counts"]["methods_done"] == ["quest", "questshuffled", "standard"]
  shuffled = export_lib.index_fingerprint(index, ["questshuffled"])
  standard = export_lib.index_fingerprint(index, ["standard"])
  assert shuffled != export_lib.index_fingerprint(index, ["quest"])
  run()
  assert "questshuffled: up to date, skipped" in " ".join(logs)
  assert export_lib.index_fingerprint(index, ["questshuffled"]) == shuffled
  run(split_ratio=0.5)
  assert "questshuffled: building" in logs
  assert export_lib.index_fingerprint(index, ["questshuffled"]) != shuffled
  assert export_lib.index_fingerprint(index, ["standard"]) == standard
