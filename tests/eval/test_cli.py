"""`python -m longjax.eval`: clear errors for bad input, and a tiny random model end to end."""

import json
import shutil

import pytest
from flax import nnx

from longjax.eval.__main__ import main
from longjax.eval.report import load_results
from longjax.models import Llama, LlamaConfig, save_hf

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _copy_tokenizer(src, dst):
  for name in TOKENIZER_FILES:
    shutil.copy(src / name, dst / name)


def _config_only(path, **fields):
  """A model dir holding just config.json (the checks run before any weights are read)."""
  path.mkdir(parents=True)
  cfg = LlamaConfig.preset("tiny").to_hf_dict()
  cfg.update(fields)
  (path / "config.json").write_text(json.dumps(cfg))
  return path


def _fails(capsys, argv, message):
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert message in err, err


def test_missing_model_dir(tmp_path, capsys):
  _fails(capsys, ["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
         f"model directory not found: {tmp_path / 'nope'}")


def test_dir_without_config(tmp_path, capsys):
  (tmp_path / "run").mkdir()
  _fails(capsys, ["--model", str(tmp_path / "run"), "--out", str(tmp_path / "o")],
         "no config.json")


def test_length_beyond_max_positions(tmp_path, capsys, smol_dir):
  model = _config_only(tmp_path / "m", max_position_embeddings=2048)
  _copy_tokenizer(smol_dir, model)
  _fails(capsys, ["--model", str(model), "--lengths", "1k,4k", "--out", str(tmp_path / "o")],
         "length 4k (4096 tokens) exceeds the model's max_position_embeddings (2048)")


def test_tokenizer_mismatch(tmp_path, capsys, smol_dir):
  model = _config_only(tmp_path / "m", vocab_size=1000)
  _copy_tokenizer(smol_dir, model)
  _fails(capsys, ["--model", str(model), "--lengths", "1k", "--out", str(tmp_path / "o")],
         "tokenizer mismatch: tokenizer")


def test_length_too_short_for_a_task(tmp_path, capsys, smol_dir):
  model = _config_only(tmp_path / "m")
  _copy_tokenizer(smol_dir, model)
  _fails(capsys, ["--model", str(model), "--lengths", "512", "--tasks", "json_kv",
                  "--out", str(tmp_path / "o")],
         "task json_kv: even 6 pairs do not fit 412 tokens")


def test_missing_tokenizer_and_bad_flags(tmp_path, capsys):
  model = _config_only(tmp_path / "m")
  _fails(capsys, ["--model", str(model), "--out", str(tmp_path / "o")], "pass --tokenizer DIR")
  _fails(capsys, ["--model", str(model), "--lengths", "4q", "--out", str(tmp_path / "o")],
         "--lengths: length '4q'")
  _fails(capsys, ["--model", str(model), "--tasks", "niah_x", "--out", str(tmp_path / "o")],
         "--tasks: unknown task 'niah_x'")


def test_tiny_model_end_to_end_from_training_model_dir(tmp_path, capsys, smol_dir):
  """A MODEL_DIR with the trainer's hf/ export and the tokenizer passed separately."""
  model_dir = tmp_path / "run"
  save_hf(Llama(LlamaConfig.preset("tiny", dtype="float32"), rngs=nnx.Rngs(0)),
          model_dir / "hf")
  out = tmp_path / "eval"
  argv = ["--model", str(model_dir), "--tokenizer", str(smol_dir), "--lengths", "1k",
          "--tasks", "niah_single_1,json_kv", "--samples", "2", "--batch-size", "2",
          "--max-new-tokens", "8", "--gold-loglik", "--loss-sequences", "1", "--loss-length", "512",
          "--loss-windows", "128",
          "--out", str(out)]
  assert main(argv) == 0
  stdout = capsys.readouterr().out
  assert "| niah_single_1 | " in stdout and "Loss by position" in stdout
  assert "Gold answer, teacher-forced" in stdout
  names = {p.name for p in out.iterdir()}
  assert {"results.json", "results.md", "predictions.jsonl", "manifest.json",
          "scores_vs_length.png", "loss_by_position.png"} <= names
  results = load_results(out / "results.json")
  assert results["model"] == str(model_dir / "hf")
  assert set(results["scores"]) == {"niah_single_1", "json_kv"}
  preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  assert len(preds) == 4 and all(p["generated_tokens"] <= 8 for p in preds)
  # The per-task score is the mean of the per-sample scores the scorer gave.
  for task in ("niah_single_1", "json_kv"):
    mine = [p["score"] for p in preds if p["task"] == task]
    assert results["scores"][task][1024] == pytest.approx(100 * sum(mine) / len(mine))
  assert set(results["gold_loglik"]) == {"niah_single_1", "json_kv"}
  assert results["gold_loglik"]["json_kv"]["1024"]["nll"] > 0
  assert results["boundaries"]["start"] == [] and results["boundaries"]["end"] == [0]
  # Per-sample values (for bootstrap intervals): example i's score x 100, gold NLL, exact.
  per = results["per_sample"]
  for task in ("niah_single_1", "json_kv"):
    mine = sorted((p["index"], 100 * p["score"]) for p in preds if p["task"] == task)
    assert per["scores"][task][1024] == [s for _, s in mine]
    gold = per["gold_loglik"][task][1024]
    assert len(gold["nll"]) == len(gold["exact"]) == len(gold["tokens"]) == 2
    agg = results["gold_loglik"][task]["1024"]
    assert agg["nll"] == pytest.approx(sum(gold["nll"]) / 2)
    assert agg["exact"] == pytest.approx(100 * sum(gold["exact"]) / 2)
  loss = results["loss"]
  assert loss["length"] == 512 and loss["windows"] == [128]
  assert {s["source"] for s in loss["sequences"]} == {"sotu", "shakespeare"}
  for s in loss["sequences"]:
    assert len(s["log"]["nll_full"]) == len(loss["log"]["buckets"])
    assert len(s["1k"]["gain_w128"]) == len(loss["1k"]["buckets"])
  assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_interrupted_eval_resumes_with_the_finished_tasks(tmp_path, capsys, smol_dir,
                                                          monkeypatch):
  """A run stopped after its first (task, length) reruns only the rest and writes the results
  an uninterrupted run writes (the GPU machine's 10-minute commands need this), also with its
  prompts built by a worker process."""
  from longjax.eval import runner
  model_dir = tmp_path / "run"
  save_hf(Llama(LlamaConfig.preset("tiny", dtype="float32"), rngs=nnx.Rngs(0)),
          model_dir / "hf")
  argv = ["--model", str(model_dir), "--tokenizer", str(smol_dir), "--lengths", "1k",
          "--tasks", "niah_single_1,vt", "--samples", "2", "--batch-size", "2",
          "--max-new-tokens", "8"]
  assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
  calls, real = [], runner.run_task

  def stop_at_second(model, generator, task, *a, **kw):
    calls.append(task.name)
    if len(calls) == 2:
      raise KeyboardInterrupt("the machine went away")
    return real(model, generator, task, *a, **kw)

  monkeypatch.setattr(runner, "run_task", stop_at_second)
  with pytest.raises(KeyboardInterrupt):
    main([*argv, "--out", str(tmp_path / "resumed")])
  assert len(list((tmp_path / "resumed" / "parts").rglob("*.json"))) == 1
  calls.clear()
  monkeypatch.setattr(runner, "run_task",
                      lambda *a, **kw: calls.append(a[2].name) or real(*a, **kw))
  # the rest's prompts come from a worker process this time: same results
  assert main([*argv, "--out", str(tmp_path / "resumed"), "--prompt-workers", "1"]) == 0
  assert calls == ["vt"]  # niah_single_1 came from its saved part
  assert not (tmp_path / "resumed" / "parts").exists()
  whole = load_results(tmp_path / "whole" / "results.json")
  resumed = load_results(tmp_path / "resumed" / "results.json")
  assert resumed["scores"] == whole["scores"]
  assert resumed["per_sample"] == whole["per_sample"]
  # each piece's wall time travels with its saved part, so a resumed run still reports it
  assert set(resumed["seconds_by_piece"]) == {"niah_single_1@1024", "vt@1024"}
  assert all(t > 0 for t in resumed["seconds_by_piece"].values())
  # generation alone: the batches' times, inside each piece's wall time
  for piece, wall in resumed["seconds_by_piece"].items():
    assert 0 < resumed["generate_seconds_by_piece"][piece] <= wall
