"""Step time of one 8-device CPU job as 2 processes x 4 devices against 1 process x 8, same run.

Trains gin/experiments/tiny_synthetic.gin (tiny Llama, mesh data=2 x sequence=4, 4 x 256 tokens
per step) through the real CLI, alternating the two layouts `--rounds` times, and reads each run's
`step_time_s` from MODEL_DIR/metrics.jsonl (steps after the first two: compilation and warm-up
left out). Prints one JSON line per run and a summary line with the median ratio 2x4 / 1x8.

  python experiments/bench/multihost_cpu.py --steps 30 --rounds 3 \\
      --out experiments/bench/results/multihost_cpu2.jsonl

On 2 shared cores both layouts compete for the same CPUs; the ratio says what the extra process
and the gloo collectives cost there, not what a pod's hosts (each with its own chips) would see.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP = 2  # the first step compiles; the second still warms caches


def run(layout: str, steps: int, model_dir: Path) -> dict:
  """One training run; its median step time (s) over steps > SKIP and its wall time."""
  local = ["--local-processes", "2"] if layout == "2x4" else []
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-m", "longjax.train", *local,
                  "--gin_file=gin/experiments/tiny_synthetic.gin", f"--gin.TRAIN_STEPS={steps}",
                  "--gin.CHECKPOINT_EVERY=0", f"--gin.MODEL_DIR='{model_dir}'"],
                 cwd=REPO, env=env, check=True, capture_output=True)
  wall = time.perf_counter() - t0
  records = [json.loads(l) for l in (model_dir / "metrics.jsonl").read_text().splitlines()]
  times = [r["step_time_s"] for r in records if r["step"] > SKIP and "step_time_s" in r]
  return {"layout": layout, "steps": steps, "median_step_time_s": statistics.median(times),
          "step_times_s": times, "wall_s": round(wall, 2)}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
  args = parser.parse_args()
  lines = []
  with tempfile.TemporaryDirectory(prefix="longjax-bench-") as tmp:
    for i in range(args.rounds):
      for layout in ("1x8", "2x4"):
        lines.append({"round": i, **run(layout, args.steps, Path(tmp) / f"{layout}_{i}")})
        print(json.dumps(lines[-1]), flush=True)
  median = {k: statistics.median(l["median_step_time_s"] for l in lines if l["layout"] == k)
            for k in ("1x8", "2x4")}
  ratios = [b["median_step_time_s"] / a["median_step_time_s"]
            for a, b in zip(lines[::2], lines[1::2])]
  summary = {"summary": True, "median_step_time_s": median, "ratio_2x4_over_1x8": ratios,
             "median_ratio": statistics.median(ratios), "cpus": os.cpu_count(),
             "command": " ".join(sys.argv)}
  print(json.dumps(summary), flush=True)
  if args.out:
    with open(args.out, "a", encoding="utf-8") as f:
      for line in [*lines, summary]:
        f.write(json.dumps(line) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
