"""Training-step benchmark: step time, tokens/s, MFU and memory of the real trainer step.

Runs `longjax.train.trainer.prepare` (the same jitted step `python -m longjax.train` runs: chunked
loss, AdamW, remat policy from the model config) on synthetic numpy batches; needs no gin,
TensorFlow or SeqIO, so it runs on the GPU box as is. Cases with `sequence=-1` split the one
sequence over every device (ring attention, zigzag, weights FSDP-sharded over the ring as in
gin/mesh/ring.gin); the others are data parallel, one sequence per device (mesh data=-1).

On one GPU (or all GPUs of a host for the `8b_*` ring cases), through the device tool:
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1 PYTHONPATH=. \\
    XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true \\
    python3 experiments/bench/train.py --cases 8b_128k,8b_1m --out $OUT
On CPU (a smoke test of the script): python experiments/bench/train.py --cases tiny,tiny_ring

MFU convention (longjax/train/metrics.py): model FLOPs per token = 6 * matmul params (the
unembedding included, the embedding lookup not) + 6 * L * S * N * H (causal attention counted
at half, backward = 2x forward); rematerialisation is not counted. Peak: 989 TFLOP/s dense bf16
per H100/H200; MFU and TFLOP/s are per device, peak memory that of the fullest one. The
attention is cuDNN's fused kernel, which needs plain causal masking (StepConfig.document_masking
=False: one document per row, global positions).
"""

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from longjax.models import LlamaConfig
from longjax.models.llama import REMAT_POLICIES
from longjax.train.data import SyntheticSource, complete, zigzag_batch
from longjax.train.mesh import MeshConfig
from longjax.train.metrics import peak_flops
from longjax.train.sharding import activate, global_batch
from longjax.train.step import StepConfig
from longjax.train.remat import LADDER, RematConfig, program_gib
from longjax.train.trainer import TrainConfig, fit_remat, prepare

sys.path.insert(0, str(Path(__file__).parent))
import step_profile  # pylint: disable=wrong-import-position


@dataclasses.dataclass(frozen=True)
class Case:
  preset: str
  seq_len: int
  remats: tuple[str, ...]         # remat policies in order of preference: the first that
                                  # compiles and fits in device memory runs
  steps: int                      # timed steps (after the untimed warm-up steps);
                                  # 0 = compile only (program memory, no step run)
  mlp_chunk: int | None = None
  loss_chunk: int = 4096
  scan_layers: bool = True
  # Ring size: mesh `sequence` axis (-1 = every device; weights FSDP-sharded over it, batch 1).
  sequence: int = 1
  logits_grad: str = "compute"    # StepConfig.logits_grad_dtype


SAVE, OFFLOAD, FULL = "save_context", "offload_context", "full"
CASES = {
    # The trainer's own ladder (`remat.LADDER`): keep as much of the forward pass as fits.
    "1b_64k": Case("llama3.2-1b", 65536, LADDER, steps=2),
    "1b_64k_full": Case("llama3.2-1b", 65536, (FULL,), steps=3),
    "smollm2_128k": Case("smollm2-135m", 131072, (SAVE,), steps=2, mlp_chunk=65536),
    "smollm2_256k": Case("smollm2-135m", 1 << 18, (OFFLOAD, FULL), steps=1, mlp_chunk=65536),
    "smollm2_1m": Case("smollm2-135m", 1 << 20, (SAVE, OFFLOAD, FULL), steps=1,
                       mlp_chunk=65536),
    "smollm2_1m_compile": Case("smollm2-135m", 1 << 20, (FULL,), steps=0, mlp_chunk=65536),
    "tiny": Case("tiny", 512, (SAVE,), steps=2, loss_chunk=128),
    "tiny_ring": Case("tiny", 512, (SAVE, FULL), steps=2, loss_chunk=128, sequence=-1),
    # Llama-3-8B shape, sequence over every GPU (gin/mesh/ring.gin): the multi-GPU issue's runs.
    **{f"8b_{name}": Case("llama3-8b", length, (SAVE, OFFLOAD, FULL), steps=1,
                          mlp_chunk=16384, sequence=-1)
       for name, length in (("128k", 1 << 17), ("256k", 1 << 18), ("512k", 1 << 19),
                            ("1m", 1 << 20))},
    "smollm2_1m_ring": Case("smollm2-135m", 1 << 20, (SAVE, OFFLOAD, FULL), steps=1,
                            mlp_chunk=65536, sequence=-1),
    **{f"1b_{name}_ring": Case("llama3.2-1b", length, (SAVE, OFFLOAD, FULL), steps=1,
                               mlp_chunk=16384, sequence=-1)
       for name, length in (("512k", 1 << 19), ("1m", 1 << 20))},
}


