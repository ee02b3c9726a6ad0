"""The method-comparison driver: presets, seeds, and its table on hand-made result files."""

import dataclasses
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
# pylint: disable=wrong-import-position
import comparison
import presets
import records
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


def _paired(arms: dict) -> stats.Paired:
  return stats.Paired({a: [{c: np.asarray(v, dtype=float) for c, v in s.items()} for s in seeds]
                       for a, seeds in arms.items()}, np.random.default_rng(0))


def test_paired_difference_cancels_the_samples_difficulty():
  """b answers every sample one point better than a, on samples whose difficulty spans 0..99:
  each arm's own interval is wide and the two overlap, but the paired difference is exactly 1."""
  x = np.arange(100.0)
  assert _interval([{"c": x}]).lo < _interval([{"c": x + 1}]).hi  # unpaired: they overlap
  paired = _paired({"a": [{"c": x}], "b": [{"c": x + 1}]})
  assert paired.difference("b", "a", {"c": 1.0}) == stats.Interval(1.0, 1.0, 1.0)
  assert stats.within_noise_of("b", paired, {"c": 1.0}, ["a", "b"]) == []
  assert not stats.all_within_noise(paired, {"c": 1.0}, ["a", "b"])


def test_paired_difference_keeps_the_seed_noise():
  # a's seeds are constant 10 and 30, b's both 20: only a's seed draw varies; a's mean is 10, 20
  # or 30 w.p. 1/4, 1/2, 1/4, so a - b spans [-10, 10] and contains 0.
  paired = _paired({"a": [{"c": [10.0] * 4}, {"c": [30.0] * 4}],
                    "b": [{"c": [20.0] * 4}, {"c": [20.0] * 4}]})
  assert paired.difference("a", "b", {"c": 1.0}) == stats.Interval(0.0, -10.0, 10.0)
  assert stats.within_noise_of("b", paired, {"c": 1.0}, ["a", "b"]) == ["a"]
  assert stats.all_within_noise(paired, {"c": 1.0}, ["a", "b"])


def test_unequal_sample_counts_give_an_unpaired_difference():
  # a mean-only record (one value) cannot be paired: each arm's samples are drawn on their own.
  # a's mean is 0, 50 or 100 w.p. 1/4, 1/2, 1/4; b is constant 50: a - b spans [-50, 50].
  paired = _paired({"a": [{"c": [0.0, 100.0]}], "b": [{"c": [50.0]}]})
  assert paired.difference("a", "b", {"c": 1.0}) == stats.Interval(0.0, -50.0, 50.0)


def test_noise_verdicts():
  # c differs from a and b on every sample; a and b differ by one sample in four (not significant).
  paired = _paired({"a": [{"c": [100.0, 100.0, 0.0, 100.0]}], "b": [{"c": [100.0, 0.0, 0.0, 100.0]}],
                    "c": [{"c": [0.0, 0.0, 0.0, 0.0]}]})
  w = {"c": 1.0}
  assert stats.best_arm({"a": 75.0, "b": 50.0, "c": 0.0}, higher_is_better=True) == "a"
  assert stats.best_arm({"a": 75.0, "b": 50.0, "c": 0.0}, higher_is_better=False) == "c"
  assert stats.within_noise_of("a", paired, w, ["a", "b", "c"]) == ["b"]
  assert not stats.all_within_noise(paired, w, ["a", "b", "c"])
  assert stats.all_within_noise(paired, w, ["a", "b"])
  assert not stats.all_within_noise(paired, w, ["a"])


def test_lite_avg_of_overlapping_categories_is_the_evals_own():
  """Recall shares tasks with RULER: lite_avg must still be the mean of the categories'
  averages, as the eval's `summarize` reports it (the shared cells' weights add up)."""
  from longjax.eval.scoring import summarize  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  cats = {"ruler": ("niah", "vt"), "recall": ("json_kv", "niah")}
  cells = {(t, n): rng.uniform(0, 100, size=5) for t in ("niah", "vt", "json_kv")
           for n in (1024, 2048)}
  s = results.EvalSamples(values={"score": cells}, aggregate_only=frozenset(),
                          categories=cats, lengths=(1024, 2048))
  lite = next(c for c in comparison.columns(s) if c.name == "lite_avg")
  assert sum(lite.weights.values()) == pytest.approx(1.0)
  scores = {t: {n: float(cells[t, n].mean()) for n in (1024, 2048)}
            for t in ("niah", "vt", "json_kv")}
  expected = summarize(scores, [1024, 2048], cats)["lite_avg"]
  assert comparison._run_mean(s, lite) == pytest.approx(expected)  # pylint: disable=protected-access


def test_gain_noise_floor_is_the_largest_gain_where_it_must_be_zero():
  """Buckets ending at or before the 512-token window have the same context in both passes:
  their gains (means over sequences) are arithmetic noise; the bucket after 512 is not."""
  def evals(gains: list[list[float]]) -> results.EvalSamples:
    return results.EvalSamples(
        values={"gain_w512": {("loss", i): np.asarray(g) for i, g in enumerate(gains)}},
        aggregate_only=frozenset(), categories={}, lengths=(1024,),
        loss_buckets=((0, 128), (128, 256), (256, 512), (512, 1024)), loss_window=512)
  a = evals([[0.001, -0.003], [0.0, 0.0], [0.002, 0.002], [0.5, 0.7]])
  b = evals([[-0.0025, -0.0025], [0.0, 0.0], [0.0, 0.0], [0.9, 0.9]])
  assert comparison.gain_noise_floor([a, b]) == pytest.approx(0.0025)
  # a window shorter than every bucket: no bucket where the gain must be 0
  assert comparison.gain_noise_floor([dataclasses.replace(a, loss_window=64)]) is None


def test_pooled_run_variance_by_hand():
  # a: runs 1, 3 (mean 2, squares 1 + 1); b: 4, 6 (1 + 1); c has one run and adds nothing.
  assert stats.pooled_run_variance({"a": [1.0, 3.0], "b": [4.0, 6.0], "c": [5.0]}) == (2.0, 2)
  # Pooled, not averaged: squares 8 + 2 over 2 + 1 degrees of freedom (the mean of the two
  # arms' variances would be (4 + 2) / 2 = 3).
  assert stats.pooled_run_variance({"a": [1.0, 3.0, 5.0], "b": [0.0, 2.0]}) == (10 / 3, 3)
  variance, df = stats.pooled_run_variance({"a": [1.0], "b": [2.0]})
  assert np.isnan(variance) and df == 0


