"""The trainer: setup in named blocks, then a loop of (next batch, jitted step, hooks every n).

`train(config, source, model_config)` is what `python -m longjax.train` calls after gin has built
its arguments; tests and benchmarks call it directly with any `BatchSource`. Everything that can
be wrong with the configuration (mesh, batch, sequence, microbatches, loss chunk, the first
batch's shape) is checked before anything compiles.
"""

import dataclasses
import json
import logging
import math
import os
import queue
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from longjax import io
from longjax.models import Llama, LlamaConfig, load_hf, smollm2_checkpoint
from longjax.ops import RingOptions
from longjax.train import checkpoint as ckpt_lib
from longjax.train import remat as remat_lib
from longjax.train import sharding
from longjax.train.data import BatchSource, CheckedSource, complete, describe, zigzag_batch
from longjax.train.loss import chunk_size
from longjax.train.mesh import MeshConfig, make_mesh, maybe_initialize_distributed
from longjax.train.metrics import MetricWriter, Throughput, console_line, training_flops_per_token
from longjax.train.optimizer import OptimizerConfig, decay_mask, make_optimizer, make_schedule
from longjax.train.step import BATCH_DTYPES, FEATURES, StepConfig, TrainState, make_train_step

log = logging.getLogger("longjax.train")


class ConfigError(ValueError):
  """A configuration that cannot run, found before anything is compiled (the CLI prints it
  in one line; any other exception keeps its traceback)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training run. `task_feature_lengths['targets']` is the packed sequence length S."""
  model_dir: str                      # local path or gs://bucket/...
  train_steps: int
  batch_size: int
  task_feature_lengths: Mapping[str, int]
  seed: int = 0
  log_every: int = 10
  zigzag: bool = True                 # zigzag rows over `sequence` (else contiguous, imbalanced)
  init_from_hf: str | None = None     # HF checkpoint dir (or 'smollm2'); its config + hf_overrides
  hf_overrides: Mapping[str, object] = dataclasses.field(default_factory=dict)
  export_hf: bool = False             # write MODEL_DIR/hf with save_hf at the end
  mesh: MeshConfig = MeshConfig()
  optimizer: OptimizerConfig = OptimizerConfig()
  step: StepConfig = StepConfig()
  checkpoint: ckpt_lib.CheckpointConfig = ckpt_lib.CheckpointConfig()
  remat: remat_lib.RematConfig = remat_lib.RematConfig()

  def __post_init__(self):
    for name in ("train_steps", "batch_size", "log_every"):
      if getattr(self, name) < 1:
        raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
    if "targets" not in self.task_feature_lengths:
      raise ValueError("TASK_FEATURE_LENGTHS must have a 'targets' length (decoder-only LM), got "
                       f"{dict(self.task_feature_lengths)}")

  @property
  def seq_len(self) -> int:
    return int(self.task_feature_lengths["targets"])

  @property
  def ring(self) -> RingOptions:
    """The layout `_host_batches` gives S, which ring attention must be told."""
    return RingOptions(layout="zigzag" if self.zigzag else "contiguous")


@dataclasses.dataclass(frozen=True)
class Hook:
  """Runs `fn(step, state, metrics)` after every `every`-th step and after the last one.

  `metrics` holds the step's device scalars (loss, grad_norm, learning_rate, loss_tokens);
  `jax.device_get` them when needed. `train(..., hooks=[Hook(100, eval_fn)])` adds evals,
  profilers and the like without editing the trainer (Levanter's `add_hook(fn, every=n)`).
  """
  every: int
  fn: Callable[[int, TrainState, dict], None]

  def __post_init__(self):
    if self.every < 1:
      raise ValueError(f"Hook.every must be >= 1, got {self.every}")


def _check(config: TrainConfig, mesh: jax.sharding.Mesh) -> None:
  """Every shape constraint, with the value that breaks it, before anything is compiled."""
  seq_shards = mesh.shape["sequence"]
  sharding.check_batch_shape(config.batch_size, config.seq_len, mesh, config.zigzag)
  per_shard = config.batch_size // (mesh.shape["data"] * mesh.shape["fsdp"])
  if per_shard % config.step.microbatches:
    raise ValueError(f"the batch per data shard ({per_shard}) must be divisible by "
                     f"microbatches ({config.step.microbatches})")
  chunk_size(config.seq_len, seq_shards, config.step.loss_chunk)


