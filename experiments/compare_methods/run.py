"""Compare the synthesis methods end to end: build -> export -> train each arm -> evaluate -> table.

    python experiments/compare_methods/run.py --preset demo --out demo_out      # `make demo`
    python experiments/compare_methods/run.py --preset wiki_smollm2_8k --out runs/cmp8k --seeds 3

Stages (`--stages`, default all, always run in this order):
  index       `longjax.synth build` (and `longjax.tasks.train_spm` for an `spm:` tokenizer)
  inspect     `longjax.synth inspect`: every method's data diagnostics before training
  export      `longjax.tasks export` of each arm's Mixture (or Task) with seed k to
              OUT/data/<method>_seed<k>: exactly the tokens its training reads (TRAIN_STEPS x
              BATCH_SIZE x length, parsed from the preset's gin run with gin), plus
              OUT/data/synthesis.json (tokenizer and synthesis budgets)
  train       `longjax.train` of each arm from its export (gin/data/arrayrecord.gin)
  eval        `longjax.eval` of each trained arm, then its raw record OUT/results/<arm>.json
  comparison  OUT/comparison.{md,json,png} from OUT/results/*.json alone
The train and eval stages import neither TensorFlow, seqio nor ScaNN: export on a CPU machine,
carry OUT/data (and an `spm:` preset's OUT/spm<N>.model) to the accelerator machine, run
`--stages train,eval` there (one arm per command with `--methods M --seed K` if you like), bring
OUT/results back and run `--stages comparison` (docs/training.md, "Exported data").

Every stage runs the project's own entry points in this process and skips an arm whose output
exists, so an interrupted comparison resumes. Seed k sets the data order (the export's seqio
seed and the Grain shuffle seed) and the initial parameters of a model trained from scratch (a
continued-pretraining arm keeps its loaded weights), and the synthesized samples only with the
preset's `fresh_samples` (else every seed reads synthesis seed 0's: two seeds' exports share
most rows, seed_rows.py); `--seeds N` runs seeds 0..N-1, `--seed K`
the listed ones. Outputs: OUT/index, OUT/inspect, OUT/data/<arm>, OUT/runs/<arm> (MODEL_DIR),
OUT/eval/<arm>, OUT/results/<arm>.json, OUT/comparison.{md,json,png}: methods x task categories
x lengths, plus loss by position, each a mean over seeds with a 95% interval, and each arm's token
budget (`python experiments/compare_methods/comparison.py OUT` rebuilds them).
Expect for `demo`: about 10 minutes on 2 CPU cores; tiny models trained for a few dozen steps
score near zero on retrieval tasks, so the loss columns carry the signal there.
"""

import argparse
import functools
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
# Each stage imports its entry points when it runs, so that the train and eval stages never
# import the index, inspect and export stages' TensorFlow, seqio and ScaNN.
# pylint: disable=wrong-import-position,import-outside-toplevel
import records
from presets import PRESETS, REPLAY_SHARE, Comparison

STAGES = ("index", "inspect", "export", "train", "eval", "comparison")
DATA_GIN = "gin/data/arrayrecord.gin"
Arm = tuple[str, int]  # (method, seed)


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


def tokenizer_spec(cmp: Comparison, out: Path) -> str:
  """The tokenizer as the entry points take it: an `spm:<vocab>` preset's model is trained into
  OUT/spm<vocab>.model by the index stage."""
  return str(out / f"spm{cmp.tokenizer[4:]}.model") if cmp.tokenizer.startswith("spm:") \
      else cmp.tokenizer


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


