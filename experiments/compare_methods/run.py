"""Compare the synthesis methods end to end: build -> train each arm -> evaluate -> one table.

    python experiments/compare_methods/run.py --preset demo --out demo_out      # `make demo`
    python experiments/compare_methods/run.py --preset wiki_smollm2_8k --out runs/cmp8k --seeds 3

Each stage runs the project's own entry points (`longjax.synth build`, `longjax.tasks.train_spm`,
`longjax.train`, `longjax.eval`) with the preset's arguments, in this process, and is skipped when
its output already exists, so an interrupted comparison resumes. `--seeds N` trains every arm N
times; seed k sets the data order (the SeqIO shuffle seed) and the initial parameters of a model
trained from scratch (a continued-pretraining arm keeps its loaded weights). Output:
OUT/index (synthesis), OUT/runs/<method>_seed<k> (MODEL_DIR), OUT/eval/<method>_seed<k> (eval
results), and OUT/comparison.{md,json,png}: methods x task categories x lengths, plus loss by
position, each a mean over seeds with a 95% interval, and each arm's token budget
(`python experiments/compare_methods/comparison.py OUT` rebuilds them from those files).
Expect for `demo`: about 10 minutes on 2 CPU cores; tiny models trained for a few dozen steps
score near zero on retrieval tasks, so the loss columns carry the signal there.
"""

import argparse
import glob
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
from presets import PRESETS, Comparison  # pylint: disable=wrong-import-position
from results import arm_name  # pylint: disable=wrong-import-position


def _stage(title: str) -> float:
  print(f"\n=== {title} ===", flush=True)
  return time.time()


def _done(t0: float) -> None:
  print(f"--- done in {time.time() - t0:.0f}s", flush=True)


def _call(main, argv: list[str], what: str) -> None:
  """Runs an entry point's `main(argv)`; a non-zero status stops the comparison with its name."""
  print("$ python -m " + what + " " + " ".join(argv), flush=True)
  status = main(argv)
  if status:
    raise SystemExit(f"compare_methods: `{what}` failed with status {status}")


def _corpus_arg(cmp: Comparison, out: Path) -> str:
  """The corpus as `synth build` takes it; a glob becomes a directory of links to its files."""
  if cmp.corpus == "default" or not any(c in cmp.corpus for c in "*?["):
    return cmp.corpus
  files = sorted(glob.glob(os.path.expanduser(cmp.corpus)))
  if not files:
    raise SystemExit(f"compare_methods: corpus glob {cmp.corpus!r} matches no file")
  link_dir = out / (cmp.corpus_name or "corpus")
  link_dir.mkdir(parents=True, exist_ok=True)
  for f in files:
    link = link_dir / Path(f).name
    if not link.exists():
      link.symlink_to(Path(f).resolve())
  return str(link_dir)


def build_index(cmp: Comparison, out: Path) -> tuple[Path, str]:
  """Corpus store, tokenizer (trained if `spm:`), then every method's corpus-wide index."""
  from longjax.synth.__main__ import main as synth_main  # pylint: disable=import-outside-toplevel
  from longjax.tasks.train_spm import main as spm_main  # pylint: disable=import-outside-toplevel
  index, corpus = out / "index", _corpus_arg(cmp, out)
  tokenizer = cmp.tokenizer
  if tokenizer.startswith("spm:"):
    tokenizer = str(out / f"spm{tokenizer[4:]}.model")
    if not Path(tokenizer).exists():
      _call(synth_main, ["build", "--corpus", corpus, "--out", str(index), "--methods", "none"],
            "longjax.synth")
      _call(spm_main, ["--index-dir", str(index), "--out", tokenizer,
                       "--vocab-size", cmp.tokenizer[4:]], "longjax.tasks.train_spm")
  import json  # pylint: disable=import-outside-toplevel
  _call(synth_main, ["build", "--corpus", corpus, "--out", str(index),
                     "--methods", ",".join(cmp.methods), "--embedder", cmp.embedder,
                     "--tokenizer", tokenizer, "--lengths", str(cmp.length),
                     "--config", json.dumps(cmp.synth_config)], "longjax.synth")
  return index, tokenizer


def inspect_data(cmp: Comparison, index: Path, out: Path) -> Path:
  """`synth inspect`: every method's data diagnostics before any training (OUT/inspect)."""
  from longjax.synth.__main__ import main as synth_main  # pylint: disable=import-outside-toplevel
  inspect_dir = out / "inspect"
  if (inspect_dir / "inspect.json").exists():
    print(f"{inspect_dir}: already inspected", flush=True)
    return inspect_dir
  _call(synth_main, ["inspect", "--index-dir", str(index), "--length", str(cmp.length),
                     "--model", cmp.inspect_model, "--samples", str(cmp.inspect_samples),
                     "--contexts", cmp.inspect_contexts, "--out", str(inspect_dir)],
        "longjax.synth")
  return inspect_dir


def train_argv(cmp: Comparison, mixture: str, vocab: int, model_dir: Path, seed: int) -> list[str]:
  """The `longjax.train` arguments of one arm and seed.

  The seed sets SHUFFLE_SEED (seqio's shuffle and mixing seed: the data order) and
  TrainConfig.seed (the initial parameters; the trainer ignores it when it loads weights).
  """
  return [f"--gin_file={cmp.train_gin}",
          f"--gin.MIXTURE_OR_TASK_NAME='{mixture}'",
          f"--gin.TASK_FEATURE_LENGTHS={{'targets': {cmp.length}}}",
          f"--gin.MODEL_DIR='{model_dir}'",
          f"--gin.VOCAB_SIZE={vocab}",
          f"--gin.SHUFFLE_SEED={seed}",
          f"--gin.TrainConfig.seed={seed}",
          *(f"--gin.{b}" for b in cmp.train_bindings)]