def test_run_noise_by_hand():
  # a's runs score 0, 2 and 2, 0: equal run means (s^2 = 0) but a run x sample interaction.
  # Two-way residuals of a: every cell +-1 (squares 4, (2 - 1)(2 - 1) = 1 df); b's runs agree
  # (0 on 1 df): pooled 4 / 2 = 2 per sample, / 2 samples = 1 for the mean of one run.
  arms = {"a": [{"c": [0.0, 2.0]}, {"c": [2.0, 0.0]}], "b": [{"c": [1.0, 1.0]}] * 2,
          "one": [{"c": [5.0, 5.0]}]}
  assert stats.run_noise(arms, {"c": 1.0}) == stats.RunNoise(0.0, 1.0, 2)
  assert stats.run_noise(arms, {"c": 0.5}) == stats.RunNoise(0.0, 0.25, 2)  # weights squared
  assert stats.run_noise({"a": arms["a"][:1], "one": arms["one"]}, {"c": 1.0}) is None


def test_seed_level_interval_by_hand():
  # Runs only: means 5 and 2, s^2 = 2 on 2 df: SE = sqrt(2 (1/2 + 1/2)) = sqrt(2),
  # t(0.975, 2) = 4.303 (the t table).
  iv = stats.seed_level_difference([4.0, 6.0], [1.0, 3.0], stats.RunNoise(2.0, 0.0, 2))
  assert iv.mean == 3.0
  assert iv.hi - iv.mean == pytest.approx(4.303 * np.sqrt(2.0), abs=1e-3)
  # No training noise: the sample variance alone, with the normal quantile 1.960.
  iv = stats.seed_level_difference([1.0], [0.0], stats.RunNoise(0.0, 0.0, 2), 0.25)
  assert (iv.lo, iv.hi) == pytest.approx((1.0 - 1.960 * 0.5, 1.0 + 1.960 * 0.5), abs=1e-3)
  # Both: runs 1 (1/1 + 1/1) = 2, samples 2, so SE = 2 and Welch-Satterthwaite df =
  # (2 + 2)^2 / (2^2 / 2) = 8, t(0.975, 8) = 2.306.
  iv = stats.seed_level_difference([1.0], [0.0], stats.RunNoise(1.0, 0.0, 2), 2.0)
  assert iv.hi - iv.mean == pytest.approx(2.306 * 2.0, abs=1e-3)
  # The interaction (1, x (1/2 + 1/2)) floors s^2 = 0 and is taken out of the sample variance:
  # 0.5 leaves nothing (SE 1, df 2); 3 leaves 2 (SE^2 3, df 3^2 / (1 / 2) = 18, t 2.101).
  noise = stats.RunNoise(0.0, 1.0, 2)
  iv = stats.seed_level_difference([1.0, 1.0], [1.0, 1.0], noise, 0.5)
  assert iv.hi == pytest.approx(4.303, abs=1e-3)
  iv = stats.seed_level_difference([1.0, 1.0], [1.0, 1.0], noise, 3.0)
  assert iv.hi == pytest.approx(2.101 * np.sqrt(3.0), abs=1e-3)


def test_seed_level_p_value_matches_its_interval():
  """p < 0.05 exactly when the 95% interval excludes 0; p by hand from the t table."""
  noise = stats.RunNoise(2.0, 0.0, 2)
  # t = 3 / sqrt(2) = 2.121 on 2 df: two-sided p = 0.168 (scipy-free: 1 - t / sqrt(2 + t^2)).
  iv = stats.seed_level_difference([4.0, 6.0], [1.0, 3.0], noise)
  t = 3 / np.sqrt(2)
  assert iv.p == pytest.approx(1 - t / np.sqrt(2 + t * t), abs=1e-9) and iv.lo < 0 < iv.hi
  iv = stats.seed_level_difference([8.0, 10.0], [1.0, 3.0], noise)
  assert iv.p < 0.05 and iv.lo > 0
  assert stats.seed_level_difference([1.0], [1.0], stats.RunNoise(0.0, 0.0, 2)).p == 1.0


def test_own_variance_difference_by_hand():
  """Each arm's own variance: a (4, 6) var 2, b (1, 1) var 0 floored by the interaction 0.5:
  SE^2 = 2/2 + 0.5/2 = 1.25; df = 1.25^2 / (1^2 / 1 + 0.25^2 / 1) = 1.470588."""
  noise = stats.RunNoise(99.0, 0.5, 2)  # the pool's s^2 is not used
  iv = stats.own_variance_difference([4.0, 6.0], [1.0, 1.0], noise)
  df = 1.25 ** 2 / (1 + 0.25 ** 2)
  assert iv.mean == 4.0
  assert iv.hi - iv.mean == pytest.approx(scipy_stats.t.ppf(0.975, df) * np.sqrt(1.25))
  assert iv.p == pytest.approx(2 * scipy_stats.t.sf(4.0 / np.sqrt(1.25), df))
  assert stats.own_variance_difference([1.0], [0.0, 2.0], noise) is None


def test_holm_by_hand():
  # Sorted 0.01, 0.02, 0.04, 0.30 times 4, 3, 2, 1: 0.04, 0.06, 0.08, 0.30 (running maximum).
  adj = stats.holm({"a": 0.04, "b": 0.01, "c": 0.30, "d": 0.02})
  assert adj == pytest.approx({"b": 0.04, "d": 0.06, "a": 0.08, "c": 0.30})
  # The running maximum: 0.02 x 2 = 0.04 stays above the later 0.03 x 1.
  assert stats.holm({"x": 0.02, "y": 0.03}) == pytest.approx({"x": 0.04, "y": 0.04})
  assert stats.holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})


