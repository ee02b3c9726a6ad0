"""`python -m longjax.eval --model` on a damaged checkpoint: an `error:` line naming it, exit 2."""

import shutil

import numpy as np
from flax import nnx

from longjax.eval.__main__ import main
from longjax.models import Llama, LlamaConfig, save_hf
from longjax.models.hf import _write_safetensors, read_safetensors


def _model(path, smol_dir):
  save_hf(Llama(LlamaConfig.preset("tiny"), rngs=nnx.Rngs(0)), path)
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(smol_dir / name, path / name)
  return path / "model.safetensors"


def _fails(capsys, model, tmp_path, message):
  code = main(["--model", str(model), "--lengths", "1k", "--tasks", "none",
               "--loss-sequences", "0", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and "error: " in err and message in err and "Traceback" not in err, err


def test_missing_tensor(tmp_path, capsys, smol_dir):
  weights = _model(tmp_path / "m", smol_dir)
  tensors = {k: np.array(v) for k, v in read_safetensors(weights.parent).items()}
  del tensors["model.norm.weight"]
  _write_safetensors(weights, tensors)
  _fails(capsys, tmp_path / "m", tmp_path, "tensor model.norm.weight is missing")


def test_truncated_safetensors(tmp_path, capsys, smol_dir):
  weights = _model(tmp_path / "m", smol_dir)
  weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
  _fails(capsys, tmp_path / "m", tmp_path, f"{weights}: truncated or damaged")