def _prepare(case: Case, fit: float):
  """(trainer's Prepared under the first remat candidate that fits, the remat choice, the host
  batch); a compile-only case (steps 0) keeps the last candidate even when it does not fit."""
  model = LlamaConfig.preset(case.preset, mlp_chunk_size=case.mlp_chunk, dtype="bfloat16",
                             scan_layers=case.scan_layers)
  ring = case.sequence != 1
  mesh = MeshConfig(data=1, sequence=case.sequence) if ring else MeshConfig(data=-1)
  rows = 1 if ring else jax.device_count()
  config = TrainConfig(model_dir="/tmp/longjax_bench_unused", train_steps=1000, batch_size=rows,
                       task_feature_lengths={"targets": case.seq_len}, mesh=mesh,
                       step=StepConfig(loss_chunk=case.loss_chunk, document_masking=False,
                                       logits_grad_dtype=case.logits_grad),
                       remat=RematConfig(policy="auto", ladder=case.remats, fit=fit))
  run, choice = fit_remat(prepare(config, model), config.remat, strict=case.steps > 0)
  raw = next(SyntheticSource(model.vocab_size, case.seq_len).batches(
      start=0, rows=slice(0, rows), global_batch=rows))
  host = complete(raw)  # one causal sequence a row: global positions, zigzagged as in training
  host["decoder_positions"] = np.broadcast_to(np.arange(case.seq_len, dtype=np.int32),
                                              (rows, case.seq_len))
  return run, choice, zigzag_batch(host, run.mesh.shape["sequence"])