def test_paired_sample_variance_by_hand():
  w = {"c": 1.0}
  # One run each: differences 1, 2, 3, 4, variance 5/3, over 4 samples.
  assert stats.paired_sample_variance([{"c": [1.0, 2.0, 3.0, 4.0]}], [{"c": [0.0] * 4}],
                                      w) == pytest.approx(5 / 12)
  # a's two runs average to 2 on every sample: a constant difference has no sample noise.
  assert stats.paired_sample_variance([{"c": [1.0, 2.0, 3.0, 4.0]}, {"c": [3.0, 2.0, 1.0, 0.0]}],
                                      [{"c": [0.0] * 4}], w) == 0.0
  # Different samples (counts): each mean's own variance, and weights enter squared.
  assert stats.paired_sample_variance([{"c": [0.0, 2.0]}], [{"c": [1.0, 1.0, 4.0]}],
                                      {"c": 0.5}) == pytest.approx(0.25 * (2 / 2 + 3 / 3))
  with pytest.raises(ValueError, match="runs of one arm hold"):
    stats.paired_sample_variance([{"c": [0.0, 2.0]}, {"c": [1.0]}], [{"c": [0.0]}], w)


# ---- hand-made result files --------------------------------------------------------------


def _train_manifest(out: Path, arm: str, seed: int) -> dict:
  """A trainer manifest as `longjax.train.trainer.write_manifest` writes it, for a run of 40
  steps of 4 x 2048 tokens from an export drawn with `seed`."""
  from longjax import io  # pylint: disable=import-outside-toplevel
  from longjax.models import LlamaConfig  # pylint: disable=import-outside-toplevel
  from longjax.train.optimizer import OptimizerConfig  # pylint: disable=import-outside-toplevel
  from longjax.train.trainer import TrainConfig  # pylint: disable=import-outside-toplevel
  config = TrainConfig(model_dir=str(out / "runs" / arm), train_steps=40, batch_size=4,
                       task_feature_lengths={"targets": 2048}, seed=seed,
                       optimizer=OptimizerConfig(learning_rate=3e-3, warmup_steps=3))
  model = LlamaConfig.preset("tiny", vocab_size=2048)
  export = {"kind": "export", "config": {"task": f"longjax_bbc_{arm.split('_')[0]}_2k_mix",
                                         "seed": seed, "tokenizer": "/cpu/out/spm2048.model",
                                         "vocab_size": 2048, "length": 2048},
            "counts": {"rows": 160, "tokens": 327680, "non_padding_tokens": 327000,
                       "examples": 500, "unique_documents": 300 + seed}}
  return {"kind": "train", "complete": True, "config": io.to_json(dataclasses.asdict(config)),
          "inputs": {"source": {"type": "longjax.train.arrayrecord.ArrayRecordSource",
                                "manifest": export, "seed": seed, "shuffle": True}},
          "counts": {"parameters": 1234, "steps": 40, "data_position": 40},
          "model": io.to_json(dataclasses.asdict(model))}


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
  (run_dir / "hf").mkdir(parents=True)
  (run_dir / "hf" / "config.json").write_text("{}")
  (run_dir / "manifest.json").write_text(json.dumps(_train_manifest(out, d.name, seed)))


def _scores(niah_1k, vt_1k, niah_2k, vt_2k) -> dict:
  return {("niah", 1024): niah_1k, ("vt", 1024): vt_1k,
          ("niah", 2048): niah_2k, ("vt", 2048): vt_2k}


def _write_arms(out: Path) -> list[tuple[str, int]]:
  """The eval, run and data files of three arms x two seeds: at 1k nextlong is perfect, knn near
  it, standard scores nothing; at 2k every arm is a coin flip (noise)."""
  flip = [0.0, 100.0, 0.0, 100.0]
  for seed in (0, 1):
    _write_eval(out, "nextlong", seed, _scores([100.0] * 4, [100.0] * 4, flip, flip),
                nll_last=5.0, gold=[1.0, 2.0])
    _write_eval(out, "knn", seed, _scores([100.0, 100.0, 0.0, 100.0], [100.0] * 4, flip,
                                               [0.0, 100.0, 100.0, 100.0]),
                nll_last=5.5, gold=[2.0, 2.0])
    _write_eval(out, "standard", seed, _scores([0.0] * 4, [0.0] * 4, flip, flip),
                nll_last=6.0, gold=[3.0, 3.0], legacy=True)
  (out / "data").mkdir()
  (out / "data" / records.SYNTHESIS).write_text(json.dumps({
      "tokenizer": {"spec": "/cpu/out/spm2048.model", "sha256": "ab" * 32}, "length": 2048,
      "budgets": {"nextlong": {"samples": 50, "sample_tokens": 102400, "documents_used": 120,
                               "source_tokens": 110000, "source_tokens_dropped": 5500}}}))
  return [(m, seed) for seed in (0, 1) for m in ("nextlong", "knn", "standard")]


@pytest.fixture(name="out")
def _out(tmp_path):
  """The records of `_write_arms`, and nothing else: every table below is rebuilt from
  OUT/results/*.json alone."""
  for method, seed in _write_arms(tmp_path):
    records.write_record(tmp_path, method, seed, replay_share=0.1)
  for stage in ("eval", "runs", "data"):
    shutil.rmtree(tmp_path / stage)
  return tmp_path


def _rows(table: str) -> dict[str, list[str]]:
  return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
          for line in table.splitlines() if line.startswith("| ")}


def test_table_intervals_markers_noise_and_floor(out):
  assert comparison.main([str(out), "--title", "t"]) == 0
  table = (out / "comparison.md").read_text()
  main = _rows(table.split("## Paired differences")[0])
  versus = _rows(table.split("## Paired differences")[1].split("## Budgets")[0])
  # nextlong answered every ruler-1k sample that standard missed; knn's gain over standard at
  # 2k (one sample in eight) is not significant.
  assert versus["nextlong"][0] == "+100.0 [100.0, 100.0] *"
  assert versus["knn"][1].startswith("+12.5 [0.0, ") and not versus["knn"][1].endswith("*")
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
  assert (out / "comparison_differences.png").stat().st_size > 0


