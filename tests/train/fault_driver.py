"""`python tests/train/fault_driver.py MODEL_DIR STEPS`: `train()` on synthetic batches, with faults.

The tiny model on 8 simulated CPU devices, a checkpoint every 2 steps. Environment knobs:
SLOW_BATCHES=<seconds> delays every batch (so a test can signal a run in progress);
READONLY_AT=<batch> makes MODEL_DIR/checkpoints read-only when that batch is read, so a later
asynchronous save fails. Prints DONE when `train` returns.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root: tests.helpers

import logging  # noqa: E402

from tests.helpers.training import small_config, tiny_model  # noqa: E402
from longjax.train.checkpoint import CheckpointConfig  # noqa: E402
from longjax.train.data import SyntheticSource  # noqa: E402
from longjax.train.mesh import MeshConfig  # noqa: E402
from longjax.train.trainer import train  # noqa: E402


class FaultySource(SyntheticSource):
  """Synthetic batches that may be slow or make the checkpoint directory read-only."""

  def __init__(self, model_dir: Path):
    super().__init__(259, 32)
    self.model_dir = model_dir

  def batches(self, *, start, rows, global_batch):
    for i, batch in enumerate(super().batches(start=start, rows=rows, global_batch=global_batch),
                              start):
      time.sleep(float(os.environ.get("SLOW_BATCHES", "0")))
      if i == int(os.environ.get("READONLY_AT", "-1")):
        os.chmod(self.model_dir / "checkpoints", 0o555)
      yield batch


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(message)s")
  model_dir, steps = Path(sys.argv[1]), int(sys.argv[2])
  config = small_config(model_dir, steps=steps, mesh=MeshConfig(data=8), seq_len=32,
                        checkpoint=CheckpointConfig(every=2))
  train(config, FaultySource(model_dir), tiny_model())
  print("DONE", flush=True)