def build_index(cmp: Comparison, methods: Sequence[str], out: Path) -> None:
  """Corpus store, tokenizer (trained if `spm:`), then every method's corpus-wide index. The
  embedder (and with `embed_elsewhere` the accelerator's embedding table) is asked for only when
  a method in `methods` embeds: Standard and Quest build without one."""
  from longjax.synth.__main__ import main as synth_main
  from longjax.synth.build import needs_embedder, resolve_methods
  from longjax.tasks.train_spm import main as spm_main
  index, corpus, tokenizer = out / "index", _corpus_arg(cmp, out), tokenizer_spec(cmp, out)
  if cmp.tokenizer.startswith("spm:") and not Path(tokenizer).exists():
    _call(synth_main, ["build", "--corpus", corpus, "--out", str(index), "--methods", "none"],
          "longjax.synth")
    _call(spm_main, ["--index-dir", str(index), "--out", tokenizer,
                     "--vocab-size", cmp.tokenizer[4:]], "longjax.tasks.train_spm")
  options = {m: o for m, o in cmp.synth_config.items() if m in methods}  # build refuses others
  embedder = []
  if any(needs_embedder(m) for m in resolve_methods(methods)):
    embedder = ["--embedder", cmp.embedder]
    embedder += embedding_table(cmp, corpus, out) if cmp.embed_elsewhere else []
  _call(synth_main, ["build", "--corpus", corpus, "--out", str(index),
                     "--methods", ",".join(methods), *embedder,
                     "--tokenizer", tokenizer, "--lengths", str(cmp.length),
                     "--config", json.dumps(options)], "longjax.synth")


def embedding_table(cmp: Comparison, corpus: str, out: Path) -> list[str]:
  """The build's `--embedding-table` arguments once OUT/embedding_table holds the vectors;
  until then writes its inputs and stops with what to run on the accelerator."""
  from longjax.io import read_manifest
  from longjax.synth.__main__ import main as synth_main
  table = out / "embedding_table"
  if (read_manifest(table) or {}).get("kind") == "embedding_table":
    return ["--embedding-table", str(table)]
  if not (table / "inputs.npz").exists():
    _call(synth_main, ["build", "--corpus", corpus, "--out", str(out / "index"),
                       "--methods", "none"], "longjax.synth")
    _call(synth_main, ["embed-inputs", "--index-dir", str(out / "index"),
                       "--embedder", cmp.embedder, "--out", str(table)], "longjax.synth")
  raise SystemExit(f"compare_methods: the embeddings are computed on an accelerator: copy "
                   f"{table} there, run `python -m longjax.synth embed-table {table.name} "
                   f"--embedder {cmp.embedder}`, copy its vectors-*.npy and manifest.json back "
                   f"into {table}, then rerun this command (docs/synthesis.md)")


def inspect_data(cmp: Comparison, out: Path) -> Path:
  """`synth inspect`: every method's data diagnostics before any training (OUT/inspect)."""
  from longjax.synth.__main__ import main as synth_main
  inspect_dir = out / "inspect"
  if (inspect_dir / "inspect.json").exists():
    print(f"{inspect_dir}: already inspected", flush=True)
    return inspect_dir
  _call(synth_main, ["inspect", "--index-dir", str(out / "index"), "--length", str(cmp.length),
                     "--model", cmp.inspect_model, "--samples", str(cmp.inspect_samples),
                     "--contexts", cmp.inspect_contexts, "--out", str(inspect_dir)],
        "longjax.synth")
  return inspect_dir


def gin_args(cmp: Comparison, *, task: str, vocab: int, data_dir: Path, model_dir: Path,
             seed: int) -> tuple[list[str], list[str]]:
  """The gin files and bindings of one arm's `longjax.train` run, training from its export.

  The seed sets SHUFFLE_SEED (the Grain shuffle of the exported rows, which the export drew with
  the same seed) and TrainConfig.seed (the initial parameters; the trainer ignores it when it
  loads weights).
  """
  return [cmp.train_gin, DATA_GIN], [
      f"MIXTURE_OR_TASK_NAME='{task}'", f"TASK_FEATURE_LENGTHS={{'targets': {cmp.length}}}",
      f"DATA_DIR='{data_dir}'", f"MODEL_DIR='{model_dir}'", f"VOCAB_SIZE={vocab}",
      f"SHUFFLE_SEED={seed}", f"TrainConfig.seed={seed}", *cmp.train_bindings]


def train_argv(cmp: Comparison, **arm) -> list[str]:
  """The `longjax.train` arguments of one arm and seed (`gin_args`)."""
  files, bindings = gin_args(cmp, **arm)
  return [f"--gin_file={f}" for f in files] + [f"--gin.{b}" for b in bindings]