def test_differences_with_a_means_only_eval_are_marked(out):
  """Standard's gold-answer NLL is a mean only (legacy layout): every difference from it leaves
  its eval-sample noise out and says so; differences of per-sample metrics carry no †."""
  comparison.write_comparison(out, "t")
  table = (out / "comparison.md").read_text()
  versus = _rows(table.split("## Paired differences")[1].split("## Training-seed")[0])
  level = _rows(table.split("## Seed-level")[1].split("## Budgets")[0])
  for rows, label in ((versus, "nextlong"), (level, "nextlong (2) − standard (2)")):
    header = next(iter(rows.values()))
    row = dict(zip(header, rows[label]))
    assert row["gold-answer NLL"].split(" *")[0].endswith("]†"), row
    assert "†" not in row["ruler 1k"]
  noise = _rows(table.split("## Training-seed noise")[1].split("## Seed-level")[0])
  assert "†" in dict(zip(noise["arm: seeds"], noise["standard: seed 1 − seed 0"]))[
      "gold-answer NLL"]
  assert "†" not in "".join(noise["nextlong: seed 1 − seed 0"])
  assert table.count("leaves its eval-sample noise out") == 3
  between = _rows(table.split("## Seed-level differences between")[1].split("## Budgets")[0])
  assert "†" not in "".join(between["nextlong (2) − knn (2)"])  # neither arm is means-only
  cmp = json.loads((out / "comparison.json").read_text())
  assert not cmp["versus_standard"]["knn"]["gold-answer NLL"]["per_sample"]
  assert cmp["versus_standard"]["knn"]["ruler 1k"]["per_sample"]


def test_two_seeds_of_one_arm_give_the_training_noise(tmp_path):
  """Seed 1 of standard answers one more ruler-1k niah sample of four than seed 0: its row in
  the seed-noise table is +12.5 at 1k (niah +25, vt 0) and 0 at 2k; one-seed arms have none."""
  zero, flip = [0.0] * 4, [0.0, 100.0, 0.0, 100.0]
  _write_eval(tmp_path, "standard", 0, _scores(zero, zero, flip, flip), 6.0, [3.0, 3.0])
  _write_eval(tmp_path, "standard", 1, _scores([100.0, 0.0, 0.0, 0.0], zero, flip, flip), 6.0,
              [3.0, 3.0])
  _write_eval(tmp_path, "knn", 0, _scores(zero, zero, flip, flip), 6.0, [3.0, 3.0])
  _write_eval(tmp_path, "quest", 0, _scores(zero, zero, flip, flip), 6.0, [3.0, 3.0])
  (tmp_path / "data").mkdir()
  (tmp_path / "data" / records.SYNTHESIS).write_text(json.dumps(
      {"tokenizer": {"spec": "t", "sha256": "ab" * 32}, "length": 2048, "budgets": {}}))
  for method, seed in (("standard", 0), ("standard", 1), ("knn", 0), ("quest", 0)):
    records.write_record(tmp_path, method, seed, replay_share=0.1)
  comparison.write_comparison(tmp_path, "t")
  noise = _rows((tmp_path / "comparison.md").read_text()
                .split("## Training-seed noise")[1].split("## Seed-level")[0])
  assert list(noise)[1:] == ["standard: seed 1 − seed 0"]
  row = dict(zip(noise["arm: seeds"], noise["standard: seed 1 − seed 0"]))
  assert row["ruler 1k"].startswith("+12.5 [0.0, ")
  assert row["ruler 2k"] == "+0.0 [0.0, 0.0]"

  # Seed level: standard's runs score 0 and 12.5 at ruler 1k, knn's one run 0, so s^2 =
  # 2 x 6.25^2 / 1 = 78.125 on 1 df. Standard's niah-1k runs (0 0 0 0 / 100 0 0 0) leave two-way
  # residuals -+37.5 and +-12.5 (x3): squares 3750 on 3 df, / 4 samples x weight 0.5^2 = 78.125
  # (the floor; vt adds nothing). Training part 78.125 (1 + 1/2) = 117.1875; the paired sample
  # variance (niah: -50 0 0 0, 625 / 4 x 0.25 = 39.0625) less the interaction 117.1875 leaves
  # 0, so df = 1.
  level = _rows((tmp_path / "comparison.md").read_text()
                .split("## Seed-level differences from")[1].split("## ")[0])
  row = dict(zip(level["method (runs)"], level["knn (1) − standard (2)"]))
  half = scipy_stats.t.ppf(0.975, 1) * np.sqrt(117.1875)
  assert row["ruler 1k"] == f"-6.2 [{-6.25 - half:.1f}, {-6.25 + half:.1f}]"
  assert row["ruler 2k"] == "+0.0 [0.0, 0.0]"
  # Between the other methods: quest's one run answers as knn's, so the difference is 0, its
  # paired sample variance 0, and the interval is the training noise alone: 78.125 (1 + 1).
  between = _rows((tmp_path / "comparison.md").read_text()
                  .split("## Seed-level differences between the other methods")[1]
                  .split("## ")[0])
  assert list(between)[1:] == ["quest (1) − knn (1)"]
  row = dict(zip(between["methods (runs)"], between["quest (1) − knn (1)"]))
  half = scipy_stats.t.ppf(0.975, 1) * np.sqrt(156.25)
  assert row["ruler 1k"] == f"+0.0 [{-half:.1f}, {half:.1f}]"
  cmp = json.loads((tmp_path / "comparison.json").read_text())
  assert cmp["arms"]["standard"]["run_means"]["ruler 1k"] == [0.0, 12.5]
  assert cmp["seed_level"]["df"] == 1
  # The family-wise check: every pair's lite_avg p-value, Holm-adjusted (3 pairs here).
  family = cmp["seed_level"]["family"]
  rows = family["rows"]
  assert family["column"] == "lite_avg" and family["comparisons"] == len(rows) == 3
  assert [r["p"] for r in rows] == sorted(r["p"] for r in rows)
  holm = stats.holm({r["difference"]: r["p"] for r in rows})
  assert [r["p_holm"] for r in rows] == pytest.approx([holm[r["difference"]] for r in rows])
  assert all(r["p_holm"] >= r["p"] for r in rows)
  assert [r["p_own_variance"] for r in rows] == [None] * 3  # knn and quest have one run each
  assert "## All pairs at once: lite_avg, Holm-adjusted" in (tmp_path / "comparison.md").read_text()


