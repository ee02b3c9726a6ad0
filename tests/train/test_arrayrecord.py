"""The Grain source over exported rows: shuffling, host slices, O(1) resume, validation, no TF.

The export comes from the real exporter (`longjax.tasks.export`) over the small index of
tests/tasks/conftest.py; only the subprocess in the last test shows the trainer side imports
neither TensorFlow nor seqio.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from longjax.train import arrayrecord
from longjax.train.arrayrecord import ArrayRecordSource, ExportError
from longjax.train.mesh import MeshConfig
from longjax.train.trainer import train
from test_trainer import SigtermAt
from tests.helpers.multihost import assert_rows_split, host_rows, row_crcs, run_job
from tests.helpers.training import logged, small_config, tiny_model

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("tasks_fixtures", REPO / "tests/tasks/conftest.py")
tasks_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tasks_fixtures)
byte_tokenizer_dir, corpus_file, index_dir = (
    tasks_fixtures.byte_tokenizer_dir, tasks_fixtures.corpus_file, tasks_fixtures.index_dir)

TASK, L, ROWS = "longjax_toy_standard_128_mix", 128, 64


@pytest.fixture(scope="module")
def exported(index_dir, tmp_path_factory):  # pylint: disable=redefined-outer-name
  import longjax.tasks  # pylint: disable=import-outside-toplevel
  from longjax.tasks import export  # pylint: disable=import-outside-toplevel
  longjax.tasks.register(index_dir, methods=["standard"])
  out = tmp_path_factory.mktemp("export") / "std"
  export.export(export.ExportOptions(TASK, length=L, tokens=ROWS * L, out=out, shards=2),
                progress=lambda rows, **_: rows)
  return out


def _take(source, n, **kw):
  return [b for _, b in zip(range(n), source.batches(**kw))]


def _targets(batches):
  return np.concatenate([b["decoder_target_tokens"] for b in batches])


def test_global_shuffle_host_slices_and_resume(exported):
  stored = _targets(_take(ArrayRecordSource(exported, shuffle=False), 1, start=0,
                          rows=slice(0, ROWS), global_batch=ROWS))
  source = ArrayRecordSource(exported, seed=0)
  full = _take(source, 16, start=0, rows=slice(0, 8), global_batch=8)  # two epochs
  epochs = _targets(full[:8]), _targets(full[8:])
  for rows in epochs:  # each epoch is a permutation of all rows, in its own order
    assert sorted(map(bytes, rows)) == sorted(map(bytes, stored))
    assert not np.array_equal(rows, stored)
  assert not np.array_equal(*epochs)
  for host in range(4):  # 4 hosts of 2 rows, resuming at batch 5: slices of the same batches
    got = _take(source, 11, start=5, rows=slice(2 * host, 2 * host + 2), global_batch=8)
    for b, batch in enumerate(got, start=5):
      for k, v in batch.items():
        np.testing.assert_array_equal(v, full[b][k][2 * host:2 * host + 2], err_msg=k)
  other = _take(ArrayRecordSource(exported, seed=1), 8, start=0, rows=slice(0, 8), global_batch=8)
  assert not np.array_equal(_targets(other), epochs[0])


def _copy(exported, tmp_path):
  return Path(shutil.copytree(exported, tmp_path / "copy"))


def _snapshot(directory):
  return {p.name: p.read_bytes() for p in Path(directory).iterdir()}


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.unlink(), "shard missing"),
    (lambda f: f.write_bytes(f.read_bytes()[:-100]), "truncated since the export"),
    (lambda f: f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1])),
     "sha256 .* does not match"),
])
def test_damaged_shard_is_named(exported, tmp_path, damage, message):
  data = _copy(exported, tmp_path)
  shard = sorted(data.glob("*.arrayrecord"))[1]
  damage(shard)
  before = _snapshot(data)
  with pytest.raises(ExportError, match=f"{shard.name}.*{message}|{message}.*{shard.name}"):
    ArrayRecordSource(data)
  assert _snapshot(data) == before


def test_run_config_must_match_the_manifest(exported, tmp_path):
  source = ArrayRecordSource(exported, mixture_or_task_name=TASK)
  with pytest.raises(ExportError, match=r"manifest.json: rows of 128 tokens, but "
                                        r"TASK_FEATURE_LENGTHS\['targets'\] is 256"):
    source.check_run(seq_len=256, vocab_size=259)
  with pytest.raises(ExportError, match=r"has 259 ids, more than the model's vocab_size \(100\)"):
    source.check_run(seq_len=L, vocab_size=100)
  with pytest.raises(ExportError, match="exported from 'longjax_toy_standard_128_mix', but "
                                        "MIXTURE_OR_TASK_NAME is 'longjax_toy_knn_128'"):
    ArrayRecordSource(exported, mixture_or_task_name="longjax_toy_knn_128")
  with pytest.raises(ExportError, match="manifest.json not found"):
    ArrayRecordSource(tmp_path)
  before = _snapshot(exported)
  cfg = small_config(tmp_path / "run", steps=3, mesh=MeshConfig(data=8), seq_len=64)
  with pytest.raises(ExportError, match="rows of 128 tokens"):  # before any state or compile
    train(cfg, source, tiny_model(259))
  assert not (tmp_path / "run").exists() and _snapshot(exported) == before


class CountingRecords(arrayrecord.ArrayRecordDataSource):
  """Counts the records Grain reads."""
  read = 0

  def __getitem__(self, key):
    CountingRecords.read += 1
    return super().__getitem__(key)

  def __getitems__(self, keys):
    CountingRecords.read += len(keys)
    return super().__getitems__(keys)


def test_sigterm_restart_continues_exactly_without_rereading(exported, tmp_path, monkeypatch,
                                                             compile_cache):
  del compile_cache
  monkeypatch.setattr(arrayrecord, "ArrayRecordDataSource", CountingRecords)
  steps, batch, slack = 12, 8, 4  # slack: batches in the trainer's and Grain's prefetch buffers
  source = lambda: ArrayRecordSource(exported, seed=5, read_threads=1, prefetch=1)  # noqa: E731
  model = tiny_model(259)
  whole = small_config(tmp_path / "whole", steps=steps, mesh=MeshConfig(data=2, sequence=4),
                       seq_len=L, batch_size=batch)
  train(whole, source(), model)
  ref = logged(tmp_path / "whole")

  resumed = small_config(tmp_path / "resumed", steps=steps, mesh=MeshConfig(data=2, sequence=4),
                         seq_len=L, batch_size=batch)
  train(resumed, SigtermAt(source(), at=10), model)
  saved = sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir())
  assert len(saved) == 1 and slack < saved[0] < steps, saved
  CountingRecords.read = 0
  train(resumed, source(), model)
  # Batches saved+1..steps, plus what the prefetch buffers hold; replaying would read all 12.
  assert (steps - saved[0]) * batch <= CountingRecords.read <= (steps - saved[0] + slack) * batch
  assert CountingRecords.read < steps * batch
  got = logged(tmp_path / "resumed")
  assert sorted(got) == list(range(1, steps + 1))
  for step in range(1, steps + 1):
    assert got[step]["batch_crc"] == ref[step]["batch_crc"], step
    assert got[step]["loss"] == pytest.approx(ref[step]["loss"], rel=1e-6), step


def test_cli_training_from_export_needs_no_tensorflow_or_seqio(exported, tmp_path):
  """With both unimportable (tests/train/no_tf_driver.py), the gin run trains from the export.
  The only import attempt is clu's optional TensorBoard writer (metrics.py), which falls back to
  metrics.jsonl: nothing on the data path asks for TensorFlow or seqio."""
  args = ["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/pretrain.gin",
          "--gin_file=gin/mesh/cpu_data2_seq4.gin", "--gin_file=gin/data/arrayrecord.gin",
          f"--gin.DATA_DIR='{exported}'", f"--gin.MIXTURE_OR_TASK_NAME='{TASK}'",
          f"--gin.TASK_FEATURE_LENGTHS={{'targets': {L}}}", "--gin.TRAIN_STEPS=2",
          "--gin.WARMUP_STEPS=1", f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
          "--gin.StepConfig.loss_chunk=16", "--gin.TrainConfig.log_every=1",
          "--gin.model_config.overrides={'vocab_size': 259, 'dtype': 'float32'}"]
  done = subprocess.run([sys.executable, str(Path(__file__).with_name("no_tf_driver.py")), *args],
                        cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "LONGJAX_INDEX_DIRS": ""})
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.splitlines()[-1])
  assert report["rc"] == 0, done.stderr[-3000:]
  assert report["leaked"] == []
  assert all(name.startswith("tensorflow") and "/clu/metric_writers/" in where
             for name, where in report["attempts"]), report["attempts"]
  assert sorted(logged(tmp_path / "run")) == [1, 2]


@pytest.mark.slow
def test_two_hosts_read_disjoint_rows_of_the_global_batch(exported, tmp_path):
  """A 2-host job (2 x 4 CPU devices) on the export: each host reads only its rows, and together
  they are exactly the global batch that one process reads, none twice."""
  spec = run_job(tmp_path, "two", steps=3, source="arrayrecord", data_dir=str(exported))
  whole = _take(ArrayRecordSource(exported, seed=0), 3, start=0, rows=slice(0, 8),
                global_batch=8)
  assert_rows_split(host_rows(spec), {b: row_crcs(whole[b]["decoder_target_tokens"])
                                      for b in range(3)}, range(3))