def _host_batches(source: BatchSource, start: int, config: TrainConfig,
                  mesh: jax.sharding.Mesh) -> Iterator[tuple[dict, int]]:
  """Global batches (+ a CRC of this host's targets) from `start`, zigzagged when sharded."""
  shape = (config.batch_size, config.seq_len)
  rows, cols = sharding.host_slices(mesh, shape)
  n_rows = rows.stop - rows.start
  shards = mesh.shape["sequence"] if config.zigzag else 1
  for i, raw in enumerate(source.batches(start=start, rows=rows, global_batch=shape[0])):
    batch = complete(raw)
    got = batch["decoder_target_tokens"].shape
    if got != (n_rows, shape[1]):
      raise ConfigError(f"batch {start + i} from {type(source).__name__} has shape {got}; expected "
                       f"({n_rows}, {shape[1]}): this host's rows of BATCH_SIZE={shape[0]} and "
                       f"TASK_FEATURE_LENGTHS['targets']={shape[1]}")
    crc = zlib.crc32(np.ascontiguousarray(batch["decoder_target_tokens"]).tobytes())
    if not config.step.document_masking:  # global positions: the row is one causal sequence
      _check_one_segment(batch["decoder_segment_ids"], start + i)
      batch["decoder_positions"] = np.broadcast_to(
          np.arange(shape[1], dtype=np.int32), batch["decoder_positions"].shape)
    batch = {k: np.asarray(v, BATCH_DTYPES[k]) for k, v in zigzag_batch(batch, shards).items()}
    yield sharding.global_batch({k: v[:, cols] for k, v in batch.items()}, mesh, shape), crc


def _check_one_segment(segment_ids: np.ndarray, step: int) -> None:
  """Without document masks every row must hold one document: packed rows would attend across
  their documents (a Mixture with replay data packs several short documents into a row)."""
  packed = np.flatnonzero(np.max(segment_ids, axis=1) > 1)
  if len(packed):
    raise ValueError(
        f"batch {step}: rows {packed[:8].tolist()} pack {int(segment_ids[packed[0]].max())} "
        "documents, but StepConfig.document_masking=False would let them attend across each "
        "other; train on a Task whose rows are one sample each, or keep document masking on")


def _prefetch(it: Iterator, size: int = 2) -> Iterator:
  """Runs `it` in a background thread, `size` items ahead (host input overlaps device work).

  Closing the generator (the trainer returning, or an error) stops the thread and waits for it:
  a thread left inside JAX or TensorFlow while the interpreter shuts down can abort the process
  after a clean save (seen as exit -6 after a Ctrl-C under load).
  """
  q: queue.Queue = queue.Queue(size)
  done, stop = object(), threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def work():
    try:
      for item in it:
        if not put(item):
          return
      put(done)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised in the consumer)
      put(e)

  thread = threading.Thread(target=work, daemon=True)
  thread.start()
  try:
    while (item := q.get()) is not done:
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    stop.set()
    thread.join(timeout=60)


def hf_dir(config: TrainConfig) -> Path:
  """The HF checkpoint to start from; 'smollm2' names the packaged SmolLM2-135M conversion."""
  if config.init_from_hf == "smollm2":
    return smollm2_checkpoint()
  return Path(config.init_from_hf)


def _init_model(config: TrainConfig, model_config: LlamaConfig | None):
  """(model or its abstract twin, params initializer: shardings -> pure dict of arrays), under
  the first candidate remat policy (`TrainConfig.remat` is the one place that sets it)."""
  policy = config.remat.candidates[0]
  if config.init_from_hf:
    if "remat_policy" in config.hf_overrides:
      raise ConfigError("TrainConfig.hf_overrides sets remat_policy; set TrainConfig.remat "
                        "(gin: RematConfig.policy = 'auto' or a policy name) instead")
    overrides = {**config.hf_overrides, "remat_policy": policy}
    hf_config = Path(hf_dir(config)) / "config.json"
    if hf_config.is_file() and json.loads(hf_config.read_text()).get(
        "max_position_embeddings", 0) < config.seq_len:
      overrides.setdefault("max_position_embeddings", config.seq_len)  # the new context length
    model = load_hf(hf_dir(config), **overrides)
    pure = nnx.state(model, nnx.Param).to_pure_dict()
    return model, lambda shardings: jax.device_put(pure, shardings)
  if model_config is None:
    raise ConfigError("no model: bind a model preset (include gin/models/<name>.gin) or set "
                     "TrainConfig.init_from_hf")
  if model_config.remat_policy not in ("none", policy):
    raise ConfigError(f"the model config sets remat_policy={model_config.remat_policy!r}; set "
                      "TrainConfig.remat (gin: RematConfig.policy) instead")
  model_config = dataclasses.replace(model_config, remat_policy=policy)
  make = lambda: Llama(model_config, rngs=nnx.Rngs(config.seed))  # noqa: E731
  return nnx.eval_shape(make), lambda shardings: jax.jit(
      lambda: nnx.state(make(), nnx.Param).to_pure_dict(), out_shardings=shardings)()


