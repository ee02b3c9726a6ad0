"""The gin entry point: every gin file parses, and bad configurations fail before compiling."""

from pathlib import Path

import gin
import numpy as np
import jax
import pytest

from longjax.models import LlamaConfig
from longjax.train import __main__ as cli
from longjax.train.data import SyntheticSource
from longjax.train.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[2]
GIN_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "gin").rglob("*.gin"))
FILL = ["MIXTURE_OR_TASK_NAME='x'", "TASK_FEATURE_LENGTHS={'targets': 256}", "TRAIN_STEPS=2",
        "MODEL_DIR='/tmp/unused'", "HF_CHECKPOINT='/tmp/hf'", "ROPE_THETA=1e6"]


@pytest.fixture(autouse=True)
def _no_compile(monkeypatch):
  """Configuration errors must surface before anything is jitted."""
  def boom(*a, **k):
    raise AssertionError("jax.jit was called: the error came after compilation started")
  monkeypatch.setattr(jax, "jit", boom)
  yield
  gin.clear_config()


@pytest.mark.parametrize("gin_file", GIN_FILES)
def test_every_gin_file_parses(gin_file):
  base = [] if gin_file.startswith(("gin/runs", "gin/experiments")) else ["gin/runs/pretrain.gin"]
  cli.parse(base + [gin_file], FILL)
  if gin_file.startswith("gin/models/"):
    LlamaConfig.preset(gin.query_parameter("model_config.preset"))


def test_experiment_builds_its_arguments():
  cli.parse(["gin/experiments/tiny_synthetic.gin"], ["MODEL_DIR='/tmp/unused'"])
  config, source, model = cli.run()  # pylint: disable=no-value-for-parameter
  seen = {"config": config, "source": source, "model": model}
  assert isinstance(seen["config"], TrainConfig) and seen["config"].seq_len == 256
  assert seen["config"].mesh.sequence == 4 and seen["config"].optimizer.b2 == 0.95
  assert isinstance(seen["source"], SyntheticSource)
  assert seen["model"].vocab_size == 256 and seen["model"].hidden_size == 64


def _main(capsys, *args) -> str:
  code = cli.main(["--gin_file=gin/experiments/tiny_synthetic.gin", *args])
  err = capsys.readouterr().err
  assert code == 2, err
  return err


def test_typo_in_a_binding(capsys, tmp_path):
  err = _main(capsys, f"--gin.MODEL_DIR='{tmp_path}'", "--gin.StepConfig.loss_chunck=8")
  assert "loss_chunck" in err and "StepConfig" in err


def test_typo_in_a_gin_file(capsys, tmp_path):
  bad = tmp_path / "bad.gin"
  bad.write_text("include 'gin/experiments/tiny_synthetic.gin'\n\nMeshConfig.sequense = 2\n")
  code = cli.main([f"--gin_file={bad}", f"--gin.MODEL_DIR='{tmp_path}'"])
  err = capsys.readouterr().err
  assert code == 2 and "sequense" in err and "bad.gin" in err and "line 3" in err


def test_missing_required_macro(capsys):
  code = cli.main(["--gin_file=gin/models/tiny.gin", "--gin_file=gin/runs/pretrain.gin",
                   "--gin.TRAIN_STEPS=3"])
  err = capsys.readouterr().err
  assert code == 2
  assert ("missing required gin macro(s) MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, MODEL_DIR"
          in err)


def test_batch_not_divisible_by_the_mesh(capsys, tmp_path):
  err = _main(capsys, f"--gin.MODEL_DIR='{tmp_path}'", "--gin.BATCH_SIZE=3")
  assert "global batch size (3) must be divisible by data*fsdp (2*1 = 2)" in err


def test_sequence_not_divisible_by_the_ring(capsys, tmp_path):
  err = _main(capsys, f"--gin.MODEL_DIR='{tmp_path}'",
              "--gin.TASK_FEATURE_LENGTHS={'targets': 100}", "--gin.synthetic_batches.seq_len=100")
  assert "sequence length (100) must be divisible by 2*sequence (zigzag) (8)" in err


def test_errors_after_configuration_keep_their_traceback(monkeypatch, tmp_path, capsys):
  """Only configuration errors become a one-line message; a bug inside training (here a
  ValueError, as a shape bug would raise) propagates with its traceback."""
  def shape_bug(config, source, model):
    raise ValueError("operand shapes (8, 3) and (4,) do not broadcast")
  monkeypatch.setattr(cli, "train", shape_bug)
  with pytest.raises(ValueError, match="do not broadcast"):
    cli.main(["--gin_file=gin/experiments/tiny_synthetic.gin", f"--gin.MODEL_DIR='{tmp_path}'"])

  def config_error(config, source, model):
    raise cli.ConfigError("mesh needs 16 devices, but there are 8")
  monkeypatch.setattr(cli, "train", config_error)
  code = cli.main(["--gin_file=gin/experiments/tiny_synthetic.gin", f"--gin.MODEL_DIR='{tmp_path}'"])
  assert code == 2 and "error: mesh needs 16 devices" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_model_dir_in_the_way_of_a_file(capsys, tmp_path, where):
  """MODEL_DIR that cannot be a directory: an `error:` line naming it, exit 2 (no traceback)."""
  (tmp_path / "f").write_text("")
  model_dir = tmp_path / "f" if where == "a file" else tmp_path / "f" / "run"
  err = _main(capsys, f"--gin.MODEL_DIR='{model_dir}'")
  assert err.startswith("error: ") and str(tmp_path / "f") in err


def test_init_from_hf_with_a_missing_tensor(capsys, tmp_path):
  from flax import nnx  # pylint: disable=import-outside-toplevel
  from longjax.models import Llama, save_hf  # pylint: disable=import-outside-toplevel
  from longjax.models.hf import _write_safetensors, read_safetensors  # pylint: disable=import-outside-toplevel
  hf = save_hf(Llama(LlamaConfig.preset("tiny", vocab_size=512), rngs=nnx.Rngs(0)),
               tmp_path / "hf")
  tensors = {k: np.array(v) for k, v in read_safetensors(hf).items()}  # not the mmap we rewrite
  del tensors["model.norm.weight"]
  _write_safetensors(hf / "model.safetensors", tensors)
  err = _main(capsys, f"--gin.MODEL_DIR='{tmp_path / 'run'}'",
              f"--gin.TrainConfig.init_from_hf='{hf}'")
  assert "error: " in err and "tensor model.norm.weight is missing" in err
