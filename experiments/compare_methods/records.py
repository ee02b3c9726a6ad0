"""Per-arm raw records, OUT/results/<method>_seed<k>.json: everything the comparison table needs.

run.py writes one after it evaluates an arm (`write_record`), from the files its stages left:

  eval       OUT/eval/<arm>/results.json as the eval wrote it (results.eval_results): task scores
             and gold-answer NLLs per sample, and `loss`, the loss by position per held-out
             sequence;
  training   a summary of the trainer's OUT/runs/<arm>/manifest.json: tokenizer (spec, vocab
             size, sha256), RoPE theta, hyper-parameters, model shape, training tokens, and the
             exported data the run read (manifest fingerprint, seeds, tokens, unique documents);
  synthesis  the method's synthesis budget per pass, from OUT/data/synthesis.json, which the
             export stage writes from the index manifests so that it travels with OUT/data.

A reference record (`write_reference`: a model evaluated without training, such as SmolLM2 as
shipped) has `"reference": true`, a name and its eval, and no training or synthesis.
comparison.py rebuilds the table from OUT/results/*.json alone, after `check_comparable`.
"""

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import results as results_lib  # this directory is on sys.path (script, run.py, tests)
from longjax import io
from presets import ARMS

FORMAT = "longjax-compare-record-v1"
SYNTHESIS = "synthesis.json"  # in OUT/data
# What every trained arm must share (dotted paths into `training`): the comparison is only fair
# when only the arrangement of documents differs (specs/baselines.md §0).
COMPARED = ("tokenizer.sha256", "tokenizer.vocab_size", "rope_theta", "hyperparameters", "model",
            "training_tokens")
MODEL_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim",
                "max_position_embeddings", "rope_scaling", "tie_word_embeddings", "dtype",
                "param_dtype")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt",
                   "tokenizer_config.json", "special_tokens_map.json")
# What transformers writes into tokenizer_config.json about how the files were loaded (offline
# or not), not about the tokenizer: one SmolLM2 conversion wrote `local_files_only` true, another
# false, depending on HF_HUB_OFFLINE. Left out of the fingerprint.
LOAD_STATE_KEYS = frozenset({"is_local", "local_files_only"})


def _read_json(path: Path) -> Any:
  return json.loads(path.read_text())


def arm_name(method: str, seed: int) -> str:
  """The name of one training seed of one arm: its directory under OUT/data, runs and eval."""
  return f"{method}_seed{seed}"


def _tokenizer_file_sha256(path: Path) -> str:
  if path.name != "tokenizer_config.json":
    return io.file_sha256(path)
  config = _read_json(path)
  return io.fingerprint_json({k: v for k, v in config.items() if k not in LOAD_STATE_KEYS})


def tokenizer_sha256(spec: str) -> str:
  """sha256 of a tokenizer's files (a SentencePiece or GGUF file, or an HF directory's tokenizer
  files): equal on every machine that holds the same tokenizer, whatever its path."""
  if spec == "smollm2":
    from longjax.models import smollm2_checkpoint  # pylint: disable=import-outside-toplevel
    path = Path(smollm2_checkpoint())
  else:
    path = Path(spec)
  if path.is_file():
    return io.file_sha256(path)
  files = {f: _tokenizer_file_sha256(path / f) for f in TOKENIZER_FILES if (path / f).is_file()}
  if not files:
    raise ValueError(f"tokenizer {spec!r}: no tokenizer file ({', '.join(TOKENIZER_FILES)}) "
                     f"in {path}")
  return io.fingerprint_json(files)


def write_synthesis(out: Path, index_dir: Path, tokenizer: str, length: int) -> Path:
  """OUT/data/synthesis.json: the tokenizer (spec, sha256) and every built method's synthesis
  budget at `length`, for records written where OUT/index is not (the accelerator machine)."""
  budgets = {m: results_lib.read_budget(index_dir, m, length) for m in ARMS}
  return io.write_json(out / "data" / SYNTHESIS, {
      "tokenizer": {"spec": tokenizer, "sha256": tokenizer_sha256(tokenizer)},
      "length": length, "budgets": {m: b for m, b in budgets.items() if b}})


def _data_summary(source: Mapping[str, Any]) -> dict[str, Any] | None:
  """The exported data a run read (its manifest's `inputs.source`); None for another source."""
  export = source.get("manifest")
  if export is None:
    return None
  counts = export["counts"]
  return {"task": export["config"]["task"], "export_seed": export["config"]["seed"],
          "shuffle_seed": source.get("seed"), "fingerprint": io.fingerprint_json(export),
          **{k: counts.get(k) for k in ("tokens", "rows", "non_padding_tokens", "examples",
                                        "unique_documents")}}