@dataclasses.dataclass(frozen=True)
class Prepared:
  """Everything built before the first step: the mesh, shardings and the jitted functions."""
  mesh: jax.sharding.Mesh
  rules: sharding.LogicalRules
  model_config: LlamaConfig
  graphdef: nnx.GraphDef
  state_shardings: TrainState
  abstract_state: TrainState          # ShapeDtypeStructs with shardings (checkpoint restore)
  init_state: Callable[[], TrainState]
  train_step: Callable                # jitted (state, batch) -> (state, metrics), donates state
  flops_per_step: float               # model FLOPs, the MFU convention in metrics.py
  step_for: Callable[[str], Callable]  # remat policy -> the jitted step under it
  abstract_batch: dict[str, jax.ShapeDtypeStruct]  # the global batch, with its sharding
  remat: dict | None = None           # `fit_remat`'s choice (Choice.record), when it chose


def prepare(config: TrainConfig, model_config: LlamaConfig | None = None) -> Prepared:
  """Mesh, checks, model, optimizer and the jitted step; nothing is compiled or run yet."""
  maybe_initialize_distributed()
  try:
    mesh = make_mesh(config.mesh)
    _check(config, mesh)
  except ValueError as e:  # the mesh or a shape does not fit the devices / the batch
    raise ConfigError(str(e)) from e
  rules = sharding.logical_axis_rules(config.mesh.params_on_sequence)
  step_config = dataclasses.replace(config.step, sequence_shards=mesh.shape["sequence"],
                                    ring=config.ring)
  abstract_model, init_params = _init_model(config, model_config)
  graphdef, abs_params, *rest = nnx.split(abstract_model, nnx.Param, ...)
  if any(jax.tree.leaves(r) for r in rest):
    raise ValueError("the model has non-parameter state, which the trainer does not carry")
  param_sh = sharding.state_shardings(abs_params, mesh, rules)
  pure_abs = abs_params.to_pure_dict()
  tx = make_optimizer(config.optimizer, config.train_steps, decay_mask(abs_params))
  schedule = make_schedule(config.optimizer, config.train_steps)
  opt_abs = jax.eval_shape(tx.init, pure_abs)
  state_sh = TrainState(step=NamedSharding(mesh, P()), params=param_sh,
                        opt_state=sharding.mirror_shardings(opt_abs, pure_abs, param_sh, mesh))
  state_abs = ckpt_lib.abstract(TrainState(jax.ShapeDtypeStruct((), jnp.int32), pure_abs, opt_abs),
                                state_sh)
  new_state = jax.jit(lambda p: TrainState(jnp.zeros((), jnp.int32), p, tx.init(p)),
                      out_shardings=state_sh)
  batch_sh = {k: NamedSharding(mesh, sharding.batch_spec()) for k in FEATURES}

  def step_for(policy: str) -> Callable:
    gd = graphdef if policy == abstract_model.config.remat_policy else _graphdef(
        abstract_model.config, policy)
    return jax.jit(make_train_step(gd, nnx.State({}), tx, schedule, step_config),
                   in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, None),
                   donate_argnums=0)

  shape = (config.batch_size, config.seq_len)
  abstract_batch = {k: jax.ShapeDtypeStruct(shape, BATCH_DTYPES[k], sharding=batch_sh[k])
                    for k in FEATURES}
  tokens = config.batch_size * config.seq_len
  log.info("mesh %s on %d %s devices; model %.1fM parameters; %d steps of %d x %d tokens",
           dict(mesh.shape), jax.device_count(), jax.devices()[0].device_kind,
           sum(math.prod(x.shape) for x in jax.tree.leaves(pure_abs)) / 1e6,
           config.train_steps, config.batch_size, config.seq_len)
  return Prepared(
      mesh=mesh, rules=rules, model_config=abstract_model.config, graphdef=graphdef,
      state_shardings=state_sh, abstract_state=state_abs,
      init_state=lambda: new_state(init_params(param_sh)),
      train_step=step_for(abstract_model.config.remat_policy),
      flops_per_step=training_flops_per_token(abstract_model.config, config.seq_len) * tokens,
      step_for=step_for, abstract_batch=abstract_batch)


