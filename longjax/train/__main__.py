"""`python -m longjax.train --gin_file=... [--gin_file=...] [--gin.NAME=VALUE ...]`: gin-configured
training, with T5X's conventions.

Gin files include each other (`gin/models/` bind a preset, `gin/runs/` a kind of run,
`gin/experiments/` put them together); command-line bindings come last. The macros
MIXTURE_OR_TASK_NAME, TASK_FEATURE_LENGTHS, TRAIN_STEPS and MODEL_DIR are required; the resolved
configuration is written to MODEL_DIR/config.gin before training starts. Gin lives only here:
the trainer core (`longjax.train.*`) imports neither gin nor TensorFlow, and SeqIO (TensorFlow) is
imported only if the configuration asks for a SeqIO source.

Example (CPU, 8 simulated devices):
  XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \\
  python -m longjax.train --gin_file=gin/experiments/tiny_synthetic.gin \\
      --gin.MODEL_DIR="'/tmp/tiny'" --gin.TRAIN_STEPS=20

The same job as 2 processes of 4 CPU devices each (a 2-host pod's layout, on this machine):
  python -m longjax.train --local-processes 2 --gin_file=gin/experiments/tiny_synthetic.gin \\
      --gin.MODEL_DIR="'/tmp/tiny2'"
"""

import argparse
import logging
import sys
from pathlib import Path

import gin
import jax
from etils import epath

from longjax import io
from longjax.models import LlamaConfig
from longjax.models.hf import CheckpointError
from longjax.train import launch
from longjax.train.checkpoint import CheckpointConfig
from longjax.train.remat import RematConfig
from longjax.train.data import SyntheticSource
from longjax.train.mesh import MeshConfig, maybe_initialize_distributed
from longjax.train.optimizer import OptimizerConfig
from longjax.train.step import StepConfig
from longjax.train.trainer import ConfigError, TrainConfig, train

REPO_ROOT = Path(__file__).resolve().parents[2]
REQUIRED_MACROS = ("MIXTURE_OR_TASK_NAME", "TASK_FEATURE_LENGTHS", "TRAIN_STEPS", "MODEL_DIR")


for _cls in (TrainConfig, MeshConfig, OptimizerConfig, StepConfig, CheckpointConfig, RematConfig):
  gin.external_configurable(_cls, module="longjax.train")
gin.external_configurable(SyntheticSource, "synthetic_batches", module="longjax.train")


@gin.configurable(module="longjax.train")
def model_config(preset: str, overrides: dict | None = None) -> LlamaConfig:
  """A model preset (`configs/models/<preset>.json`) with fields replaced by `overrides`."""
  return LlamaConfig.preset(preset, **(overrides or {}))


@gin.configurable(module="longjax.train")
def seqio_batches(mixture_or_task_name: str, task_feature_lengths: dict, *, split: str = "train",
                  shuffle: bool = True, seed: int = 0, pack: bool = True,
                  use_cached: bool = False):
  """A SeqIO Mixture/Task as a BatchSource; imports `longjax.tasks` (TensorFlow) only when used."""
  from longjax.tasks.input import SeqioBatches  # pylint: disable=import-outside-toplevel
  return SeqioBatches(mixture_or_task_name, task_feature_lengths, split=split, shuffle=shuffle,
                      seed=seed, pack=pack, use_cached=use_cached)


@gin.configurable(module="longjax.train")
def arrayrecord_batches(data_dir: str, *, mixture_or_task_name: str | None = None, seed: int = 0,
                        shuffle: bool = True, verify: bool = True):
  """Rows exported by `python -m longjax.tasks export`, read with Grain (TF-free), validated."""
  from longjax.train.arrayrecord import ArrayRecordSource  # pylint: disable=import-outside-toplevel
  return ArrayRecordSource(data_dir, mixture_or_task_name=mixture_or_task_name, seed=seed,
                           shuffle=shuffle, verify=verify)


@gin.configurable(module="longjax.train")
def run(config: TrainConfig, source, model=None) -> tuple:
  """The gin entry point: `run.config = @TrainConfig()`, `run.source = @...`, `run.model = ...`.

  Returns the three arguments of `train`, built (and so validated) by gin; `main` then trains.
  """
  return config, source, model