def training_tokens(cmp: Comparison, **arm) -> int:
  """TRAIN_STEPS x BATCH_SIZE x length of one arm's run, from the TrainConfig that gin builds
  out of `gin_args` (the trainer's own parsing; nothing is trained)."""
  import gin
  from longjax.train.__main__ import parse
  from longjax.train.trainer import TrainConfig
  try:
    parse(*gin_args(cmp, **arm))
    config = gin.get_configurable(TrainConfig)()
  finally:
    gin.clear_config()
  return config.train_steps * config.batch_size * config.seq_len


@functools.cache
def _vocab_size(tokenizer: str) -> int:
  from longjax.models.tokenizer import load_tokenizer_spec
  return load_tokenizer_spec(tokenizer).vocab_size


def export_arm(cmp: Comparison, method: str, seed: int, tokenizer: str, out: Path) -> Path:
  """Exports the rows one seed of one arm trains on to OUT/data/<arm> (the method's Mixture
  `longjax_<corpus>_<method>_<length>_mix`, or its Task alone when the preset has no replay);
  an export that exists is verified and kept. The Tasks must be registered; with
  `fresh_samples` they are registered again with this seed as their synthesis seed."""
  from longjax.synth.methods.task_names import IndexInfo, task_name
  from longjax.tasks.__main__ import main as tasks_main
  if cmp.fresh_samples:
    import longjax.tasks
    longjax.tasks.register(out / "index", replay_ratio=REPLAY_SHARE, seed=seed, methods=[method])
  arm = records.arm_name(method, seed)
  task = task_name(IndexInfo.read(out / "index").corpus, method, cmp.length)
  task += "_mix" if cmp.replay else ""
  data_dir = out / "data" / arm
  tokens = training_tokens(cmp, task=task, vocab=_vocab_size(tokenizer), data_dir=data_dir,
                           model_dir=out / "runs" / arm, seed=seed)
  _call(tasks_main, ["export", task, "--length", str(cmp.length), "--tokens", str(tokens),
                     "--out", str(data_dir), "--seed", str(seed)], "longjax.tasks")
  return data_dir


def _check_export(cmp: Comparison, export: dict, data_dir: Path, seed: int, **arm) -> None:
  """Stops unless the export holds exactly the run's tokens, drawn with the arm's seed."""
  tokens = training_tokens(cmp, seed=seed, data_dir=data_dir, **arm)
  got = (export["counts"]["tokens"], export["config"]["seed"])
  if got != (tokens, seed):
    raise SystemExit(f"compare_methods: {data_dir} holds {got[0]} tokens drawn with seed "
                     f"{got[1]}, but this arm trains on {tokens} tokens with seed {seed}; "
                     "export it again (--stages export) into an empty directory")


def train_arm(cmp: Comparison, method: str, seed: int, out: Path) -> Path:
  """Trains one seed of one arm from its export OUT/data/<arm>; returns MODEL_DIR."""
  arm = records.arm_name(method, seed)
  model_dir, data_dir = out / "runs" / arm, out / "data" / arm
  if (model_dir / "hf" / "config.json").exists():
    print(f"{model_dir}: already trained", flush=True)
    return model_dir
  from longjax.train.__main__ import main as train_main
  from longjax.train.arrayrecord import read_export
  export = read_export(data_dir, verify=False)  # the trainer verifies every shard's sha256
  run_args = {"task": export["config"]["task"], "vocab": export["config"]["vocab_size"],
              "data_dir": data_dir, "model_dir": model_dir}
  _check_export(cmp, export, seed=seed, **run_args)
  _call(train_main, train_argv(cmp, seed=seed, **run_args), "longjax.train")
  if not (model_dir / "hf" / "config.json").exists():  # SIGTERM: the trainer saved and returned
    raise SystemExit(f"compare_methods: training of `{arm}` stopped before its export "
                     f"(was it preempted?); rerun the same command to resume from "
                     f"{model_dir}/checkpoints")
  return model_dir