def training_summary(manifest: Mapping[str, Any], synthesis: Mapping[str, Any] | None,
                     replay_share: float) -> dict[str, Any]:
  """What a trainer's MODEL_DIR/manifest.json says the arm trained with (module docstring)."""
  config, model = manifest["config"], manifest["model"]
  opt, step = config["optimizer"], config["step"]
  length = int(config["task_feature_lengths"]["targets"])
  source = manifest["inputs"]["source"]
  export_config = (source.get("manifest") or {}).get("config", {})
  return {
      "model_dir": config["model_dir"], "complete": manifest["complete"],
      "steps": manifest["counts"]["steps"], "init_seed": config["seed"],
      "tokenizer": {"spec": export_config.get("tokenizer"),
                    "vocab_size": export_config.get("vocab_size"),
                    "sha256": ((synthesis or {}).get("tokenizer") or {}).get("sha256")},
      "rope_theta": model["rope_theta"],
      "hyperparameters": {
          "train_steps": config["train_steps"], "batch_size": config["batch_size"],
          "length": length, "init_from_hf": config["init_from_hf"],
          **{k: opt[k] for k in ("learning_rate", "warmup_steps", "decay_steps", "min_lr_ratio",
                                 "b1", "b2", "eps", "weight_decay", "clip_norm")},
          **{k: step[k] for k in ("microbatches", "z_loss", "document_masking")},
          "replay_share": replay_share},
      "model": {**{k: model[k] for k in MODEL_FIELDS},
                "parameters": manifest["counts"]["parameters"]},
      "training_tokens": config["train_steps"] * config["batch_size"] * length,
      "data": _data_summary(source)}


def arm_record(out: Path, method: str, seed: int, replay_share: float) -> dict[str, Any]:
  """The record of one evaluated seed of one arm, from OUT/eval, OUT/runs and OUT/data."""
  arm = arm_name(method, seed)
  manifest = io.read_manifest(out / "runs" / arm)
  if manifest is None:
    raise ValueError(f"{out / 'runs' / arm}: no trainer manifest.json, so no training summary")
  path = out / "data" / SYNTHESIS
  synthesis = _read_json(path) if path.is_file() else None
  return {"format": FORMAT, "reference": False, "arm": arm, "method": method, "seed": seed,
          "eval_dir": str(out / "eval" / arm),
          "eval": results_lib.eval_results(out / "eval" / arm),
          "training": training_summary(manifest, synthesis, replay_share),
          "synthesis": ((synthesis or {}).get("budgets") or {}).get(method)}


def write_record(out: Path, method: str, seed: int, replay_share: float) -> Path:
  """Writes OUT/results/<method>_seed<k>.json (`arm_record`); returns its path."""
  return io.write_json(out / "results" / f"{arm_name(method, seed)}.json",
                       arm_record(out, method, seed, replay_share))


def write_reference(out: Path, name: str, eval_dir: Path) -> Path:
  """Writes OUT/results/reference_<name>.json: a model evaluated without training, shown as a
  reference row and left out of the equality check. Its RoPE theta is recorded when the eval's
  model directory is readable here."""
  results = results_lib.eval_results(eval_dir)
  config = Path(results.get("model", "")) / "config.json"
  slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
  return io.write_json(out / "results" / f"reference_{slug}.json", {
      "format": FORMAT, "reference": True, "name": name, "eval_dir": str(eval_dir),
      "eval": results,
      "rope_theta": _read_json(config).get("rope_theta") if config.is_file() else None})


RECORD_NAME = re.compile(rf"^(reference_.+|({'|'.join(ARMS)})_seed\d+)\.json$")


def read_records(directory: Path) -> list[dict[str, Any]]:
  """Every record in DIRECTORY (OUT/results, or a folder of committed records that also holds
  other JSON files), in file name order: the files named `<method>_seed<k>.json` or
  `reference_<name>.json`."""
  records = []
  for path in sorted(p for p in directory.glob("*.json") if RECORD_NAME.match(p.name)):
    record = _read_json(path)
    if record.get("format") != FORMAT:
      raise ValueError(f"{path}: not a comparison record (format {record.get('format')!r}, "
                       f"expected {FORMAT!r})")
    records.append(record)
  return records


def label(record: Mapping[str, Any]) -> str:
  """The table row of a record: its method, or a reference's name."""
  return record["name"] if record["reference"] else record["method"]


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{dotted path: leaf} of a nested dict."""
  if not isinstance(tree, Mapping) or not tree:
    return {prefix: tree}
  return {k: v for key, sub in tree.items()
          for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def _compared(record: Mapping[str, Any]) -> dict[str, Any]:
  if not record.get("training"):
    raise ValueError(f"arm {record['arm']}: its record has no training summary (a model "
                     "evaluated without training is a reference record: \"reference\": true)")
  return {k: v for k, v in _flat(record["training"]).items()
          if any(k == c or k.startswith(c + ".") for c in COMPARED)}


def check_comparable(records: Sequence[Mapping[str, Any]]) -> None:
  """Raises ValueError unless every trained arm shares the tokenizer, RoPE theta,
  hyper-parameters, model shape and training tokens (`COMPARED`); references are exempt."""
  trained = [r for r in records if not r["reference"]]
  if not trained:
    return
  first, want = trained[0], _compared(trained[0])
  for record in trained[1:]:
    got = _compared(record)
    for field in sorted(set(want) | set(got)):
      if got.get(field) != want.get(field):
        raise ValueError(
            f"arm {record['arm']} differs from arm {first['arm']} in training.{field}: "
            f"{got.get(field)!r} vs {want.get(field)!r}; every arm must train with the same "
            "tokenizer, RoPE theta, hyper-parameters and training tokens")
