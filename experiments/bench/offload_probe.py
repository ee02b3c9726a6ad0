"""Which part of the step makes `offload_context` fail to compile on the GPU.

On jax 0.11.2 / XLA GPU the trainer's step under `offload_context` (attention output and lse
offloaded to pinned host memory) fails to compile with an XLA INTERNAL shape error on one GPU,
at 64K and at 1M, while the same policy compiled in the 2-GPU ring. This compiles (runs no step)
the step for one model shape, changing one thing at a time against the failing configuration:
what is offloaded (both names, the output alone, the lse alone), the attention kernel (cuDNN
`gpu`, pure-JAX `blockwise`) and scanned vs unrolled layers. Prints each variant's outcome
(program GiB, or the error's first lines) and writes them to OUT/offload_probe.json.

  PYTHONPATH=. python3 experiments/bench/offload_probe.py --preset smollm2-135m --seq 32768
"""

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import jax

from longjax.models import LlamaConfig, llama
from longjax.train.mesh import MeshConfig
from longjax.train.remat import program_gib
from longjax.train.sharding import activate
from longjax.train.step import StepConfig
from longjax.train.trainer import TrainConfig, prepare


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  offloaded: tuple[str, ...] = ("context", "context_lse")
  attention_impl: str | None = None  # None: the model's default (cuDNN on a GPU)
  scan_layers: bool = True


VARIANTS = (
    Variant("as the trainer runs it (cuDNN, scanned, both names)"),
    Variant("output only (lse kept on device)", offloaded=("context",)),
    Variant("lse only (output kept on device)", offloaded=("context_lse",)),
    Variant("blockwise kernel", attention_impl="blockwise"),
    Variant("unrolled layers", scan_layers=False),
)


def _policy(offloaded: tuple[str, ...]):
  """offload_context with only `offloaded` moved to the host; the other name kept on device."""
  kept = [n for n in ("context", "context_lse") if n not in offloaded]
  return jax.checkpoint_policies.save_and_offload_only_these_names(
      names_which_can_be_saved=kept, names_which_can_be_offloaded=list(offloaded),
      offload_src="device", offload_dst="pinned_host")


def compile_variant(variant: Variant, preset: str, seq: int) -> dict:
  """Compiles the step of `variant`; its program memory, or the error it raised."""
  policies = llama._remat_policies  # pylint: disable=protected-access
  llama._remat_policies = lambda: policies() | {"offload_context": _policy(variant.offloaded)}
  try:
    model = LlamaConfig.preset(preset, dtype="bfloat16", scan_layers=variant.scan_layers,
                               attention_impl=variant.attention_impl)
    config = TrainConfig(model_dir="/tmp/longjax_probe_unused", train_steps=1000, batch_size=1,
                         task_feature_lengths={"targets": seq}, mesh=MeshConfig(data=-1),
                         step=StepConfig(loss_chunk=4096, document_masking=False))
    run = prepare(config, model)
    t0 = time.perf_counter()
    with activate(run.mesh, run.rules):
      compiled = run.step_for("offload_context").lower(run.abstract_state,
                                                       run.abstract_batch).compile()
    return {"variant": variant.name, **dataclasses.asdict(variant), "compiled": True,
            "compile_s": round(time.perf_counter() - t0, 1), "program_gib": program_gib(compiled)}
  except Exception as e:  # pylint: disable=broad-except  (the failure is the finding)
    return {"variant": variant.name, **dataclasses.asdict(variant), "compiled": False,
            "error": f"{type(e).__name__}: {str(e)[:1500]}"}
  finally:
    llama._remat_policies = policies


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="smollm2-135m")
  p.add_argument("--seq", type=int, default=32768)
  p.add_argument("--out", default=os.environ.get("OUT"))
  args = p.parse_args()
  print(f"devices: {jax.devices()}  jax {jax.__version__}", flush=True)
  results = []
  for variant in VARIANTS:
    results.append(compile_variant(variant, args.preset, args.seq))
    r = results[-1]
    outcome = (f"compiled in {r['compile_s']} s, {r['program_gib']:.1f} GiB" if r["compiled"]
               else r["error"][:300])
    print(f"[{variant.name}] {outcome}", flush=True)
  if args.out:
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "offload_probe.json").write_text(json.dumps(
        {"preset": args.preset, "seq": args.seq, "jax": jax.__version__,
         "device": jax.devices()[0].device_kind, "results": results}, indent=1))


if __name__ == "__main__":
  main()