def _missing_macros() -> list[str]:
  missing = []
  for name in REQUIRED_MACROS:
    try:
      value = gin.query_parameter(f"{name}/macro.value")
    except ValueError:
      missing.append(name)
      continue
    if str(value) == "%gin.REQUIRED":
      missing.append(name)
  return missing


def parse(gin_files: list[str], bindings: list[str]) -> None:
  """Parses gin files then bindings; raises ConfigError naming the file/line or the macros."""
  gin.clear_config()
  gin.add_config_file_search_path(str(REPO_ROOT))
  for f in gin_files:
    if not Path(f).is_file() and not (REPO_ROOT / f).is_file():
      raise ConfigError(f"gin file not found: {f}")
  try:
    gin.parse_config_files_and_bindings(gin_files, bindings, finalize_config=False)
  except (ValueError, SyntaxError, IOError) as e:
    raise ConfigError(f"gin configuration error: {e}") from e
  missing = _missing_macros()
  if missing:
    raise ConfigError(
        f"missing required gin macro(s) {', '.join(missing)}: set them in a gin file or on the "
        "command line, e.g. " + " ".join(f"--gin.{m}=..." for m in missing))


def _args(argv: list[str]) -> tuple[list[str], list[str], int | None, int]:
  """(gin files, gin bindings, --local-processes, --local-devices)."""
  parser = argparse.ArgumentParser(
      prog="python -m longjax.train", description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gin_file", action="append", default=[], required=True,
                      help="gin file (repeatable; relative to the cwd or the repo root)")
  parser.add_argument("--gin_bindings", action="append", default=[],
                      help="a gin binding NAME=VALUE (repeatable); same as --gin.NAME=VALUE")
  parser.add_argument("--local-processes", type=int, default=None,
                      help="run as N processes on this machine's CPU, one multi-process job "
                           "(as the hosts of a pod)")
  parser.add_argument("--local-devices", type=int, default=8,
                      help="simulated CPU devices of the whole --local-processes job (default 8)")
  args, rest = parser.parse_known_args(argv)
  bindings = list(args.gin_bindings)
  for arg in rest:
    if not arg.startswith("--gin.") or "=" not in arg:
      parser.error(f"unrecognized argument {arg!r} (gin bindings are --gin.NAME=VALUE)")
    bindings.append(arg[len("--gin."):])
  if args.local_processes is not None:
    try:
      launch.split_devices(args.local_processes, args.local_devices)
    except ValueError as e:
      parser.error(str(e))
  return args.gin_file, bindings, args.local_processes, args.local_devices


def main(argv: list[str] | None = None) -> int:
  gin_files, bindings, processes, devices = _args(sys.argv[1:] if argv is None else argv)
  if processes is not None:
    return launch.run_local(processes, devices, [*(f"--gin_file={f}" for f in gin_files),
                                                 *(f"--gin.{b}" for b in bindings)])
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s",
                      datefmt="%H:%M:%S", force=True)
  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save chatter
  try:
    parse(gin_files, bindings)
    model_dir = epath.Path(gin.query_parameter("MODEL_DIR/macro.value"))
    maybe_initialize_distributed()  # before anything asks JAX about devices or processes
    if jax.process_index() == 0:
      model_dir.mkdir(parents=True, exist_ok=True)
      io.write_text(model_dir / "config.gin", gin.config_str())
    config, source, model = run()  # pylint: disable=no-value-for-parameter  (gin supplies them)
  except (ValueError, OSError) as e:  # gin errors, invalid config values; MODEL_DIR unwritable
    return _config_error(e)
  try:
    train(config, source, model)
  except (ConfigError, CheckpointError, OSError) as e:  # checks before compiling, checkpoints
    return _config_error(e)  # that do not restore, paths; any other error keeps its traceback
  return 0


def _config_error(e: Exception) -> int:
  logging.debug("configuration error", exc_info=True)
  print(f"error: {e}", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
