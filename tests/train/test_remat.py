"""The remat ladder: the first policy whose compiled step fits the memory limit runs, the run
learns exactly what a pinned policy learns, and a limit nothing fits is refused by name."""

import json
from pathlib import Path

import pytest

from longjax.train import remat
from longjax.train.data import SyntheticSource
from longjax.train.mesh import MeshConfig
from longjax.train.remat import RematConfig
from longjax.train.trainer import ConfigError, TrainConfig, fit_remat, prepare, train
from tests.helpers.training import logged, small_config, tiny_model

LADDER = ("none", "save_context", "full")
SEQ = 256


def _config(tmp_path, name: str, policy: str = "auto", limit: float | None = None,
            ladder: tuple[str, ...] = LADDER) -> TrainConfig:
  return small_config(tmp_path / name, steps=4, mesh=MeshConfig(data=-1), seq_len=SEQ,
                      batch_size=8, remat=RematConfig(policy=policy, ladder=ladder,
                                                      limit_gib=limit))


@pytest.fixture(scope="module")
def program_gib(tmp_path_factory):
  """Every rung's compiled program memory on this backend (nothing fits a 1-byte limit; the
  non-strict choice compiles them all and keeps what each needed)."""
  config = _config(tmp_path_factory.mktemp("sizes"), "sizes", limit=2.0 ** -30)
  _, choice = fit_remat(prepare(config, tiny_model()), config.remat, strict=False)
  return choice.tried


def test_less_saved_needs_less_memory(program_gib):
  assert program_gib["none"] > program_gib["save_context"] > program_gib["full"]



def test_the_first_rung_that_fits_runs_and_learns_what_a_pinned_policy_learns(
    tmp_path, program_gib, compile_cache):
  """A limit between save_context's and none's program: `auto` skips none, runs save_context,
  says so in the manifest, and its losses equal those of a run pinned to save_context."""
  limit = (program_gib["none"] + program_gib["save_context"]) / 2 / 0.9
  source = SyntheticSource(259, SEQ)
  auto = _config(tmp_path, "auto", limit=limit)
  train(auto, source, tiny_model())
  manifest = json.loads((Path(auto.model_dir) / "manifest.json").read_text())
  assert manifest["remat"]["policy"] == "save_context"
  assert set(manifest["remat"]["program_gib"]) == {"none", "save_context"}
  pinned = _config(tmp_path, "pinned", policy="save_context")
  train(pinned, source, tiny_model())
  assert json.loads((Path(pinned.model_dir) / "manifest.json").read_text())["remat"] == {
      "policy": "save_context"}
  got, want = logged(auto.model_dir), logged(pinned.model_dir)
  for step in (1, 2, 3, 4):
    assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-6)
    assert got[step]["grad_norm"] == pytest.approx(want[step]["grad_norm"], rel=1e-5)


def test_a_limit_nothing_fits_names_every_rung(tmp_path, program_gib):
  config = _config(tmp_path, "none_fits", limit=program_gib["full"] / 2,
                   ladder=("save_context", "full"))
  with pytest.raises(MemoryError, match=r"no remat policy fits .*'save_context': .*'full': "):
    fit_remat(prepare(config, tiny_model()), config.remat)


def test_a_rung_that_does_not_compile_is_skipped():
  def compile_step(policy):
    if policy == "save_context":
      raise RuntimeError("no pinned host memory here")
    return _Compiled(2.0 if policy == "none" else 0.5)

  choice = remat.choose(LADDER, compile_step, fit=1.0, limit_gib=1.0)
  assert choice.policy == "full"
  assert choice.tried == {"none": 2.0, "save_context": "RuntimeError: no pinned host memory here",
                          "full": 0.5}


class _Compiled:
  """An executable's memory analysis, reduced to what `program_gib` reads."""

  def __init__(self, gib: float):
    self.gib = gib

  def memory_analysis(self):
    n = int(self.gib * 2**30)
    return type("M", (), dict(temp_size_in_bytes=n, argument_size_in_bytes=0,
                              output_size_in_bytes=0, alias_size_in_bytes=0))()


def test_remat_is_set_in_one_place(tmp_path):
  config = _config(tmp_path, "twice", policy="full")
  with pytest.raises(ConfigError, match=r"model config sets remat_policy='save_context'; set "
                                        r"TrainConfig.remat"):
    prepare(config, tiny_model(remat_policy="save_context"))
  with pytest.raises(ValueError, match=r"RematConfig.policy must be 'auto' or one of"):
    RematConfig(policy="some")
