"""The method-comparison driver: presets, seeds, and its table on hand-made result files."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
# pylint: disable=wrong-import-position
import comparison
import presets
import results
import run
import stats


def _interval(seeds: list[dict], weights: dict | None = None) -> stats.Interval:
  boot = stats.Bootstrap([{c: np.asarray(v) for c, v in s.items()} for s in seeds],
                         np.random.default_rng(0))
  return boot.interval(weights or {c: 1.0 for c in seeds[0]})


def test_bootstrap_of_constant_scores_has_zero_width():
  iv = _interval([{"a": [40.0] * 5, "b": [20.0] * 3}, {"a": [40.0] * 2, "b": [20.0] * 7}],
                 {"a": 0.5, "b": 0.5})
  assert (iv.mean, iv.lo, iv.hi) == (30.0, 30.0, 30.0)


def test_bootstrap_of_two_samples_spans_both():
  # Resampling [0, 100] gives means 0, 50, 100 with probabilities 1/4, 1/2, 1/4: both 2.5% tails
  # fall on the extremes.
  iv = _interval([{"a": [0.0, 100.0]}])
  assert (iv.mean, iv.lo, iv.hi) == (50.0, 0.0, 100.0)


def test_bootstrap_resamples_seeds_first():
  # Two seeds, each constant: only the seed draw varies, means 20, 40, 60 w.p. 1/4, 1/2, 1/4.
  iv = _interval([{"a": [20.0] * 4}, {"a": [60.0] * 4}])
  assert (iv.mean, iv.lo, iv.hi) == (40.0, 20.0, 60.0)


def test_bootstrap_interval_of_one_hit_in_four():
  # [0, 0, 0, 100]: k hits of 4 draws ~ Binomial(4, 1/4). P(k = 0) = 0.316 > 2.5%, so lo = 0;
  # P(k >= 3) = 0.051 > 2.5% > P(k = 4) = 0.004, so hi = 75.
  iv = _interval([{"a": [0.0, 0.0, 0.0, 100.0]}])
  assert (iv.mean, iv.lo, iv.hi) == (25.0, 0.0, 75.0)


def test_noise_verdicts():
  iv = lambda lo, hi: stats.Interval((lo + hi) / 2, lo, hi)  # noqa: E731
  arms = {"a": iv(60, 100), "b": iv(40, 80), "c": iv(10, 30)}
  assert stats.best_arm(arms, higher_is_better=True) == "a"
  assert stats.within_noise_of("a", arms) == ["b"]
  assert not stats.all_within_noise(arms)
  assert stats.all_within_noise({"a": iv(60, 100), "b": iv(40, 80), "c": iv(70, 75)})
  assert not stats.all_within_noise({"a": iv(0, 100)})
  assert stats.best_arm(arms, higher_is_better=False) == "c"


# ---- hand-made result files --------------------------------------------------------------

CONFIG_GIN = """\
# Macros:
# ==============================================================================
BATCH_SIZE = 4
SHUFFLE_SEED = {seed}
TASK_FEATURE_LENGTHS = {{'targets': 2048}}
TRAIN_STEPS = 40

# Parameters for model_config:
model_config.overrides = \\
    {{'hidden_size': 128,
     'vocab_size': 2048}}