def evaluate_arm(cmp: Comparison, model_dir: Path, tokenizer: str, out: Path) -> Path:
  """Runs the eval suite on one trained seed of one arm; returns OUT/eval/<its run's name>."""
  eval_dir = out / "eval" / model_dir.name
  if (eval_dir / "results.json").exists():
    print(f"{eval_dir}: already evaluated", flush=True)
    return eval_dir
  if not (model_dir / "hf" / "config.json").exists():
    raise SystemExit(f"compare_methods: {model_dir} holds no trained model (hf/config.json); "
                     "run the train stage first")
  from longjax.eval.__main__ import main as eval_main
  _call(eval_main, eval_argv(cmp, model_dir, tokenizer, eval_dir, out), "longjax.eval")
  return eval_dir


def eval_argv(cmp: Comparison, model: Path, tokenizer: str, eval_dir: Path,
              out: Path) -> list[str]:
  """The preset's eval suite on `model`, written to `eval_dir` (a trained `spm:` model is told
  its tokenizer; HF tokenizers travel inside the model directory)."""
  heldout = ["--heldout", str(heldout_extract(cmp, out))] if cmp.eval_heldout else []
  spm = ["--tokenizer", tokenizer] if cmp.tokenizer.startswith("spm:") else []
  return ["--model", str(model), *spm, "--lengths", cmp.eval_lengths,
          "--tasks", cmp.eval_tasks, "--samples", str(cmp.eval_samples),
          "--batch-size", str(cmp.eval_batch_size),
          "--prefill-chunk", str(cmp.eval_prefill_chunk),
          "--loss-sequences", str(cmp.loss_sequences), "--out", str(eval_dir),
          *heldout, *(["--gold-loglik"] if cmp.gold_loglik else [])]


def evaluate_reference(cmp: Comparison, spec: str, out: Path) -> Path:
  """`NAME=MODEL`: the preset's eval suite on a model without training (lengths beyond its
  window allowed: that is what the row shows), recorded as OUT/results/reference_<name>.json."""
  from longjax.eval.__main__ import main as eval_main
  name, _, model = spec.partition("=")
  if not name or not model:
    raise SystemExit(f"compare_methods: --evaluate-reference {spec!r}: expected NAME=MODEL_DIR")
  eval_dir = out / "eval" / f"reference_{name}"
  if not (eval_dir / "results.json").exists():
    argv = eval_argv(cmp, Path(model), tokenizer_spec(cmp, out), eval_dir, out)
    _call(eval_main, [*argv, "--allow-extrapolation"], "longjax.eval")
  return records.write_reference(out, name, eval_dir)


def heldout_extract(cmp: Comparison, out: Path) -> Path:
  """OUT/heldout/<name>: the preset's held-out documents cut to `eval_heldout_chars` each, the
  one file every arm is evaluated on (written by the export stage, carried with OUT/data)."""
  name = Path(cmp.eval_heldout).name
  return out / "heldout" / name.replace(".jsonl", f"_{cmp.eval_heldout_chars // 1000}k.jsonl")


def write_heldout_extract(cmp: Comparison, out: Path) -> None:
  from longjax.eval.heldout import extract
  path = heldout_extract(cmp, out)
  if not path.exists():
    path.parent.mkdir(parents=True, exist_ok=True)
    extract(cmp.eval_heldout, path, cmp.eval_heldout_chars)


def _each_arm(stage: str, arms: Sequence[Arm], fn: Callable[[str, int], object]) -> None:
  for i, (method, seed) in enumerate(arms):
    t = _stage(f"{stage} arm {i + 1}/{len(arms)}: {method}, seed {seed}")
    fn(method, seed)
    _done(t)