def _graphdef(model_config: LlamaConfig, policy: str) -> nnx.GraphDef:
  """The model's graph under another remat policy (same parameters; nothing allocated)."""
  config = dataclasses.replace(model_config, remat_policy=policy)
  return nnx.split(nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0))), nnx.Param, ...)[0]


def fit_remat(run: Prepared, config: remat_lib.RematConfig, *,
              strict: bool = True) -> tuple[Prepared, remat_lib.Choice | None]:
  """The run with the first remat candidate whose compiled step fits the device (`remat`
  module); a single named policy is kept as it is, uncompiled (None for the choice)."""
  if config.policy != "auto":
    return run, None
  limit = config.limit_gib or remat_lib.device_limit_gib()

  def compile_step(policy: str):
    with sharding.activate(run.mesh, run.rules):
      return run.step_for(policy).lower(run.abstract_state, run.abstract_batch).compile()

  choice = remat_lib.choose(config.candidates, compile_step, fit=config.fit, limit_gib=limit,
                            strict=strict)
  model_config = dataclasses.replace(run.model_config, remat_policy=choice.policy)
  return dataclasses.replace(run, train_step=choice.compiled, model_config=model_config,
                             graphdef=_graphdef(run.model_config, choice.policy),
                             remat=choice.record()), choice


def write_manifest(config: TrainConfig, run: Prepared, source: BatchSource, step: int,
                   position: int) -> None:
  """MODEL_DIR/manifest.json (process 0): the config, data source, mesh, model and code
  versions (git commit) of the run, and how far it got; `complete` once the last step is done."""
  if jax.process_index() != 0:
    return
  data = describe(source)
  io.write_manifest(
      config.model_dir, kind="train", config=io.to_json(dataclasses.asdict(config)),
      inputs={"source": data, "source_fingerprint": io.fingerprint_json(data)},
      counts={"parameters": sum(math.prod(x.shape) for x in
                                jax.tree.leaves(run.abstract_state.params)),
              "steps": step, "data_position": position},
      extra={"complete": step == config.train_steps, "mesh": dict(run.mesh.shape),
             "remat": run.remat or {"policy": run.model_config.remat_policy},
             "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
             "model": io.to_json(dataclasses.asdict(run.model_config))})