def train_arm(cmp: Comparison, method: str, seed: int, index: Path, tokenizer: str,
              out: Path) -> Path:
  """Trains one seed of one arm on its Mixture `longjax_<corpus>_<method>_<length>_mix` (or on
  the method's Task alone when the preset has no replay); returns MODEL_DIR."""
  model_dir = out / "runs" / arm_name(method, seed)
  if (model_dir / "hf" / "config.json").exists():
    print(f"{model_dir}: already trained", flush=True)
    return model_dir
  from longjax.models.tokenizer import load_tokenizer_spec  # pylint: disable=import-outside-toplevel,line-too-long
  from longjax.io import format_length  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.task_names import IndexInfo  # pylint: disable=import-outside-toplevel
  from longjax.train.__main__ import main as train_main  # pylint: disable=import-outside-toplevel
  corpus = IndexInfo.read(index).corpus
  mixture = f"longjax_{corpus}_{method}_{format_length(cmp.length)}" + ("_mix" if cmp.replay
                                                                         else "")
  vocab = load_tokenizer_spec(tokenizer).vocab_size
  _call(train_main, train_argv(cmp, mixture, vocab, model_dir, seed), "longjax.train")
  if not (model_dir / "hf" / "config.json").exists():  # SIGTERM: the trainer saved and returned
    raise SystemExit(f"compare_methods: training of `{model_dir.name}` stopped before its export "
                     f"(was it preempted?); rerun the same command to resume from "
                     f"{model_dir}/checkpoints")
  return model_dir


def evaluate_arm(cmp: Comparison, model_dir: Path, tokenizer: str, out: Path) -> Path:
  """Runs the eval suite on one trained seed of one arm; returns OUT/eval/<its run's name>."""
  eval_dir = out / "eval" / model_dir.name
  if (eval_dir / "results.json").exists():
    print(f"{eval_dir}: already evaluated", flush=True)
    return eval_dir
  from longjax.eval.__main__ import main as eval_main  # pylint: disable=import-outside-toplevel
  _call(eval_main, ["--model", str(model_dir), "--tokenizer", tokenizer,
                    "--lengths", cmp.eval_lengths, "--tasks", cmp.eval_tasks,
                    "--samples", str(cmp.eval_samples),
                    "--loss-sequences", str(cmp.loss_sequences), "--out", str(eval_dir),
                    *(["--gold-loglik"] if cmp.gold_loglik else [])],
        "longjax.eval")
  return eval_dir


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
  parser.add_argument("--out", type=Path, required=True, help="output directory")
  parser.add_argument("--methods", default=None, help="comma list: a subset of the preset's arms")
  parser.add_argument("--seeds", type=int, default=1,
                      help="train and evaluate every arm this many times (seeds 0..N-1)")
  args = parser.parse_args(argv)
  if args.seeds < 1:
    parser.error(f"--seeds must be >= 1, got {args.seeds}")
  cmp = PRESETS[args.preset]
  methods = tuple(args.methods.split(",")) if args.methods else cmp.methods
  if cmp.cpu_devices:  # before jax is imported anywhere
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TensorFlow would probe for a GPU
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={cmp.cpu_devices}")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  out = args.out.resolve()
  # Every arm compiles the same train and eval programs: compile them once.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "jax_cache"))
  start = time.time()

  t = _stage(f"1/5 synthesis index ({', '.join(methods)})")
  index, tokenizer = build_index(cmp, out)
  _done(t)
  t = _stage("2/5 data diagnostics (synth inspect)")
  inspect_data(cmp, index, out)
  _done(t)
  import longjax.tasks  # pylint: disable=import-outside-toplevel
  from comparison import REPLAY_SHARE, write_comparison  # pylint: disable=import-outside-toplevel
  longjax.tasks.register(index, replay_ratio=REPLAY_SHARE)  # every built method's Tasks, Mixtures
  runs = [(method, seed) for seed in range(args.seeds) for method in methods]  # seed 0 first
  model_dirs, eval_dirs = {}, {m: [] for m in methods}
  for i, (method, seed) in enumerate(runs):
    t = _stage(f"3/5 train arm {i + 1}/{len(runs)}: {method}, seed {seed}")
    model_dirs[method, seed] = train_arm(cmp, method, seed, index, tokenizer, out)
    _done(t)
  for i, (method, seed) in enumerate(runs):
    t = _stage(f"4/5 evaluate arm {i + 1}/{len(runs)}: {method}, seed {seed}")
    eval_dirs[method].append(evaluate_arm(cmp, model_dirs[method, seed], tokenizer, out))
    _done(t)
  t = _stage("5/5 comparison")
  table = write_comparison(out, f"{args.preset}: methods at {cmp.length} tokens, "
                           f"{args.seeds} seed(s)", eval_dirs,
                           replay_share=REPLAY_SHARE if cmp.replay else 0.0)
  print(table)
  print(f"\nall outputs under {out} (comparison.md, comparison.png); total "
        f"{(time.time() - start) / 60:.1f} min")
  return 0


if __name__ == "__main__":
  sys.exit(main())
