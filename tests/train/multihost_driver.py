"""`python tests/train/multihost_driver.py SPEC.json`: one process of a multi-process test job.

Started by `longjax.train.launch.start_local` (which sets the coordinator, process id and CPU
devices), or called in the test process as `run(spec)` for the one-process reference. It trains
the tiny float32 model with the real trainer and writes, per process, the CRC of every row this
process's source was asked for, by batch index: `SPEC.rows_out/rows_<process>.json`.

SPEC keys: model_dir, steps, mesh ({data, fsdp, sequence}), source ('synthetic', 'seqio' for the
Shakespeare byte Task, 'arrayrecord' with data_dir), rows_out; optional checkpoint_every,
loss_chunk, slow_batches (seconds of host delay per batch, so that a test can signal a running job).
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax  # noqa: E402

from longjax.train.checkpoint import CheckpointConfig  # noqa: E402
from longjax.train.data import SyntheticSource  # noqa: E402
from longjax.train.mesh import MeshConfig, maybe_initialize_distributed  # noqa: E402
from longjax.train.step import StepConfig  # noqa: E402
from longjax.train.trainer import train  # noqa: E402
from tests.helpers.multihost import row_crcs  # noqa: E402
from tests.helpers.training import small_config, tiny_model  # noqa: E402

VOCAB, SEQ_LEN, BATCH = 259, 128, 8


class RowRecorder:
  """Passes a source's batches through, keeping the CRC of each row's targets by batch index."""

  def __init__(self, source, delay: float = 0.0):
    self.source, self.delay, self.rows = source, delay, {}

  def batches(self, *, start, rows, global_batch):
    for i, batch in enumerate(self.source.batches(start=start, rows=rows,
                                                  global_batch=global_batch)):
      self.rows[start + i] = row_crcs(batch["decoder_target_tokens"])
      time.sleep(self.delay)
      yield batch


def make_source(spec: dict):
  """The source that `spec['source']` names, built the way the CLI's gin functions build it."""
  if spec["source"] == "synthetic":
    return SyntheticSource(VOCAB, SEQ_LEN, seed=0)
  if spec["source"] == "seqio":
    from longjax.tasks.input import SeqioBatches  # pylint: disable=import-outside-toplevel
    from tests.helpers import shakespeare_task  # pylint: disable=import-outside-toplevel
    return SeqioBatches(shakespeare_task.TASK, {"targets": SEQ_LEN}, seed=0)
  from longjax.train.arrayrecord import ArrayRecordSource  # pylint: disable=import-outside-toplevel
  return ArrayRecordSource(spec["data_dir"], seed=0)


def run(spec: dict) -> RowRecorder:
  maybe_initialize_distributed()
  source = RowRecorder(make_source(spec), spec.get("slow_batches", 0.0))
  config = small_config(spec["model_dir"], steps=spec["steps"], mesh=MeshConfig(**spec["mesh"]),
                        seq_len=SEQ_LEN, batch_size=BATCH,
                        checkpoint=CheckpointConfig(every=spec.get("checkpoint_every", 0)),
                        step=StepConfig(loss_chunk=spec.get("loss_chunk", 16)))
  train(config, source, tiny_model(VOCAB))
  out = Path(spec["rows_out"])
  out.mkdir(parents=True, exist_ok=True)
  (out / f"rows_{jax.process_index()}.json").write_text(json.dumps(source.rows))
  return source


if __name__ == "__main__":
  run(json.loads(Path(sys.argv[1]).read_text()))