def test_budget_table(out):
  comparison.write_comparison(out, "t")
  budget = _rows((out / "comparison.md").read_text().split("## Budgets")[1])
  # 40 steps x 4 rows x 2048 tokens = 327,680; passes = 327,680 x (1 - 0.1) / 102,400 = 2.88;
  # the seeds' exports hold 300 and 301 documents.
  assert budget["nextlong"] == ["327,680", "300–301", "102,400", "2.88", "120",
                                "5,500 (5.0%)"]
  assert budget["knn"] == ["327,680", "300–301", "–", "–", "–", "–"]  # no synthesis budget


def test_a_synthesis_file_replaces_the_records_budgets(out, tmp_path):
  """A record's synthesis budget is the copy that travelled with its run (stale once the index
  is rebuilt); --synthesis takes every arm's from one file, with the same tokenizer."""
  budget = {"samples": 50, "sample_tokens": 204_800, "documents_used": 100,
            "source_tokens": 110_000, "source_tokens_dropped": 0}
  path = tmp_path / "synthesis.json"
  path.write_text(json.dumps({"tokenizer": {"sha256": "ab" * 32},
                              "budgets": {m: budget for m in ("standard", "knn", "nextlong")}}))
  comparison.write_comparison(out, "t", synthesis=path)
  rows = _rows((out / "comparison.md").read_text().split("## Budgets")[1])
  # passes = 327,680 x (1 - 0.1) / 204,800 = 1.44, for every arm alike
  assert rows["knn"] == rows["nextlong"] == ["327,680", "300–301", "204,800", "1.44", "100",
                                             "0 (0.0%)"]
  path.write_text(json.dumps({"tokenizer": {"sha256": "cd" * 32},
                              "budgets": {m: budget for m in ("standard", "knn", "nextlong")}}))
  with pytest.raises(ValueError, match="tokenizer"):
    comparison.write_comparison(out, "t", synthesis=path)
  path.write_text(json.dumps({"tokenizer": {"sha256": "ab" * 32}, "budgets": {"knn": budget}}))
  with pytest.raises(ValueError, match="no budget for 'standard'|no budget for 'nextlong'"):
    comparison.write_comparison(out, "t", synthesis=path)


def test_records_alone_rebuild_the_table(out):
  """The fixture left OUT/results only: the table, JSON and plot come from the records."""
  assert sorted(p.name for p in out.iterdir()) == ["results"]
  comparison.write_comparison(out, "t")
  assert (out / "comparison.png").stat().st_size > 0
  assert (out / "comparison_differences.png").stat().st_size > 0  # with a nextlong − knn row
  record = json.loads((out / "results" / "knn_seed1.json").read_text())
  training = record["training"]
  assert training["tokenizer"] == {"spec": "/cpu/out/spm2048.model", "vocab_size": 2048,
                                   "sha256": "ab" * 32}
  assert training["hyperparameters"]["learning_rate"] == 3e-3
  assert training["hyperparameters"]["replay_share"] == 0.1
  assert (training["training_tokens"], training["rope_theta"]) == (327680, 10000.0)
  assert training["data"]["export_seed"] == training["data"]["shuffle_seed"] == 1
  assert training["data"]["unique_documents"] == 301 and len(training["data"]["fingerprint"]) == 64
  assert record["eval"]["per_sample"]["scores"]["vt"]["2048"] == [0.0, 100.0, 100.0, 100.0]
  assert record["eval"]["loss"]["sequences"][0]["log"]["nll_full"] == [6.0, 5.5]


def test_committed_records_beside_other_files_rebuild_the_table(out, tmp_path):
  """A run's committed folder holds the records beside its export and index manifests: only
  the files named like records are read, and the table equals the one built from OUT/results."""
  committed = tmp_path / "committed"
  shutil.copytree(out / "results", committed)
  (committed / "export_knn_seed0.json").write_text('{"format": "longjax-export"}')
  (committed / "synthesis.json").write_text("{}")
  comparison.write_comparison(out, "t")
  rebuilt = tmp_path / "rebuilt"
  assert comparison.main([str(rebuilt), "--title", "t", "--records", str(committed)]) == 0
  assert (rebuilt / "comparison.md").read_text() == (out / "comparison.md").read_text()


@pytest.mark.parametrize("field, value", [("hyperparameters.learning_rate", 1e-3),
                                          ("tokenizer.sha256", "cd" * 32),
                                          ("rope_theta", 5e5), ("training_tokens", 163840)])
def test_arms_that_trained_differently_are_refused(out, field, value):
  path = out / "results" / "knn_seed1.json"
  record = json.loads(path.read_text())
  *parents, leaf = field.split(".")
  node = record["training"]
  for key in parents:
    node = node[key]
  node[leaf] = value
  path.write_text(json.dumps(record))
  with pytest.raises(ValueError, match=rf"arm knn_seed1 differs from arm \w+_seed0 in "
                                       rf"training\.{field}: {value!r} vs "):
    comparison.write_comparison(out, "t")
  assert comparison.main([str(out)]) == 2 and not (out / "comparison.md").exists()


def test_reference_rows_are_shown_but_not_judged(out, tmp_path_factory):
  """A model evaluated without training: a reference row, outside the equality check (it has no
  training summary) and the verdicts, though it beats every arm."""
  ref = tmp_path_factory.mktemp("ref")
  _write_eval(ref, "smollm2", 0, _scores([100.0] * 4, [100.0] * 4, [100.0] * 4, [100.0] * 4),
              nll_last=2.0, gold=[0.5, 0.5])
  assert comparison.main([str(out), "--title", "t", "--reference",
                          f"SmolLM2 as shipped={ref / 'eval' / 'smollm2_seed0'}"]) == 0
  record = json.loads((out / "results" / "reference_smollm2_as_shipped.json").read_text())
  assert record["reference"] and "training" not in record
  table = (out / "comparison.md").read_text()
  main = _rows(table.split("## Paired differences")[0])
  assert list(main)[-2:] == ["*SmolLM2 as shipped*", "*verdict*"]
  assert main["*SmolLM2 as shipped*"][:2] == ["ref", "100.0 [100.0, 100.0]"]
  assert main["nextlong"][1] == "**100.0** [100.0, 100.0]"  # still the best arm
  assert main["*SmolLM2 as shipped*"][6] == "2.000 [2.000, 2.000]"  # NLL last bucket, not bold
  assert "*reference* rows" in table
  assert "SmolLM2" not in table.split("## Paired differences")[1]