def train(config: TrainConfig, source: BatchSource, model_config: LlamaConfig | None = None, *,
          hooks: Sequence[Hook] = ()) -> dict[str, float]:
  """Trains (or resumes) per `config`; returns the last logged metrics. Exits early, after a
  checkpoint, on SIGTERM or a cluster preemption notice. `hooks` run after the trainer's own
  (metrics, then checkpoints), in order."""
  # ---------------------------------------------------------------- setup and state
  run, _ = fit_remat(prepare(config, model_config), config.remat)
  if isinstance(source, CheckedSource):
    source.check_run(seq_len=config.seq_len, vocab_size=run.model_config.vocab_size)
  model_dir = epath.Path(config.model_dir)  # local or gs://
  ckpt = ckpt_lib.Checkpointer(model_dir / "checkpoints", config.checkpoint)
  with sharding.activate(run.mesh, run.rules):
    restored = ckpt.restore_newest_good(run.abstract_state)
    if restored is not None:
      state, position = restored
      log.info("resumed from step %d (data position %d)", int(state.step), position)
    else:
      state, position = run.init_state(), 0
  start = int(state.step)
  write_manifest(config, run, source, start, position)

  # ---------------------------------------------------------------- data, metrics, hooks
  batches = _prefetch(_host_batches(source, position, config, run.mesh))
  throughput = Throughput(config.batch_size * config.seq_len, run.flops_per_step)
  writer = MetricWriter(model_dir, after_step=start)  # drops records of steps to be replayed
  last: dict[str, float] = {}
  crc = 0
  finite_at = start

  def log_hook(n: int, state: TrainState, metrics: dict) -> None:
    nonlocal finite_at
    scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not math.isfinite(scalars["loss"]):
      raise FloatingPointError(f"loss is {scalars['loss']} at step {n}: it became non-finite "
                               f"between steps {finite_at + 1} and {n}")
    finite_at = n
    scalars.update(throughput.measure(n), batch_crc=crc)
    writer.write(n, scalars)
    last.clear()
    last.update(scalars)
    if jax.process_index() == 0:
      eta = scalars.get("step_time_s")
      log.info(console_line(n, config.train_steps, scalars,
                            None if eta is None else (config.train_steps - n) * eta))

  hooks = [Hook(config.log_every, log_hook),
           Hook(config.checkpoint.every or config.train_steps,
                lambda n, state, _: ckpt.save(n, state, position,
                                              force=n == config.train_steps)),
           *hooks]

  # ---------------------------------------------------------------- loop
  stop, preempted = threading.Event(), False
  main_thread = threading.current_thread() is threading.main_thread()
  previous = _on_stop_signals(stop) if main_thread else {}
  try:
    with sharding.activate(run.mesh, run.rules):
      t0 = time.perf_counter()
      for n in range(start + 1, config.train_steps + 1):
        batch, crc = _next_batch(batches, n, source)
        state, metrics = run.train_step(state, batch)
        position += 1
        if n == start + 1:  # keep compilation out of the throughput numbers
          jax.block_until_ready(metrics)
          log.info("first step done (compilation included) after %.1f s", time.perf_counter() - t0)
          throughput.reset(n)
        for hook in hooks:
          if n % hook.every == 0 or n == config.train_steps:
            hook.fn(n, state, metrics)
        if ckpt.reached_preemption(n) if jax.process_count() > 1 else stop.is_set():
          preempted = True
          log.warning("preempted at step %d: saving a checkpoint and exiting", n)
          ckpt.save(n, state, position, force=True)
          break
    ckpt.wait()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    batches.close()  # stops and joins the input thread
    writer.close()
    _close_quietly(ckpt)  # its threads would keep a failed run from exiting
  if config.export_hf and not preempted:
    ckpt_lib.export_hf(nnx.merge(run.graphdef, state.params), model_dir / "hf",
                       tokenizer_from=hf_dir(config) if config.init_from_hf else None)
  write_manifest(config, run, source, int(state.step), position)
  return last


def _on_stop_signals(stop: threading.Event) -> dict[int, object]:
  """SIGTERM and SIGINT (Ctrl-C) set `stop`: the loop saves a checkpoint and returns. A second
  Ctrl-C abandons that (KeyboardInterrupt). Returns the previous handlers.

  With several processes SIGTERM stays with JAX's preemption notifier (installed by
  `jax.distributed.initialize`): it tells every process through the coordinator, and
  `reached_preemption` is then true on all of them at the same step. A Python SIGTERM handler
  would replace it and stop only the process that got the signal, while the others wait for it
  in the next step's collectives, forever. A Ctrl-C there becomes that SIGTERM.
  """
  several = jax.process_count() > 1

  def handle(signum, _):
    if stop.is_set() and signum == signal.SIGINT:
      raise KeyboardInterrupt
    stop.set()
    if several:
      os.kill(os.getpid(), signal.SIGTERM)
  signals = (signal.SIGINT,) if several else (signal.SIGTERM, signal.SIGINT)
  return {s: signal.signal(s, handle) for s in signals}


def _next_batch(batches: Iterator[tuple[dict, int]], step: int,
                source: BatchSource) -> tuple[dict, int]:
  """The batch of `step`, or a ValueError saying the data ran out (not a bare StopIteration)."""
  try:
    return next(batches)
  except StopIteration:
    raise ValueError(f"the data ran out at step {step}: {type(source).__name__} yielded no "
                     "batch for it (an empty or too short Task? see its manifest's "
                     "counts['budget'])") from None


def _close_quietly(ckpt: ckpt_lib.Checkpointer) -> None:
  """Closes `ckpt`; an error there (a save that failed) is logged, not raised over the error
  that may already be on its way out."""
  try:
    ckpt.close()
  except Exception as e:  # pylint: disable=broad-except
    log.error("checkpoint: closing failed: %s", ckpt_lib.error_summary(e))
