"""The device mesh: axes `data`, `fsdp`, `sequence`, `tensor`, and multi-host start-up.

One mesh for training: batch over `data` x `fsdp`, the sequence over `sequence` (ring attention),
heads/MLP over `tensor`, weights FSDP-style over `fsdp` (and optionally `sequence`). Sizes come
from gin; one of them may be -1, meaning "all remaining devices". Axis types are Auto so that the
logical rules in `sharding.py` act through `with_sharding_constraint`.
"""

import dataclasses
import logging
import math
import os

import jax
import numpy as np

from longjax.ops.axes import BATCH_AXES, MESH_AXES as AXES


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Mesh axis sizes; at most one may be -1 (= the devices left over by the others)."""
  data: int = -1
  fsdp: int = 1
  sequence: int = 1
  tensor: int = 1
  # Shard weights over `sequence` as well as `fsdp` (long-context trainers do: the sequence
  # devices hold one copy of the model otherwise).
  params_on_sequence: bool = True

  def __post_init__(self):
    sizes = self.sizes()
    if sum(s == -1 for s in sizes) > 1:
      raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(AXES, sizes))}")
    for name, s in zip(AXES, sizes):
      if s == 0 or s < -1:
        raise ValueError(f"mesh axis {name} must be a positive size or -1, got {s}")

  def sizes(self) -> tuple[int, ...]:
    return (self.data, self.fsdp, self.sequence, self.tensor)

  def resolve(self, num_devices: int) -> dict[str, int]:
    """Returns the concrete axis sizes for `num_devices`, or a clear error."""
    sizes = list(self.sizes())
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
      if num_devices % fixed:
        raise ValueError(f"mesh {dict(zip(AXES, sizes))}: the fixed axes ({fixed} devices) do not "
                         f"divide the {num_devices} devices")
      sizes[sizes.index(-1)] = num_devices // fixed
    elif fixed != num_devices:
      raise ValueError(f"mesh {dict(zip(AXES, sizes))} needs {fixed} devices, but there are "
                       f"{num_devices}")
    return dict(zip(AXES, sizes))


_initialized = False


def maybe_initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` on multi-host jobs, once, before any device use.

  Explicit settings (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; what
  `longjax.train.launch.worker_env` gives a local or GPU worker) are honoured on every platform,
  CPU included; on CPU the processes then exchange collectives through gloo. Without them,
  LONGJAX_DISTRIBUTED=1 (set by experiments/tpu/launch.py on every TPU VM worker), SLURM and
  Open MPI launches let JAX's cluster detection find the coordinator; that detection is for
  accelerators, so a CPU run (the tests' default) without explicit settings stays one process.
  """
  global _initialized
  if _initialized:
    return
  explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
  cpu = os.environ.get("JAX_PLATFORMS", "").startswith("cpu")
  asked = os.environ.get("LONGJAX_DISTRIBUTED", "0") == "1"
  slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  mpi = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  if not (explicit or (not cpu and (asked or slurm or mpi))):
    return
  missing = [k for k in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if k not in os.environ]
  if explicit and missing:
    raise ValueError(f"JAX_COORDINATOR_ADDRESS is set, so {' and '.join(missing)} must be too "
                     "(every process needs the process count and its own id)")
  _initialized = True
  if explicit:
    if cpu and "JAX_CPU_COLLECTIVES_IMPLEMENTATION" not in os.environ:
      # The CPU client's default has no cross-process collectives: a sharded step would fail.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())


def make_mesh(config: MeshConfig, devices=None) -> jax.sharding.Mesh:
  """Builds the 4-axis mesh with Auto axis types (`jax.make_mesh` picks a topology-aware order)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = config.resolve(len(devices))
  sizes = tuple(shape[a] for a in AXES)
  auto = (jax.sharding.AxisType.Auto,) * len(AXES)
  if len(devices) == jax.device_count():
    return jax.make_mesh(sizes, AXES, axis_types=auto, devices=devices)
  return jax.sharding.Mesh(np.asarray(devices).reshape(sizes), AXES, axis_types=auto)


def batch_axes() -> tuple[str, ...]:
  """Mesh axes that split the batch (examples)."""
  return BATCH_AXES
