"""Rematerialisation chosen by memory: the first policy of a ladder whose compiled step fits.

Keeping more of the forward pass for the backward pass is faster and costs memory, and how much
a step can keep depends on the model, the sequence length, the mesh and the device. With
`RematConfig.policy = 'auto'` the trainer compiles its step from abstract shapes under each policy
of `ladder`, most kept first, and runs the first whose program fits `fit` of the device's memory
(the rest is left to fragmentation and to library workspaces outside XLA's pool, such as NCCL's
and cuDNN's). A named policy is used as it is, compiled at the first step as usual. The choice and
every candidate's program memory are logged and written to the run's manifest.
"""

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from longjax.models.llama import REMAT_POLICIES

log = logging.getLogger("longjax.train")

# From the most kept (fastest, most memory) to the least, each keeping a subset of the one
# before: no checkpointing at all; matmul outputs and the attention output; only the attention
# output and its log-sum-exp; those offloaded to host memory; nothing (every activation
# recomputed).
LADDER = ("none", "save_dots", "save_context", "offload_context", "full")


@dataclasses.dataclass(frozen=True)
class RematConfig:
  """How the train step's activations are rematerialised (gin: `RematConfig.policy = ...`).

  policy: 'auto' (the first of `ladder` that fits) or one of `models.llama.REMAT_POLICIES`.
  ladder: the candidates of 'auto', in order of preference.
  fit: the share of the device's memory a step's program may plan for.
  limit_gib: the memory to fit in, per device; None: the device's own limit (`bytes_limit`;
    unknown on CPU, where the first candidate runs).
  """
  policy: str = "auto"
  ladder: tuple[str, ...] = LADDER
  fit: float = 0.9
  limit_gib: float | None = None

  def __post_init__(self):
    if self.policy != "auto" and self.policy not in REMAT_POLICIES:
      raise ValueError(f"RematConfig.policy must be 'auto' or one of {REMAT_POLICIES}, got "
                       f"{self.policy!r}")
    unknown = [p for p in self.ladder if p not in REMAT_POLICIES]
    if not self.ladder or unknown:
      raise ValueError(f"RematConfig.ladder must name policies of {REMAT_POLICIES}, got "
                       f"{self.ladder!r}")
    if not 0 < self.fit <= 1:
      raise ValueError(f"RematConfig.fit must be in (0, 1], got {self.fit}")
    if self.limit_gib is not None and self.limit_gib <= 0:
      raise ValueError(f"RematConfig.limit_gib must be > 0, got {self.limit_gib}")

  @property
  def candidates(self) -> tuple[str, ...]:
    return tuple(self.ladder) if self.policy == "auto" else (self.policy,)


@dataclasses.dataclass(frozen=True)
class Choice:
  """What `choose` picked: the policy, its compiled step, and what every candidate needed."""
  policy: str
  compiled: Any
  compile_s: float
  tried: dict[str, float | str | None]   # policy -> program GiB, None if unknown, or the error
  limit_gib: float | None

  def record(self) -> dict[str, Any]:
    """The JSON-ready part (no executable) for logs and manifests."""
    return {"policy": self.policy, "program_gib": self.tried, "limit_gib": self.limit_gib,
            "compile_s": round(self.compile_s, 1)}


def program_gib(compiled) -> float | None:
  """The memory an executable plans for per device: temporaries, arguments and outputs, less
  the outputs that reuse (donated) argument buffers."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  return (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes) / 2**30


def device_limit_gib() -> float | None:
  """This process's first device's memory limit, None where the backend does not say (CPU)."""
  limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
  return limit / 2**30 if limit else None


def choose(candidates: Sequence[str], compile_step: Callable[[str], Any], *, fit: float,
           limit_gib: float | None, strict: bool = True) -> Choice:
  """Compiles the step under each candidate in turn; returns the first that fits.

  A candidate that fails to compile (e.g. host offloading on a backend without it) is recorded
  with its error and skipped. `strict=False` returns the last compiled candidate when none fits
  (a benchmark that only wants the program's memory); otherwise MemoryError names every
  candidate's need against the limit.
  """
  tried: dict[str, float | str | None] = {}
  last = None
  for policy in candidates:
    t0 = time.perf_counter()
    try:
      compiled = compile_step(policy)
    except Exception as e:  # pylint: disable=broad-except  (recorded, and raised if none fits)
      tried[policy] = f"{type(e).__name__}: {str(e)[:300]}"
      log.warning("remat %r does not compile: %s", policy, tried[policy])
      continue
    seconds = time.perf_counter() - t0
    gib = tried[policy] = program_gib(compiled)
    fits = limit_gib is None or gib is None or gib <= fit * limit_gib
    log.info("remat %r: program %s GiB of %s GiB (fit %.2f), compiled in %.1f s: %s", policy,
             "?" if gib is None else f"{gib:.2f}",
             "?" if limit_gib is None else f"{limit_gib:.1f}", fit, seconds,
             "runs" if fits else "too big")
    last = Choice(policy, compiled, seconds, tried, limit_gib)
    if fits:
      return last
  if last is not None and not strict:
    return last
  raise MemoryError(f"no remat policy fits {fit:.2f} x {limit_gib} GiB per device: {tried} "
                    "(program GiB or compile error per policy); shorten the sequence, add "
                    "devices along `sequence` or `fsdp`, or chunk the MLP (mlp_chunk_size)")