def bench(name: str, case: Case, fit: float = 0.9, hlo_dir: str | None = None,
          warmup: int = 1, profile: bool = False) -> dict:
  """Compiles and times one case; returns the record (also when a step could not run).

  `fit`: the share of the device's memory a program may plan for (the rest: fragmentation,
  NCCL and cuDNN workspaces outside XLA's pool). `warmup`: untimed first steps (they also
  autotune kernels and set up NCCL). `profile`: the last timed step runs under the profiler
  (its overhead is in that step's time) and the record gets its kernel-time breakdown.
  """
  run, choice, host = _prepare(case, fit)
  compiled = choice.compiled
  if hlo_dir:
    Path(hlo_dir).mkdir(parents=True, exist_ok=True)
    (Path(hlo_dir) / f"{name}.hlo.txt").write_text(compiled.as_text())
  with activate(run.mesh, run.rules):
    state = run.init_state()
    batch = global_batch(host, run.mesh, host["decoder_target_tokens"].shape)
  batch_rows = batch["decoder_target_tokens"].shape[0]
  record = {"case": name, "preset": case.preset, "seq_len": case.seq_len,
            "remat": choice.policy, "remats_tried_gib": choice.tried, "batch_size": batch_rows,
            "logits_grad_dtype": case.logits_grad,
            "warmup_steps": warmup, "scan_layers": case.scan_layers,
            "mlp_chunk": case.mlp_chunk, "compile_s": round(choice.compile_s, 1),
            "compiled_memory_gib": program_gib(compiled),
            "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
            "mesh": dict(run.mesh.shape), "jax": jax.__version__,
            "flops_per_step": run.flops_per_step}
  if case.steps == 0:
    return record
  times, losses = [], []
  trace_dir = tempfile.mkdtemp(prefix=f"trace_{name}_") if profile else None
  with activate(run.mesh, run.rules):
    for i in range(warmup + case.steps):
      last = i == warmup + case.steps - 1
      traced = jax.profiler.trace(trace_dir) if profile and last else contextlib.nullcontext()
      with traced:
        t0 = time.perf_counter()
        state, metrics = compiled(state, batch)
        losses.append(float(metrics["loss"]))  # blocks until the step is done
        dt = time.perf_counter() - t0
      print(f"[{name}] step {i + 1}: {dt:.3f} s, loss {losses[-1]:.4f}", flush=True)
      if i >= warmup:
        times.append(dt)
  if profile:
    kernels, lines = step_profile.device_kernels(step_profile.latest_xplane(Path(trace_dir)))
    record["profile"] = step_profile.breakdown(kernels, dt) | {
        "profiled_step": warmup + case.steps, "trace_lines": lines[:40]}
    print(f"[{name}] profile of step {warmup + case.steps}: "
          f"{step_profile.summary(record['profile'])}", flush=True)
  step_s = statistics.median(times)
  n = jax.device_count()
  peak = peak_flops(jax.devices()[0].device_kind)
  peak_bytes = max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in jax.devices())
  record.update(step_s=step_s, step_times=times, losses=losses,
                tokens_per_s=batch_rows * case.seq_len / step_s,
                model_tflops_per_s=run.flops_per_step / step_s / n / 1e12,  # per device
                mfu=run.flops_per_step / step_s / (n * peak) if peak else None,
                peak_memory_gib=peak_bytes / 2**30 or None)  # the fullest device
  if not all(np.isfinite(losses)):
    raise FloatingPointError(f"[{name}] non-finite loss {losses}")
  return record


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="1b_64k,smollm2_1m",
                      help=f"comma-separated, from {sorted(CASES)}")
  parser.add_argument("--out", default=os.environ.get("OUT"), help="directory for results.json")
  parser.add_argument("--fit", type=float, default=0.9,
                      help="largest share of device memory a compiled step may plan for")
  parser.add_argument("--warmup", type=int, default=1,
                      help="untimed steps before the timed ones (0: time the first step)")
  parser.add_argument("--remat", default=None,
                      help="comma-separated remat policies to try instead of the cases' "
                           "candidates, in order (one policy: for allocators that report no "
                           "memory limit, e.g. XLA_PYTHON_CLIENT_ALLOCATOR=platform; several, "
                           "with --each-remat: time only those rungs of the ladder)")
  parser.add_argument("--each-remat", action="store_true",
                      help="time every candidate of each case that fits, not only the first, "
                           "and report each one's step time against save_context's in this run")
  parser.add_argument("--logits-grad", default="compute",
                      help="comma-separated StepConfig.logits_grad_dtype values; each one is "
                           "a run of every case (compute,float32: both in one run)")
  parser.add_argument("--profile", action="store_true",
                      help="run each case's last timed step under the profiler and record "
                           "its GPU time by kind (attention / matmul / other; step_profile.py)")
  parser.add_argument("--dump-hlo", action="store_true",
                      help="also write each case's compiled HLO to OUT/<case>.hlo.txt")
  args = parser.parse_args()
  names = args.cases.split(",")
  unknown = [n for n in names if n not in CASES]
  if unknown:
    parser.error(f"unknown cases {unknown}; known: {sorted(CASES)}")
  print(f"devices: {jax.devices()}  jax {jax.__version__}", flush=True)
  remats = tuple(args.remat.split(",")) if args.remat else None
  if remats and not set(remats) <= set(REMAT_POLICIES):
    parser.error(f"--remat {args.remat}: known policies are {REMAT_POLICIES}")
  runs = []
  for name in names:
    case = CASES[name]
    if remats:
      case = dataclasses.replace(case, remats=remats)
    policies = [(p,) for p in case.remats] if args.each_remat else [case.remats]
    runs += [(name, dataclasses.replace(case, remats=p, logits_grad=g)) for p in policies
             for g in args.logits_grad.split(",")]
  records = []
  for name, case in runs:
    try:
      records.append(bench(name, case, args.fit, args.out if args.dump_hlo else None,
                           args.warmup, args.profile))
    except Exception as e:  # pylint: disable=broad-except  (report it, go on to the next case)
      print(f"[{name}] FAILED: {type(e).__name__}: {str(e)[:2000]}", flush=True)
      continue
    print(json.dumps(records[-1]), flush=True)
    if args.out:
      Path(args.out).mkdir(parents=True, exist_ok=True)
      (Path(args.out) / "train_bench.json").write_text(json.dumps(records, indent=1))
  print("MFU: 6*matmul params + 6*L*S*N*H per token (causal attention at half, bwd = 2x fwd)")
  print(f"{'case':14} {'S':>8} {'remat':>16} {'logits grad':>11} {'step s':>8} {'tok/s':>9} "
        f"{'TF/s/dev':>8} {'MFU':>6} {'peak GiB':>8}")
  for r in records:
    if "step_s" not in r:
      print(f"{r['case']:14} {r['seq_len']:>8} {r['remat']:>16} compiled only: program memory "
            f"{r['compiled_memory_gib']:.1f} GiB")
      continue
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "n/a"
    peak = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] else "n/a"
    print(f"{r['case']:14} {r['seq_len']:>8} {r['remat']:>16} {r['logits_grad_dtype']:>11} "
          f"{r['step_s']:>8.3f} "
          f"{r['tokens_per_s']:>9.0f} {r['model_tflops_per_s']:>8.1f} {mfu:>6} {peak:>8}"
          + _against_save_context(r, records))
  return 0


def _against_save_context(record: dict, records: list[dict]) -> str:
  """' (x.xx× save_context's time)' when this run also timed the case under save_context."""
  ref = [r for r in records if r["case"] == record["case"] and r["remat"] == SAVE
         and r["logits_grad_dtype"] == record["logits_grad_dtype"] and "step_s" in r]
  if not ref or record["remat"] == SAVE:
    return ""
  return f"  ({record['step_s'] / ref[0]['step_s']:.3f}x save_context's step time)"


if __name__ == "__main__":
  sys.exit(main())
