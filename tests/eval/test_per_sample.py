"""The per-sample layout of results.json (`per_sample`), from hand-made records."""

import pytest

from longjax.eval.runner import per_sample, task_scores


def _rec(task, length, index, score):
  return {"task": task, "length": length, "index": index, "score": score}


def test_per_sample_lists_are_indexed_by_example_and_average_to_the_score():
  records = [_rec("vt", 4096, 1, 0.4), _rec("vt", 4096, 0, 1.0), _rec("vt", 8192, 0, 0.0),
             _rec("cwe", 4096, 0, 0.5), _rec("vt", 4096, 2, 0.0)]
  gold = [{"task": "vt", "length": 4096, "index": i, "gold_nll": nll, "gold_exact": ex,
           "gold_tokens": 7} for i, nll, ex in ((1, 2.5, False), (0, 0.5, True))]
  out = per_sample(records, gold)
  assert out == {
      "scores": {"vt": {4096: [100.0, 40.0, 0.0], 8192: [0.0]}, "cwe": {4096: [50.0]}},
      "gold_loglik": {"vt": {4096: {"nll": [0.5, 2.5], "exact": [True, False],
                                    "tokens": [7, 7]}}}}
  assert task_scores(records)["vt"][4096] == pytest.approx(sum(out["scores"]["vt"][4096]) / 3)
  assert per_sample(records)["gold_loglik"] is None


def test_per_sample_rejects_missing_examples():
  with pytest.raises(ValueError, match="task vt at 4096 lacks example indices 0..1"):
    per_sample([_rec("vt", 4096, 0, 1.0), _rec("vt", 4096, 2, 1.0)])