def test_eval_results_take_scores_from_predictions_in_the_legacy_layout(tmp_path):
  _write_eval(tmp_path, "standard", 0, _scores([0.0] * 4, [0.0] * 4, [0.0, 100.0, 0.0, 100.0],
                                              [0.0] * 4), nll_last=6.0, gold=[3.0], legacy=True)
  s = results.read_samples(results.eval_results(tmp_path / "eval" / "standard_seed0"))
  assert s.values["score"][("niah", 2048)].tolist() == [0.0, 100.0, 0.0, 100.0]
  assert s.aggregate_only == {"gold_nll", "nll_full", "gain_w512"}
  assert s.categories == {"ruler": ("niah", "vt")} and s.loss_window == 512


def test_seed_binds_data_order_and_init(tmp_path):
  """`train_argv` for seed k parses, with the demo gin file, to the export in DATA_DIR read with
  shuffle seed k, and init seed k; the token budget is gin's TRAIN_STEPS x BATCH_SIZE x L."""
  import gin  # pylint: disable=import-outside-toplevel
  from longjax.train.__main__ import parse  # pylint: disable=import-outside-toplevel
  from longjax.train.trainer import TrainConfig  # pylint: disable=import-outside-toplevel
  cmp = presets.PRESETS["demo"]
  arm = {"task": "longjax_bbc_knn_2k_mix", "vocab": 2048, "data_dir": tmp_path / "data" / "k",
         "model_dir": tmp_path / "runs" / "knn_seed2", "seed": 2}
  argv = run.train_argv(cmp, **arm)
  try:
    parse([a.split("=", 1)[1] for a in argv if a.startswith("--gin_file=")],
          [a[len("--gin."):] for a in argv if a.startswith("--gin.")])
    assert gin.query_parameter("run.source").selector.endswith("arrayrecord_batches")
    assert gin.query_parameter("DATA_DIR/macro.value") == str(arm["data_dir"])
    assert gin.query_parameter("SHUFFLE_SEED/macro.value") == 2
    assert gin.get_configurable(TrainConfig)().seed == 2
  finally:
    gin.clear_config()
  assert run.training_tokens(cmp, **arm) == 8 * 4 * 2048  # compare_demo.gin


def test_existing_seed_outputs_are_skipped(tmp_path, capsys):
  cmp = presets.PRESETS["demo"]
  (tmp_path / "runs" / "knn_seed1" / "hf").mkdir(parents=True)
  (tmp_path / "runs" / "knn_seed1" / "hf" / "config.json").write_text("{}")
  (tmp_path / "eval" / "knn_seed1").mkdir(parents=True)
  (tmp_path / "eval" / "knn_seed1" / "results.json").write_text("{}")
  model_dir = run.train_arm(cmp, "knn", 1, tmp_path)
  assert model_dir == tmp_path / "runs" / "knn_seed1"
  assert run.evaluate_arm(cmp, model_dir, "unused", tmp_path) == tmp_path / "eval" / "knn_seed1"
  assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("methods,embeds", [(["standard", "quest"], False),
                                             (["standard", "knn"], True)])
def test_index_stage_asks_for_the_accelerators_vectors_only_for_methods_that_embed(
    tmp_path, monkeypatch, methods, embeds):
  """`embed_elsewhere`: Standard and Quest build on the CPU machine without the embedding
  table; a method that embeds stops until the accelerator's vectors are in OUT."""
  calls = []
  monkeypatch.setattr(run, "_call", lambda main, argv, what: calls.append(argv))
  cmp = dataclasses.replace(presets.PRESETS["wiki_smollm2_16k"], corpus="default")
  if not embeds:
    run.build_index(cmp, methods, tmp_path)
    assert len(calls) == 1 and "--embedder" not in calls[0]
    return
  with pytest.raises(SystemExit, match="computed on an accelerator"):
    run.build_index(cmp, methods, tmp_path)
  assert [c[0] for c in calls] == ["build", "embed-inputs"]  # the store, then the table's inputs


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


def test_every_inspect_run_leads_with_lrd_against_standard(out):
  """One section per OUT/inspect*/ run (e.g. two reference models), each with every method's
  LRD minus Standard's: a constant offset by hand, and a difference whose interval spans the
  resampled range [0.08, 0.10]."""
  stat = lambda mean: {"mean": mean, "ci95": [mean, mean]}
  def method(values):
    return {"samples": len(values), "per_sample": [{"tokens": 2048, "lrd_c512": v}
                                                   for v in values],
            **{k: stat(0.0) for k in ("documents", "tokens_per_document", "boundary_start",
                                      "boundary_end", "nll_full", "lrd_c512")}}
  for name, model, standard in (("inspect_a", "smollm2", [0.0, 0.0, 0.0, 0.0]),
                                ("inspect_b", "trained16k", [0.0, 0.02, 0.0, 0.02])):
    (out / name).mkdir()
    (out / name / "inspect.json").write_text(json.dumps({
        "corpus": "c", "length": 2048, "model": model, "contexts": [512],
        "scored_span": [1536, 2048], "notes": [f"note of {name}"], "methods": {
            "standard": method(standard), "nextlong": method([0.1, 0.1, 0.1, 0.1])}}))
  assert comparison.main([str(out), "--title", "t"]) == 0
  diagnostics = (out / "comparison.md").read_text().split("## Trained arms")[0]
  a, b = diagnostics.split("### inspect_b")
  assert "### inspect_a: reference smollm2, scored tokens 1536–2048" in a
  assert "| nextlong | +0.1000 [+0.1000, +0.1000] * |" in a and "note of inspect_a" in a
  row = next(line for line in b.splitlines() if line.startswith("| nextlong | +"))
  mean, lo, hi = (float(x) for x in re.findall(r"[+-]\d\.\d+", row))
  assert mean == pytest.approx(0.09) and 0.08 <= lo < mean < hi <= 0.10 and row.endswith("* |")


