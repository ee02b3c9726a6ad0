"""seqio caching of a longjax Task through Apache Beam's DirectRunner."""

import json

import apache_beam as beam
import seqio
from absl import flags
from seqio.scripts import cache_tasks_main

import longjax.tasks

L = 128


def test_beam_direct_runner_cache_matches_streaming(index_dir, tmp_path):
  longjax.tasks.register(index_dir, methods=["knn"], source_shards=3)
  name = "longjax_toy_knn_128"
  cache_dir = tmp_path / "cache"
  if not flags.FLAGS.is_parsed():  # run_pipeline reads cache_tasks_main's flags (defaults here)
    flags.FLAGS(["test_cache"])
  with beam.Pipeline(runner="DirectRunner") as pipeline:
    cache_tasks_main.run_pipeline(pipeline, [name], str(cache_dir))
  seqio.add_global_cache_dirs([str(cache_dir)])
  task = seqio.get_mixture_or_task(name)
  assert task.cache_dir is not None and task.cache_dir.startswith(str(cache_dir))
  key = lambda ex: (json.loads(ex["provenance"])["context"], ex["targets"].tolist())
  cached = sorted(key(ex) for ex in task.get_dataset(
      {"targets": L}, use_cached=True, shuffle=False).as_numpy_iterator())
  streamed = sorted(key(ex) for ex in task.get_dataset(
      {"targets": L}, shuffle=False).as_numpy_iterator())
  assert cached == streamed and len(cached) > 0
  assert task.get_cached_stats("train")["examples"] == len(streamed)
