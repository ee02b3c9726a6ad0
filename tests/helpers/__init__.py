"""Helpers shared by the tests, in one place: import them as `from tests.helpers.X import ...`.

- `attention`: random q/k/v, packed segment ids, meshes over the simulated CPU devices, the
  dense reference and tolerances (ops and model tests).
- `training`: the tiny Llama in float32, a small TrainConfig, a run's logged metrics.
- `shakespeare_task`: a real byte-level SeqIO Task (importing it registers the Task).
- `synth`: a byte-level tokenizer and small on-disk document stores (synthesis, tasks).

The repository root is on `sys.path` through pytest's `pythonpath` setting (pyproject.toml).
"""