# Parameters for TrainConfig:
TrainConfig.batch_size = %BATCH_SIZE
TrainConfig.seed = {seed}
TrainConfig.task_feature_lengths = %TASK_FEATURE_LENGTHS
TrainConfig.train_steps = %TRAIN_STEPS
seqio_batches.seed = %SHUFFLE_SEED
"""


def _loss(nll_last: float, per_sequence: bool) -> dict:
  log = {"buckets": [[0, 1024], [1024, 2048]], "nll_full": [6.0, nll_last],
         "gain_w512": [0.0, 0.25], "gain_w2048": [0.0, 0.0]}
  seq = {"source": "sotu", "keys": ["k"], "concatenated": False}
  return {"windows": [512, 2048], "length": 2048, "log": log,
          "sequences": [{**seq, "log": log} if per_sequence else seq] * 2}


def _write_eval(out: Path, method: str, seed: int, scores: dict, nll_last: float,
                gold: list[float], legacy: bool = False) -> None:
  """One eval dir: scores {(task, length): per-sample scores x 100}, gold NLLs per sample.

  legacy: the layout before per-sample values: task scores in predictions.jsonl, means else.
  """
  d = out / "eval" / f"{method}_seed{seed}"
  d.mkdir(parents=True)
  by_task: dict = {}
  for (task, n), v in scores.items():
    by_task.setdefault(task, {})[str(n)] = v
  res = {"lengths": [1024, 2048], "loss": _loss(nll_last, per_sequence=not legacy),
         "scores": {t: {n: sum(v) / len(v) for n, v in by.items()} for t, by in by_task.items()},
         "summary": {"categories": {"ruler": {"tasks": ["niah", "vt"]}}},
         "gold_loglik": {"niah": {"1024": {"nll": sum(gold) / len(gold), "exact": 0.0}}}}
  if legacy:
    (d / "predictions.jsonl").write_text("".join(
        json.dumps({"task": t, "length": n, "score": s / 100}) + "\n"
        for (t, n), v in scores.items() for s in v))
  else:
    res["per_sample"] = {"scores": by_task, "gold_loglik": {"niah": {"1024": {"nll": gold}}}}
  (d / "results.json").write_text(json.dumps(res))
  run_dir = out / "runs" / d.name
  run_dir.mkdir(parents=True)
  (run_dir / "config.gin").write_text(CONFIG_GIN.format(seed=seed))


def _scores(niah_1k, vt_1k, niah_2k, vt_2k) -> dict:
  return {("niah", 1024): niah_1k, ("vt", 1024): vt_1k,
          ("niah", 2048): niah_2k, ("vt", 2048): vt_2k}


@pytest.fixture(name="out")
def _out(tmp_path):
  """Three arms x two seeds: at 1k nextlong is perfect, knn near it, standard scores nothing;
  at 2k every arm is a coin flip (noise)."""
  flip = [0.0, 100.0, 0.0, 100.0]
  for seed in (0, 1):
    _write_eval(tmp_path, "nextlong", seed, _scores([100.0] * 4, [100.0] * 4, flip, flip),
                nll_last=5.0, gold=[1.0, 2.0])
    _write_eval(tmp_path, "knn", seed, _scores([100.0, 100.0, 0.0, 100.0], [100.0] * 4, flip,
                                               [0.0, 100.0, 100.0, 100.0]),
                nll_last=5.5, gold=[2.0, 2.0])
    _write_eval(tmp_path, "standard", seed, _scores([0.0] * 4, [0.0] * 4, flip, flip),
                nll_last=6.0, gold=[3.0, 3.0], legacy=True)
  index = tmp_path / "index" / "nextlong"
  index.mkdir(parents=True)
  (index / "manifest.json").write_text(json.dumps({"counts": {"budget": {"L2048": {
      "samples": 50, "sample_tokens": 102400, "documents_used": 120, "source_tokens": 110000,
      "source_tokens_dropped": 5500}}}}))
  return tmp_path


def _rows(table: str) -> dict[str, list[str]]:
  return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in table.splitlines() if line.startswith("| ")}


def test_table_intervals_markers_noise_and_floor(out):
  assert comparison.main([str(out), "--title", "t"]) == 0
  table = (out / "comparison.md").read_text()
  main = _rows(table.split("## Budgets")[0])
  assert main["method"] == ["seeds", "ruler 1k", "ruler 2k", "ruler avg", "lite_avg",
                            "gold-answer NLL", "NLL last bucket", "gain from >512 ctx"]
  assert list(main)[1:4] == ["standard", "knn", "nextlong"]  # presets.METHODS order
  col = {name: {m: main[m][i] for m in ("nextlong", "knn", "standard")}
         for i, name in enumerate(main["method"])}
  assert col["seeds"] == {"nextlong": "2", "knn": "2", "standard": "2"}
  # ruler 1k: nextlong 100 in every sample; knn's interval reaches 100 (niah all hits w.p.
  # (3/4)^4), so it is within noise of the best; standard scored 0 everywhere: a floor.
  assert col["ruler 1k"]["nextlong"] == "**100.0** [100.0, 100.0]"
  assert col["ruler 1k"]["knn"].startswith("87.5 [")
  assert col["ruler 1k"]["knn"].endswith(", 100.0] ≈")
  assert col["ruler 1k"]["standard"] == "0 (floor)"
  # NLL: lower is better, zero-width intervals that do not overlap; standard's gold NLL is a
  # mean only (legacy layout), so its interval covers seeds alone (†).
  assert col["NLL last bucket"] == {"nextlong": "**5.000** [5.000, 5.000]",
                                    "knn": "5.500 [5.500, 5.500]",
                                    "standard": "6.000 [6.000, 6.000]†"}
  assert col["gold-answer NLL"]["standard"] == "3.000 [3.000, 3.000]†"
  assert col["gold-answer NLL"]["nextlong"].startswith("**1.500** [1.000, ")
  verdict = dict(zip(main["method"][1:], main["*verdict*"][1:]))
  assert verdict["ruler 2k"] == "all arms within noise"
  assert verdict["gain from >512 ctx"] == "all arms within noise"
  assert verdict["ruler 1k"] == verdict["NLL last bucket"] == ""
  for marker in ("≈:", "all arms within noise:", "0 (floor):", "†:"):
    assert marker in table
  cmp = json.loads((out / "comparison.json").read_text())
  assert cmp["arms"]["knn"]["seeds"] == [0, 1]
  assert cmp["arms"]["nextlong"]["cells"]["gold-answer NLL"]["mean"] == 1.5
  assert cmp["arms"]["standard"]["cells"]["ruler 1k"]["floor"]
  assert [c["best"] for c in cmp["columns"]][:2] == ["nextlong", "knn"]
  assert (out / "comparison.png").stat().st_size > 0


def test_budget_table(out):
  comparison.write_comparison(out, "t")
  budget = _rows((out / "comparison.md").read_text().split("## Budgets")[1])
  # 40 steps x 4 rows x 2048 tokens = 327,680; passes = 327,680 x (1 - 0.1) / 102,400 = 2.88.
  assert budget["nextlong"] == ["327,680", "102,400", "2.88", "120", "5,500 (5.0%)"]
  assert budget["knn"] == ["327,680", "–", "–", "–", "–"]  # no budget in a manifest


def test_reader_takes_scores_from_predictions_in_the_legacy_layout(out):
  s = results.read_samples(out / "eval" / "standard_seed0")
  assert s.values["score"][("niah", 2048)].tolist() == [0.0, 100.0, 0.0, 100.0]
  assert s.aggregate_only == {"gold_nll", "nll_full", "gain_w512"}
  assert s.categories == {"ruler": ("niah", "vt")} and s.loss_window == 512


def test_run_config_and_seed_dirs(out):
  assert results.read_run_config(out / "runs" / "knn_seed1") == {
      "train_steps": 40, "batch_size": 4, "length": 2048, "data_seed": 1, "init_seed": 1,
      "init_from_hf": None}
  assert list(results.find_arms(out)["knn"]) == [out / "eval" / "knn_seed0",
                                                 out / "eval" / "knn_seed1"]


def test_seed_binds_data_order_and_init(tmp_path):
  """`train_argv` for seed k parses, with the demo gin file, to shuffle seed k and init seed k."""
  import gin  # pylint: disable=import-outside-toplevel
  from longjax.train.__main__ import parse  # pylint: disable=import-outside-toplevel
  cmp = presets.PRESETS["demo"]
  model_dir = tmp_path / "runs" / "knn_seed2"
  argv = run.train_argv(cmp, "longjax_bbc_knn_2k_mix", 2048, model_dir, seed=2)
  try:
    parse([a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")],
          [a[len("--gin."):] for a in argv if a.startswith("--gin.")])
    model_dir.mkdir(parents=True)
    (model_dir / "config.gin").write_text(gin.config_str())
  finally:
    gin.clear_config()
  config = results.read_run_config(model_dir)
  assert (config["data_seed"], config["init_seed"], config["length"]) == (2, 2, 2048)


def test_existing_seed_outputs_are_skipped(tmp_path, capsys):
  cmp = presets.PRESETS["demo"]
  (tmp_path / "runs" / "knn_seed1" / "hf").mkdir(parents=True)
  (tmp_path / "runs" / "knn_seed1" / "hf" / "config.json").write_text("{}")
  (tmp_path / "eval" / "knn_seed1").mkdir(parents=True)
  (tmp_path / "eval" / "knn_seed1" / "results.json").write_text("{}")
  model_dir = run.train_arm(cmp, "knn", 1, tmp_path / "index", "unused", tmp_path)
  assert model_dir == tmp_path / "runs" / "knn_seed1"
  assert run.evaluate_arm(cmp, model_dir, "unused", tmp_path) == tmp_path / "eval" / "knn_seed1"
  assert "already trained" in capsys.readouterr().out


def test_presets_are_valid_and_reject_unknown_methods():
  assert presets.PRESETS["demo"].cpu_devices == 8
  for preset in presets.PRESETS.values():
    assert (REPO / preset.train_gin).is_file()
  with pytest.raises(ValueError, match="unknown"):
    presets.Comparison(corpus="default", length=1024, embedder="minilm", tokenizer="spm:512",
                       train_gin="x.gin", methods=("standard", "bogus"))


def test_data_diagnostics_lead_the_table(out):
  """`synth inspect`'s table (OUT/inspect/inspect.json) comes first, with its interval cells."""
  stat = lambda mean, lo, hi: {"mean": mean, "ci95": [lo, hi]}
  per_method = lambda lrd: {
      "samples": 4, "per_sample": [{"tokens": 2048}], "documents": stat(4.0, 3.0, 5.0),
      "tokens_per_document": stat(512.0, 400.0, 700.0), "boundary_start": stat(0.0, 0.0, 0.0),
      "boundary_end": stat(3.0, 2.0, 4.0), "adjacent_similarity": stat(0.1, 0.0, 0.2),
      "nll_full": stat(3.0, 2.9, 3.1), "lrd_c512": lrd}
  result = {"corpus": "default", "length": 2048, "model": "smollm2", "contexts": [512],
            "scored_span": [1152, 1536], "methods": {
                "standard": per_method(stat(0.001, -0.02, 0.02)),
                "nextlong": per_method(stat(0.08, 0.02, 0.13))}}
  (out / "inspect").mkdir()
  (out / "inspect" / "inspect.json").write_text(json.dumps(result))
  assert comparison.main([str(out), "--title", "t"]) == 0
  table = (out / "comparison.md").read_text()
  diagnostics, trained = table.split("## Trained arms")
  assert "## Data diagnostics before training" in diagnostics
  rows = _rows(diagnostics)
  assert rows["nextlong"][-1] == "0.0800 [0.0200, 0.1300]"
  assert rows["standard"][-1] == "0.0010 [-0.0200, 0.0200]"
  assert "ruler 1k" in trained
  assert "one seed:" not in table  # the fixture's arms have two seeds each


def test_one_seed_says_its_intervals_miss_training_noise(out):
  for seed1 in (out / "eval").glob("*_seed1"):
    shutil.rmtree(seed1)
  assert comparison.main([str(out), "--title", "t"]) == 0
  assert "one seed: these intervals cover the eval samples only" in (
      out / "comparison.md").read_text()
