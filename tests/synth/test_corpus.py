"""Corpus store: every input format stored, skips with reasons, dedup, random access, and the
default corpus split."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longjax.bundled_texts import heldout_documents, reserved_bbc_ids
from longjax.documents import CorpusError, iter_raw_documents
from longjax.synth import default_corpus
from longjax.synth.corpus import DocumentStore, ingest_corpus, text_hash

ROWS = [{"id": "d1", "text": "first document", "title": "One"},
        {"id": 7, "text": "second document"},
        {"text": "third, no id"}]


def _check(store: DocumentStore):
  assert len(store) == 3
  assert [store.key(i) for i in range(2)] == ["d1", "7"]
  assert store.key(2) == text_hash("third, no id")[:16]  # content-hash id
  assert store.get("7").text == "second document"
  assert store.document(0).title == "One"
  assert store.text(2) == "third, no id"
  assert store.doc_ids().tolist() == [0, 1, 2]


def test_jsonl_gz(tmp_path):
  path = tmp_path / "c.jsonl.gz"
  with gzip.open(path, "wt") as f:
    f.write("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
  _check(ingest_corpus(path, tmp_path / "store"))


def test_parquet(tmp_path):
  pq.write_table(pa.Table.from_pylist([{**r, "id": str(r.get("id")) if "id" in r else None}
                                       for r in ROWS]), tmp_path / "c.parquet")
  _check(ingest_corpus(tmp_path / "c.parquet", tmp_path / "store"))


def test_hf_datasets_dump_directory(tmp_path):
  # What `datasets.Dataset.save_to_disk` writes: Arrow IPC stream shards + JSON metadata.
  d = tmp_path / "dump"
  d.mkdir()
  (d / "dataset_info.json").write_text("{}")
  (d / "state.json").write_text("{}")
  table = pa.Table.from_pylist([{"id": str(r.get("id", "")) or None, "text": r["text"]}
                                for r in ROWS])
  for i, part in enumerate([table.slice(0, 2), table.slice(2)]):
    with pa.ipc.new_stream(str(d / f"data-0000{i}-of-00002.arrow"), table.schema) as w:
      w.write_table(part)
  store = ingest_corpus(d, tmp_path / "store")
  assert [store.text(i) for i in range(3)] == [r["text"] for r in ROWS]


def test_tfds_parquet_shards_and_tfrecord_refusal(tmp_path):
  d = tmp_path / "tfds" / "1.0.0"
  d.mkdir(parents=True)
  (d / "dataset_info.json").write_text("{}")
  for i, part in enumerate([ROWS[:2], ROWS[2:]]):
    pq.write_table(pa.Table.from_pylist([{"text": r["text"]} for r in part]),
                   d / f"my_ds-train.parquet-0000{i}-of-00002")
  store = ingest_corpus(tmp_path / "tfds", tmp_path / "store")
  assert [store.text(i) for i in range(3)] == [r["text"] for r in ROWS]
  (d / "my_ds-test.tfrecord-00000-of-00001").write_bytes(b"\x00" * 16)
  with pytest.raises(CorpusError, match=r"tfrecord-00000-of-00001: TFDS .* need TensorFlow"):
    list(iter_raw_documents(tmp_path / "tfds"))


def test_text_directory(tmp_path):
  d = tmp_path / "texts"
  (d / "sub").mkdir(parents=True)
  (d / "a.txt").write_text("alpha")
  (d / "sub" / "b.md").write_text("beta")
  (d / ".hidden").write_text("never read")
  store = ingest_corpus(d, tmp_path / "store")
  assert [(store.key(i), store.text(i)) for i in range(len(store))] == [("a.txt", "alpha"),
                                                                         ("sub/b.md", "beta")]


def test_oversized_text_file_is_not_read_whole(tmp_path):
  d = tmp_path / "texts"
  d.mkdir()
  (d / "big.log").write_bytes(b"\xff" * 5000)  # would also fail UTF-8: size is checked first
  (d / "ok.txt").write_text("fine")
  raw = {r.key: r for r in iter_raw_documents(d, max_bytes=400)}
  assert len(raw["big.log"].text) == 401
  store = ingest_corpus(d, tmp_path / "s", max_chars=100)
  (skip,) = store.manifest["skipped"]
  assert (skip["key"], skip["reason"]) == ("big.log", "too_long")
  assert "400 bytes" in skip["detail"]


def test_every_document_accounted_for(tmp_path):
  path = tmp_path / "c.jsonl"
  lines = [json.dumps({"id": "ok", "text": "fine text"}).encode(),
           json.dumps({"id": "empty", "text": "  \n "}).encode(),
           json.dumps({"id": "null", "text": None}).encode(),
           b'{"id": "latin", "text": "caf\xe9"}',
           json.dumps({"id": "nul", "text": "bin\x00ary"}).encode(),
           json.dumps({"id": "dup", "text": "fine text"}).encode(),
           json.dumps({"id": "big", "text": "w" * 101}).encode(),
           json.dumps({"id": "ok", "text": "other text, same id"}).encode(),
           json.dumps({"id": "held", "text": "held out"}).encode()]
  path.write_bytes(b"\n".join(lines) + b"\n")
  store = ingest_corpus(path, tmp_path / "s", max_chars=100, heldout_hashes=[text_hash("held out")])
  m = store.manifest
  reasons = {s["key"] or s["source"].rsplit(":", 1)[1]: s["reason"] for s in m["skipped"]}
  assert reasons == {"empty": "empty", "null": "empty", "4": "not_utf8", "nul": "binary",
                     "dup": "duplicate", "big": "too_long", "ok": "duplicate_id",
                     "held": "heldout"}
  assert m["counts"]["read"] == len(lines) == m["counts"]["kept"] + len(m["skipped"])
  assert len(store) == 1 and store.text(0) == "fine text"
  assert all(s["source"].startswith(str(path)) for s in m["skipped"])
  with pytest.raises(AssertionError, match="also held-out"):
    store.assert_disjoint([text_hash("fine text")])


def test_resume_reuses_finished_store_and_rebuilds_on_change(tmp_path):
  path = tmp_path / "c.jsonl"
  path.write_text(json.dumps({"text": "a"}) + "\n")
  first = ingest_corpus(path, tmp_path / "s").manifest["created"]
  assert ingest_corpus(path, tmp_path / "s").manifest["created"] == first
  assert len(ingest_corpus(path, tmp_path / "s", max_chars=50)) == 1  # changed config rebuilds
  path.write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
  assert len(ingest_corpus(path, tmp_path / "s")) == 2


def test_no_store_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="not a finished corpus store"):
    DocumentStore(tmp_path)


def test_default_corpus_split(tmp_path):
  store = default_corpus.build_default_corpus(tmp_path / "corpus")
  m = store.manifest
  assert m["counts"]["read"] == 2225 == m["counts"]["kept"] + len(m["skipped"])
  reserved = set(reserved_bbc_ids())
  kept = {store.key(i) for i in range(len(store))}
  assert not kept & reserved
  held = default_corpus.heldout_hashes()
  assert not set(store.hashes) & held
  heldout = heldout_documents()
  keys = [d.key for d in heldout]
  assert sum(k.startswith("sotu/") for k in keys) == 249
  assert sum(k.startswith("shakespeare/") for k in keys) > 40
  assert max(len(d.text) for d in heldout) > 100_000  # genuinely long documents


def test_lone_surrogate_skips_that_record_only(tmp_path):
  """A JSON escape of half a UTF-16 pair decodes to text UTF-8 cannot store: skip it, say where."""
  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "good one"}\n{"text": "emoji cut \\ud83d here"}\n'
                  '{"text": "fine", "title": "\\udc00"}\n{"text": "good two"}\n')
  store = ingest_corpus(path, tmp_path / "store")
  assert [store.text(i) for i in range(len(store))] == ["good one", "good two"]
  skipped = store.manifest["skipped"]
  assert [(s["source"], s["reason"]) for s in skipped] == [(f"{path}:2", "not_utf8"),
                                                          (f"{path}:3", "not_utf8")]
  assert skipped[0]["detail"] == "text has an unpaired surrogate at character 10"
  assert skipped[1]["detail"].startswith("title has an unpaired surrogate")