def test_independent_difference_matches_the_normal_interval():
  """With many samples the bootstrap interval of a difference of two independent means is
  the normal one: diff ± 1.96 sqrt(var_a / n_a + var_b / n_b)."""
  rng = np.random.default_rng(1)
  a, b = rng.normal(1.0, 2.0, 4000), rng.normal(0.5, 1.0, 1000)
  d = stats.independent_difference(a, b, np.random.default_rng(0), resamples=4000)
  half = 1.96 * np.sqrt(a.var() / a.size + b.var() / b.size)
  assert d.mean == pytest.approx(a.mean() - b.mean())
  assert d.lo == pytest.approx(d.mean - half, abs=0.1 * half)
  assert d.hi == pytest.approx(d.mean + half, abs=0.1 * half)


def test_one_seed_says_its_intervals_miss_training_noise(out):
  for seed1 in (out / "results").glob("*_seed1.json"):
    seed1.unlink()
  assert comparison.main([str(out), "--title", "t"]) == 0
  assert "one seed: these intervals cover the eval samples only" in (
      out / "comparison.md").read_text()


# ---- the export stage and the TF-free train and eval stages -----------------------------

MANIFEST = "manifest.json"
_spec = importlib.util.spec_from_file_location("tasks_fixtures", REPO / "tests/tasks/conftest.py")
tasks_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tasks_fixtures)
byte_tokenizer_dir, corpus_file = tasks_fixtures.byte_tokenizer_dir, tasks_fixtures.corpus_file


def _export_standard(tmp_path, corpus_file, byte_tokenizer_dir,  # pylint: disable=redefined-outer-name
                     **comparison) -> presets.Comparison:
  """Builds a Standard index of the toy corpus at L=128 and runs the export stage for seeds 0
  and 1 of a comparison with `comparison`'s fields; returns that comparison."""
  from longjax.synth import build  # pylint: disable=import-outside-toplevel
  build.run_build(build.BuildOptions(corpus=str(corpus_file), out=tmp_path / "index",
                                     methods=("standard",), tokenizer=str(byte_tokenizer_dir),
                                     lengths=(128,)),
                  progress=lambda x, **_: x, log_fn=lambda _: None)
  cmp = presets.Comparison(corpus="unused", length=128, embedder="unused",
                           tokenizer=str(byte_tokenizer_dir), methods=("standard",),
                           train_gin="gin/experiments/compare_demo.gin", **comparison)
  run.run_stages(cmp, "t", ["export"], [("standard", 0), ("standard", 1)], tmp_path)
  return cmp


def test_export_stage_writes_each_arms_training_tokens(
    tmp_path, corpus_file, byte_tokenizer_dir):  # pylint: disable=redefined-outer-name
  """Each (method, seed) is exported to OUT/data/<arm> with exactly TRAIN_STEPS x BATCH_SIZE x L
  tokens drawn with seed k; the train stage refuses an export of another budget."""
  cmp = _export_standard(tmp_path, corpus_file, byte_tokenizer_dir,
                         train_bindings=("TRAIN_STEPS=3", "BATCH_SIZE=2"))
  for seed in (0, 1):
    manifest = json.loads((tmp_path / "data" / f"standard_seed{seed}" / MANIFEST).read_text())
    assert manifest["config"]["task"] == "longjax_toy_standard_128_mix"
    assert (manifest["counts"]["tokens"], manifest["config"]["seed"]) == (3 * 2 * 128, seed)
  synthesis = json.loads((tmp_path / "data" / records.SYNTHESIS).read_text())
  assert synthesis["tokenizer"]["sha256"] == records.tokenizer_sha256(str(byte_tokenizer_dir))
  assert synthesis["budgets"]["standard"]["samples"] > 0
  longer = dataclasses.replace(cmp, train_bindings=("TRAIN_STEPS=4", "BATCH_SIZE=2"))
  with pytest.raises(SystemExit, match="holds 768 tokens drawn with seed 1, but this arm trains "
                                       "on 1024 tokens with seed 1"):
    run.train_arm(longer, "standard", 1, tmp_path)


def _export_provenance_seeds(data_dir: Path) -> set[int]:
  """The synthesis seeds in the provenance of every example packed into an export's rows."""
  import row_context  # pylint: disable=import-outside-toplevel
  return {p["seed"] for _, provenance in row_context.export_rows(data_dir)
          for p in provenance if p}


@pytest.mark.parametrize("fresh", [False, True])
def test_fresh_samples_draws_each_seeds_own_synthesis(
    fresh, tmp_path, corpus_file, byte_tokenizer_dir):  # pylint: disable=redefined-outer-name
  """With `fresh_samples`, seed k's export streams synthesis seed k (its rows' provenance says
  so, and its rows are not seed 0's); without it both seeds stream synthesis seed 0."""
  import seed_rows  # pylint: disable=import-outside-toplevel
  _export_standard(tmp_path, corpus_file, byte_tokenizer_dir, replay=False, fresh_samples=fresh,
                   train_bindings=("TRAIN_STEPS=4", "BATCH_SIZE=2"))
  data = tmp_path / "data"
  assert _export_provenance_seeds(data / "standard_seed0") == {0}
  assert _export_provenance_seeds(data / "standard_seed1") == ({1} if fresh else {0})
  if fresh:  # another draw: the rows differ too (8 rows of 128 tokens each)
    shared = seed_rows.compare(seed_rows.row_digests(data / "standard_seed0"),
                               seed_rows.row_digests(data / "standard_seed1"))["shared_distinct"]
    assert shared < 8


