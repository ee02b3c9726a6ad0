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
import time
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.experimental import multihost_utils

from longjax.io import atomic_path
from longjax.models.hf import CheckpointError, write_hf_files

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


TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step directory still being written


class Checkpointer:
  """Saves every `config.every` steps into `directory/<step>`, keeping the newest `keep`.

  A local `directory` must be writable: that is checked before training and before each save,
  because orbax makes the step directory in a background thread, and when that fails its other
  save threads wait for it forever (the process never exits). Unfinished step directories (a
  save cut short by a kill) are removed, with a warning.
  """

  def __init__(self, directory: str | epath.PathLike, config: CheckpointConfig):
    self.config = config
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(config.every, 1), max_to_keep=config.keep,
        enable_async_checkpointing=config.asynchronous, create=True,
        cleanup_tmp_directories=True)
    directory = epath.Path(directory)
    self._local = None if "://" in str(directory) else Path(directory).absolute()
    if self._local:
      directory = epath.Path(self._local)
      self._check_writable()
    if directory.is_dir():
      for tmp in sorted(p.name for p in directory.iterdir() if TMP_SUFFIX in p.name):
        log.warning("checkpoint: removing %s/%s, a save that never finished", directory, tmp)
    self._manager = ocp.CheckpointManager(directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_position: int, *, force: bool = False) -> bool:
    """Saves if `step` is due (or `force`); returns whether a save started."""
    if not force and (self.config.every == 0 or step % self.config.every):
      return False
    if step == self.latest_step():
      return False
    self._check_writable()
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

  def restore_newest_good(self, abstract_state: Any) -> tuple[Any, int] | None:
    """Restores the newest step that restores (None without any), moving newer damaged steps
    aside to `<directory>.damaged/` with a warning that names each one and why it failed.

    A step that fails while an older one restores is damaged (a truncated or missing file);
    when every step fails the cause is more likely the configuration (a changed model), so
    then nothing is moved and the error lists every step's failure.
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except  (orbax/TensorStore raise many kinds)
        failures.append((step, error_summary(e)))
        log.warning("checkpoint: step %d does not restore (%s); trying an older step", step,
                    failures[-1][1])
        continue
      for bad, reason in failures:
        self._set_aside(bad, reason)
      if failures:
        self._manager.reload()
      return restored
    if failures:
      raise CheckpointError(f"no checkpoint under {self._manager.directory} restores: " + "; ".join(
          f"step {s}: {r}" for s, r in failures))
    return None

  def _set_aside(self, step: int, reason: str) -> None:
    """Moves step `step` out of the manager's directory (it could not be saved again there)."""
    directory = epath.Path(self._manager.directory)
    target = directory.parent / f"{directory.name}.damaged" / f"{step}-{int(time.time())}"
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      (directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"longjax_checkpoint_set_aside_{step}")
    log.warning("checkpoint: skipped step %d (%s); moved it to %s", step, reason, target)

  def _check_writable(self) -> None:
    """Raises an OSError naming the (local) directory unless process 0 can create a file in it."""
    if not self._local or jax.process_index() != 0:
      return
    try:
      self._local.mkdir(parents=True, exist_ok=True)
      tempfile.TemporaryFile(dir=self._local).close()
    except OSError as e:
      raise OSError(e.errno, f"checkpoint directory is not writable ({e.strerror})",
                    str(self._local)) from None

  def reached_preemption(self, step: int) -> bool:
    """True on every host once the cluster announced a preemption (multi-host TPU/GPU)."""
    return jax.process_count() > 1 and self._manager.reached_preemption(step)

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def error_summary(error: Exception, limit: int = 300) -> str:
  """`TypeName: first line of the message`, cut to `limit` characters (TensorStore errors run to
  a hundred lines)."""
  text = str(error).strip().splitlines()
  line = f"{type(error).__name__}: {text[0] if text else ''}"
  return line if len(line) <= limit else line[:limit] + "..."


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
