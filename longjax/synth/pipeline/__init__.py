"""`synth build --runner ...`: the build's per-element work as Apache Beam pipelines.

    python -m longjax.synth build --corpus my_corpus_dir --out idx --methods quest,nextlong \
        --embedder minilm --shards 4 --runner DirectRunner \
        --direct_num_workers=2 --direct_running_mode=multi_processing

(`--runner DataflowRunner --project P --region R --temp_location gs://...`, or Flink/Spark
options, pass through the same way: every option `synth build` does not know goes to Beam.)

- `ingest`: read, validate, hash and deduplicate the corpus into the document store.
- `stages`: everything after it that is per document, per chunk, per keyword or per index
  shard: token counts, chunking, embeddings, Quest's queries, RAKE, keyword choice and inverted
  index (`keywords`), NExtLong's plans, and the neighbour lists searched shard by shard and
  merged exactly (`neighbours`).
- `runner`: what the pipelines share (options, scratch directory, records).

Every unit of work is fixed (an input file, a row range, a query part, a candidate, a keyword,
a shard and block of queries) and writes where this process (the driver) assembles it in
order, with the writers and the per-element functions the single-process build uses; so the
output does not depend on the number of workers or the order elements run in. The methods'
builds then run in the driver and find those artifacts finished. What stays in the driver,
because it needs the whole corpus in one process: building the ScaNN shards and choosing their
search (recall against exact search over all vectors), KNN's grouping and ICLM's path (greedy
passes where each step depends on the documents earlier steps used), Quest's split-ratio weights
(a ranking of every keyword) and sampler dry run, NExtLong's check samples, the budgets and
manifests (docs/scale.md).

Workers share the index directory with the driver (a local disk for DirectRunner; a shared
mount such as GCS FUSE or Filestore in a cluster) and load the store, tokenizer, embedder,
query predictor and index shard once per process (`DoFn.setup`, lazily), on their accelerators
when they have them.
"""
