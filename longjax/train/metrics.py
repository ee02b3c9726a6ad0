"""Training metrics: FLOPs and MFU, TensorBoard / JSONL writers, and the one-line console log.

FLOP convention (stated in every MFU we report, and in docs/training.md):
  training FLOPs per token = 6 * P_matmul + 6 * L * S * N * H
- P_matmul: parameters that multiply activations (attention and MLP projections of every layer,
  and the unembedding even when it is tied to the embedding; not the embedding lookup, not norms).
  6 = 2 (multiply-add) * 3 (forward + backward, the backward counted as 2x the forward).
- Attention: per layer and token the forward does QK^T and PV over S keys, 2 * 2 * S * N * H
  FLOPs; causal masking halves it (MaxText's convention: only the visible half is counted) and
  training triples it: 6 * S * N * H. Packed documents are still counted as one causal sequence
  of length S, and rematerialisation is not counted (it is overhead, not model FLOPs).
MFU = FLOPs per step / (step time * number of devices * peak dense bf16 FLOP/s per device).
"""

import json
import logging
import os
import time
from pathlib import Path

import jax
from etils import epath

# Dense bf16 peak FLOP/s per device (no 2:4 sparsity), by `device_kind` substring.
PEAK_FLOPS = (
    ("H200", 989e12),
    ("H100", 989e12),
    ("TPU v6 lite", 918e12),  # v6e
    ("TPU v6e", 918e12),
    ("TPU v5 lite", 197e12),  # v5e
    ("TPU v5e", 197e12),
    ("TPU v5p", 459e12),
    ("TPU v5", 459e12),       # v5p reports "TPU v5"
    ("TPU v4", 275e12),
)


def peak_flops(device_kind: str) -> float | None:
  """Peak dense bf16 FLOP/s of one device, or None if unknown (CPU: MFU is not reported)."""
  for key, flops in PEAK_FLOPS:
    if key.lower() in device_kind.lower():
      return flops
  return None


def training_flops_per_token(config, seq_len: int) -> float:
  """Model FLOPs per trained token (convention in the module docstring) for a LlamaConfig."""
  d, f, L, v = (config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                config.vocab_size)
  n, k = config.num_attention_heads, config.num_key_value_heads
  h = getattr(config, "head_dim", None) or d // n
  per_layer = d * n * h + 2 * d * k * h + n * h * d + 3 * d * f
  matmul_params = L * per_layer + d * v
  return 6.0 * matmul_params + 6.0 * L * seq_len * n * h


class MetricWriter:
  """Writes scalars to TensorBoard (clu, if importable) and to `metrics.jsonl` on process 0.

  The JSONL file is what tests and scripts read back; clu (and with it TensorFlow) is imported
  only here and only when present, so the trainer also runs on boxes without either. Object
  stores (gs://) have no append, so there the JSONL goes to ./metrics-<run name>.jsonl locally.
  """

  def __init__(self, logdir: str | epath.PathLike, *, after_step: int = 0):
    """`after_step`: the step training resumes after; records of later steps (written before a
    kill or a fall back to an older checkpoint) are dropped, as those steps run again."""
    self.logdir = epath.Path(logdir)
    self._main = jax.process_index() == 0
    self._tb = None
    if self._main:
      self.logdir.mkdir(parents=True, exist_ok=True)
      jsonl = self.logdir / "metrics.jsonl"
      if "://" in str(self.logdir):
        jsonl = Path(f"metrics-{self.logdir.name}.jsonl").absolute()
        logging.info("metrics.jsonl goes to %s (the model dir is remote)", jsonl)
      try:
        from clu import metric_writers  # pylint: disable=import-outside-toplevel
        self._tb = metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(self.logdir)))
      except ImportError:
        logging.warning("clu is not installed: no TensorBoard events, only %s/metrics.jsonl",
                        self.logdir)
      _truncate_after(Path(jsonl), after_step)
      self._jsonl = open(jsonl, "a", encoding="utf-8")

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._main:
      return
    if self._tb is not None:
      self._tb.write_scalars(step, scalars)
    self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
    self._jsonl.flush()

  def close(self) -> None:
    if self._main:
      if self._tb is not None:
        self._tb.flush()
        self._tb.close()
      self._jsonl.close()


def _truncate_after(jsonl: Path, step: int) -> None:
  """Rewrites `jsonl` (atomically) without records past `step` or a torn last line."""
  if not jsonl.is_file():
    return
  lines = jsonl.read_text(encoding="utf-8").splitlines()
  kept = [line for line in lines if _record_step(line) <= step]
  if len(kept) < len(lines):
    logging.info("%s: dropped %d records after step %d (those steps run again)", jsonl,
                 len(lines) - len(kept), step)
    tmp = jsonl.with_name(f".tmp-{jsonl.name}")
    tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    os.replace(tmp, jsonl)


def _record_step(line: str) -> float:
  """The step of one JSONL record; infinity for a torn or foreign line (so it is dropped)."""
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return float("inf")


def _duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def console_line(step: int, total: int, scalars: dict[str, float], eta_s: float | None) -> str:
  """One line with progress and ETA, e.g. `step 120/1000 (12%) | loss 3.214 | ... | ETA 7m30s`."""
  parts = [f"step {step}/{total} ({100 * step / total:.0f}%)", f"loss {scalars['loss']:.4f}",
           f"gnorm {scalars['grad_norm']:.3f}", f"lr {scalars['learning_rate']:.2e}"]
  if "step_time_s" in scalars:
    parts += [f"{scalars['tokens_per_s'] / 1e3:.1f}k tok/s", f"{scalars['step_time_s']:.3f} s/step"]
  if "mfu" in scalars:
    parts.append(f"MFU {100 * scalars['mfu']:.1f}%")
  if eta_s is not None:
    parts.append(f"ETA {_duration(eta_s)}")
  return " | ".join(parts)


class Throughput:
  """Step time, tokens/s and MFU averaged over the steps between two `measure` calls."""

  def __init__(self, tokens_per_step: int, flops_per_step: float):
    self.tokens_per_step, self.flops_per_step = tokens_per_step, flops_per_step
    peak = peak_flops(jax.devices()[0].device_kind)
    self.peak_total = peak * jax.device_count() if peak else None
    self._t, self._step = time.perf_counter(), 0

  def reset(self, step: int) -> None:
    self._t, self._step = time.perf_counter(), step

  def measure(self, step: int) -> dict[str, float]:
    """Call after the step's results were fetched (so the device work is finished); returns {}
    if no step finished since the last call or `reset`."""
    now = time.perf_counter()
    if step <= self._step:
      return {}
    dt = (now - self._t) / (step - self._step)
    self._t, self._step = now, step
    out = {"step_time_s": dt, "tokens_per_s": self.tokens_per_step / dt}
    if self.peak_total:
      out["mfu"] = self.flops_per_step / dt / self.peak_total
    return out
