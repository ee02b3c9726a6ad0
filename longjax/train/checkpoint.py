"""The one checkpoint module: orbax saves/restores of the train state, HF import and export.

A checkpoint holds the TrainState (step, params, optimizer state) and the data position (how many
global batches were consumed), so that a restarted run continues with exactly the batches and
parameters an uninterrupted run would have. Saves are asynchronous (orbax writes in a background
thread while training goes on) and atomic (orbax finalizes a step directory only when complete).
"""

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from longjax.io import atomic_path
from longjax.models.hf import write_hf_files

log = logging.getLogger("longjax.train")


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """`every`: save period in steps (0 = only at the end and on preemption); `keep`: last N kept."""
  every: int = 1000
  keep: int = 3
  asynchronous: bool = True

  def __post_init__(self):
    if self.every < 0:
      raise ValueError(f"checkpoint every must be >= 0, got {self.every}")
    if self.keep < 1:
      raise ValueError(f"checkpoint keep must be >= 1, got {self.keep}")


class Checkpointer:
  """Saves every `config.every` steps into `directory/<step>`, keeping the newest `keep`."""

  def __init__(self, directory: str | epath.PathLike, config: CheckpointConfig):
    self.config = config
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(config.every, 1), max_to_keep=config.keep,
        enable_async_checkpointing=config.asynchronous, create=True)
    directory = epath.Path(directory)
    if "://" not in str(directory):
      directory = directory.absolute()
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_position: int, *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started."""
    if not force and (self.config.every == 0 or step % self.config.every):
      return False
    if step == self.latest_step():
      return False
    saved = self._manager.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      data=ocp.args.JsonSave({"position": int(data_position)})),
        force=force)
    if saved:
      log.info("checkpoint: saving step %d (data position %d)", step, data_position)
    return saved

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, int]:
    """Restores (state, data position) at `step` (default: latest) with `abstract_state`'s
    shapes, dtypes and shardings (a pytree of `jax.ShapeDtypeStruct`)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self._manager.directory}")
    out = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                      data=ocp.args.JsonRestore()))
    return out["state"], int(out["data"]["position"])

  def reached_preemption(self, step: int) -> bool:
    """True on every host once the cluster announced a preemption (multi-host TPU/GPU)."""
    return jax.process_count() > 1 and self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) carrying `shardings`."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "chat_template.jinja", "generation_config.json")


def export_hf(model: nnx.Module, path: str | epath.PathLike,
              tokenizer_from: str | Path | None = None) -> None:
  """Writes `model` (parameters gathered to every host) as an HF checkpoint from process 0,
  with the tokenizer files of `tokenizer_from` (the checkpoint training started from) copied in.

  A local `path` is replaced atomically (`longjax.io.atomic_path`); a remote one (gs://) is
  written locally first, then copied file by file.
  """
  if jax.process_count() > 1:
    params = nnx.state(model, nnx.Param)
    nnx.update(model, multihost_utils.process_allgather(params, tiled=True))
  if jax.process_index() != 0:
    return
  path = epath.Path(path)
  if "://" not in str(path):
    with atomic_path(path) as tmp:
      _write_export(model, tmp, tokenizer_from)
  else:
    with tempfile.TemporaryDirectory() as tmp:
      local = Path(tmp) / "hf"
      _write_export(model, local, tokenizer_from)
      path.mkdir(parents=True, exist_ok=True)
      for f in sorted(local.iterdir()):
        (path / f.name).write_bytes(f.read_bytes())
  log.info("exported HF checkpoint to %s", path)


def _write_export(model: nnx.Module, directory: Path, tokenizer_from: str | Path | None) -> None:
  """The HF files of `model` and the tokenizer files of `tokenizer_from`, into `directory`."""
  write_hf_files(model, directory)
  for name in TOKENIZER_FILES if tokenizer_from else ():
    if (Path(tokenizer_from) / name).is_file():
      shutil.copy(Path(tokenizer_from) / name, directory / name)