def test_train_and_eval_stages_import_no_tensorflow_seqio_or_scann(tmp_path):
  """`--stages train,eval` on an accelerator machine without TensorFlow, seqio or ScaNN: run.py's
  path (here on finished outputs, which it turns into a record), then every module of the
  trainer, eval and model packages and the tokenizer libraries that the entry points it calls
  import lazily, leave none of them in sys.modules."""
  _write_arms(tmp_path)
  code = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(REPO / "experiments" / "compare_methods")!r})
import run
run.main(["--preset", "demo", "--out", {str(tmp_path)!r}, "--stages", "train,eval",
          "--methods", "knn", "--seed", "1"])
import longjax.eval, longjax.models, longjax.train
for package in (longjax.train, longjax.eval, longjax.models):
  for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(module.name)
import longjax.bundled_texts  # the eval's held-out text
from transformers import AutoModelForCausalLM, AutoTokenizer  # load_tokenizer, smollm2
import sentencepiece
print(sorted({{m.split(".")[0] for m in sys.modules}} & {{"tensorflow", "seqio", "scann"}}))
"""
  done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.splitlines()[-1] == "[]", done.stdout[-2000:]
  assert (tmp_path / "results" / "knn_seed1.json").is_file()


def test_tokenizer_fingerprint_ignores_how_the_files_were_loaded(tmp_path):
  """Two saves of one tokenizer that differ only in transformers' loader flags share a
  fingerprint; a change to the tokenizer itself (a special token) does not."""
  def save(name: str, **config) -> str:
    d = tmp_path / name
    d.mkdir()
    (d / "tokenizer.json").write_text('{"model": {"vocab": {"a": 0}}}')
    (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", **config}))
    return str(d)

  offline = records.tokenizer_sha256(save("offline", local_files_only=True, is_local=True))
  online = records.tokenizer_sha256(save("online", local_files_only=False))
  other = records.tokenizer_sha256(save("other", eos_token="<eos>", local_files_only=True))
  assert offline == online != other


def test_rebuilt_exports_must_match_the_committed_fingerprints(tmp_path, capsys):
  """verify_exports: equal shards and tokenizer pass, a changed shard or tokenizer fails, and a
  new arm's manifest is recorded beside the committed ones."""
  import verify_exports
  run, results = tmp_path / "run", tmp_path / "results"
  results.mkdir()

  def export(sha: str) -> dict:
    return {"shards": [{"file": "rows-00000-of-00001.arrayrecord", "sha256": sha}]}

  def write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))

  write(results / "synthesis.json", {"tokenizer": {"sha256": "t1"}})
  write(results / "export_standard_seed0.json", export("a"))
  write(run / "data" / "synthesis.json", {"tokenizer": {"sha256": "t1"}})
  write(run / "data" / "standard_seed0" / "manifest.json", export("a"))
  write(run / "data" / "quest_seed0" / "manifest.json", export("q"))
  assert verify_exports.main([str(run), str(results)]) == 0
  assert json.loads((results / "export_quest_seed0.json").read_text())["shards"][0]["sha256"] == "q"
  write(run / "data" / "standard_seed0" / "manifest.json", export("b"))
  assert verify_exports.main([str(run), str(results)]) == 1
  assert "standard_seed0: DIFFERS" in capsys.readouterr().out
  write(run / "data" / "standard_seed0" / "manifest.json", export("a"))
  write(run / "data" / "synthesis.json", {"tokenizer": {"sha256": "t2"}})
  assert verify_exports.main([str(run), str(results)]) == 1


def test_rebuilt_embedding_table_must_have_the_committed_vectors(tmp_path, capsys):
  """verify_exports: the first embedding table is recorded; a later one with the same shards
  passes, one with a changed shard fails and names it, and so does a shard whose file no longer
  matches its manifest."""
  import verify_exports
  run, results = tmp_path / "run", tmp_path / "results"
  results.mkdir()

  def table(*contents: str) -> None:
    """A returned table whose shard i holds contents[i], with its manifest."""
    path = run / "embedding_table" / "manifest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, c in enumerate(contents):
      (path.parent / f"vectors-{i:05d}.npy").write_text(c)
    path.write_text(json.dumps({"inputs": {"shards": {
        f"vectors-{i:05d}.npy": hashlib.sha256(c.encode()).hexdigest()
        for i, c in enumerate(contents)}}}))

  table("a", "b")
  assert verify_exports.main([str(run), str(results)]) == 0
  assert "embedding table: new" in capsys.readouterr().out
  committed = results / "index_manifests" / "embedding_table.json"
  assert json.loads(committed.read_text())["inputs"]["shards"]["vectors-00001.npy"] == \
      hashlib.sha256(b"b").hexdigest()
  assert verify_exports.main([str(run), str(results)]) == 0
  assert "2 shards, identical" in capsys.readouterr().out
  table("a", "c")
  assert verify_exports.main([str(run), str(results)]) == 1
  assert "DIFFERS" in (out := capsys.readouterr().out) and "vectors-00001.npy" in out
  table("a")
  assert verify_exports.main([str(run), str(results)]) == 1
  table("a", "b")  # a shard damaged on its way back: named before any comparison
  (run / "embedding_table" / "vectors-00001.npy").write_text("x")
  assert verify_exports.main([str(run), str(results)]) == 1
  assert "missing or not matching their manifest (vectors-00001.npy)" in capsys.readouterr().out



def test_inspect_section_carries_the_training_overlap_where_measured(tmp_path):
  """The committed wiki16k inspect runs: the one with overlap.md beside its scores gets that
  table under its own LRD rows, the other gets none."""
  committed = REPO / "experiments" / "compare_methods" / "results" / "wiki16k"
  for name in ("inspect_shipped_prefix8192", "inspect_standard_seed2"):
    (tmp_path / name).mkdir()
    shutil.copy(committed / name / "inspect.json", tmp_path / name / "inspect.json")
  (tmp_path / "inspect_standard_seed2" / "overlap.md").write_text("| standard | 1.000 |\n")
  text = "\n".join(comparison._inspect_markdown(tmp_path))  # pylint: disable=protected-access
  assert text.count("| standard | 1.000 |") == 1
  assert text.index("### inspect_standard_seed2") < text.index("| standard | 1.000 |")
  assert text.index("### inspect_shipped_prefix8192") < text.index("### inspect_standard_seed2")
