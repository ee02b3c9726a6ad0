"""The ring reads the token layout the trainer gave it, for both layouts (issue #16).

A run on mesh (data=2, sequence=4) must give the losses and gradient norms of a data-parallel
run (data=8) on the same batches and init, whether the trainer zigzags the rows
(`TrainConfig.zigzag=True`) or keeps them contiguous (`zigzag=False`). Data parallelism runs no
ring, so it is the independent reference. The ring runs also under
`jax.transfer_guard("disallow")`: in the training loop, batches and metrics cross between host
and device only explicitly (the guard is per thread, so the prefetch thread that zigzags host
batches is covered by tests/train/test_data.py instead).
"""

import jax
import pytest

from longjax.train.data import SyntheticSource
from longjax.train.mesh import MeshConfig
from longjax.train.trainer import train
from tests.helpers.training import logged, small_config, tiny_model

VOCAB, SEQ_LEN, STEPS = 259, 64, 3


def _run(model_dir, mesh: MeshConfig, **kw) -> dict[int, dict]:
  cfg = small_config(model_dir, steps=STEPS, mesh=mesh, seq_len=SEQ_LEN, batch_size=8, **kw)
  train(cfg, SyntheticSource(VOCAB, SEQ_LEN, seed=3), tiny_model(VOCAB))
  return logged(model_dir)


@pytest.fixture(scope="module")
def data_parallel(tmp_path_factory):
  return _run(tmp_path_factory.mktemp("dp"), MeshConfig(data=8))


@pytest.mark.parametrize("zigzag", [True, False], ids=["zigzag", "contiguous"])
def test_ring_matches_data_parallel_for_each_layout(tmp_path, data_parallel, zigzag):
  with jax.transfer_guard("disallow"):
    ring = _run(tmp_path, MeshConfig(data=2, sequence=4), zigzag=zigzag)
  for step in range(1, STEPS + 1):
    assert ring[step]["batch_crc"] == data_parallel[step]["batch_crc"]
    assert ring[step]["loss"] == pytest.approx(data_parallel[step]["loss"], rel=2e-5), step
    assert ring[step]["grad_norm"] == pytest.approx(data_parallel[step]["grad_norm"],
                                                    rel=1e-3), step