def run_stages(cmp: Comparison, preset: str, stages: Sequence[str], arms: Sequence[Arm],
               out: Path) -> None:
  """Runs the selected stages, in STAGES order, for `arms` (seed 0 of every method first)."""
  tokenizer = tokenizer_spec(cmp, out)
  methods = [m for m in cmp.methods if m in {a for a, _ in arms}]
  if "index" in stages:
    t = _stage(f"index: synthesis index ({', '.join(methods)})")
    build_index(cmp, methods, out)
    _done(t)
  if "inspect" in stages:
    t = _stage("inspect: data diagnostics (synth inspect)")
    inspect_data(cmp, out)
    _done(t)
  if "export" in stages:
    import longjax.tasks
    longjax.tasks.register(out / "index", replay_ratio=REPLAY_SHARE)
    records.write_synthesis(out, out / "index", tokenizer, cmp.length)
    if cmp.eval_heldout:
      write_heldout_extract(cmp, out)
    _each_arm("export", arms, lambda m, s: export_arm(cmp, m, s, tokenizer, out))
  if "train" in stages:
    _each_arm("train", arms, lambda m, s: train_arm(cmp, m, s, out))
  if "eval" in stages:
    def evaluate(method: str, seed: int) -> None:
      evaluate_arm(cmp, out / "runs" / records.arm_name(method, seed), tokenizer, out)
      print(f"wrote {records.write_record(out, method, seed, cmp.replay_share)}", flush=True)
    _each_arm("eval", arms, evaluate)
  if "comparison" in stages:
    from comparison import write_comparison
    t = _stage("comparison")
    print(write_comparison(out, f"{preset}: methods at {cmp.length} tokens"))
    _done(t)


def _csv(choices: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
  def parse(text: str) -> tuple[str, ...]:
    items = tuple(x for x in text.split(",") if x)
    unknown = [x for x in items if x not in choices]
    if unknown or not items:
      raise argparse.ArgumentTypeError(f"{text!r}: expected a comma list of {', '.join(choices)}")
    return items
  return parse


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
  parser.add_argument("--out", type=Path, required=True, help="output directory")
  parser.add_argument("--stages", type=_csv(STAGES), default=STAGES,
                      help=f"comma list of stages to run (default all: {','.join(STAGES)})")
  parser.add_argument("--methods", default=None, help="comma list: a subset of the preset's arms")
  seeds = parser.add_mutually_exclusive_group()
  seeds.add_argument("--seeds", type=int, default=1,
                     help="train and evaluate every arm this many times (seeds 0..N-1)")
  seeds.add_argument("--seed", default=None, help="comma list of seeds to run instead, e.g. 1")
  parser.add_argument("--evaluate-reference", default=None, metavar="NAME=MODEL_DIR",
                      help="instead of the stages: evaluate an untrained model (e.g. the base "
                      "checkpoint) with the preset's eval suite as reference row NAME")
  return parser


def _arms(parser: argparse.ArgumentParser, args: argparse.Namespace,
          cmp: Comparison) -> list[Arm]:
  """The selected (method, seed) pairs, every method's seed 0 first."""
  methods = tuple(args.methods.split(",")) if args.methods else cmp.methods
  unknown = sorted(set(methods) - set(cmp.methods))
  if unknown:
    parser.error(f"--methods {unknown} not in the preset's arms {cmp.methods}")
  if args.seed is not None:
    if not all(s.isdigit() for s in args.seed.split(",")):
      parser.error(f"--seed {args.seed!r}: expected a comma list of seeds >= 0, e.g. 0,2")
    seeds = sorted({int(s) for s in args.seed.split(",")})
  elif args.seeds < 1:
    parser.error(f"--seeds must be >= 1, got {args.seeds}")
  else:
    seeds = list(range(args.seeds))
  return [(method, seed) for seed in seeds for method in methods]


def _environment(cmp: Comparison, out: Path) -> None:
  """Devices and caches, set before jax is imported anywhere."""
  if cmp.cpu_devices:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TensorFlow would probe for a GPU
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={cmp.cpu_devices}")
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  # Every arm compiles the same train and eval programs: compile them once.
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(out / "jax_cache"))


def main(argv: list[str] | None = None) -> int:
  parser = _parser()
  args = parser.parse_args(argv)
  cmp = PRESETS[args.preset]
  arms = _arms(parser, args, cmp)
  out = args.out.resolve()
  _environment(cmp, out)
  start = time.time()
  if args.evaluate_reference:
    print(f"wrote {evaluate_reference(cmp, args.evaluate_reference, out)}")
    return 0
  run_stages(cmp, args.preset, args.stages, arms, out)
  print(f"\nstages {','.join(s for s in STAGES if s in args.stages)} done; outputs under {out}; "
        f"total {(time.time() - start) / 60:.1f} min")
  return 0


if __name__ == "__main__":
  sys.exit(main())
