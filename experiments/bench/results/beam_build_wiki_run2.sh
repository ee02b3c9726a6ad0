#!/bin/bash
# Final-code measurements, one after another: Beam 1 and 2 workers, the single-process build, the stage rates.
cd /work/wt17b
while pgrep -f "/tmp/b17/bench/run.sh" > /dev/null; do sleep 5; done
R=experiments/bench/results
CFG='{"quest":{"predictor":"extractive","predictor_options":{"max_phrase_words":2,"phrases_per_query":12,"window_words":120},"min_keyword_df":20}}'
for W in 1 2 0; do
  if [ $W = 0 ]; then NAME=single; EXTRA=""; else NAME=w$W; EXTRA="--runner DirectRunner --direct_num_workers=$W --direct_running_mode=multi_processing"; fi
  OUT=/tmp/b17/bench/wiki_$NAME; rm -rf $OUT; LOG=$R/beam_build_wiki_$NAME.log
  echo "# corpus /tmp/b17/wiki: links to ../shared/corpora/wiki_en_2019-0{0..3}-of-04.jsonl.gz (24,512 articles)" > $LOG
  echo "== $(date -Is) start; loadavg: $(cat /proc/loadavg)" >> $LOG
  echo "\$ python -m longjax.synth build --corpus /tmp/b17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config '$CFG' $EXTRA" >> $LOG
  /usr/bin/time -v /work/main/.venv/bin/python -m longjax.synth build --corpus /tmp/b17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config "$CFG" $EXTRA 2>&1 | grep -v "it/s\]\|it/s$\|Converting and de-quant\|^INFO:\|semi_persistent\|apitools" >> $LOG
  echo "== $(date -Is) end; loadavg: $(cat /proc/loadavg)" >> $LOG
  /work/main/.venv/bin/python -c "import json; m=json.load(open('$OUT/manifest.json')); json.dump({'build': '$NAME', 'run': m['run'], 'corpus': m['counts']['corpus']}, open('$R/beam_build_wiki_$NAME.json','w'), indent=1)"
done
/work/main/.venv/bin/python - <<'PY' > $R/beam_build_wiki_compare.txt 2>&1
import json, filecmp, pathlib
a, b, c = (pathlib.Path(f"/tmp/b17/bench/wiki_{n}") for n in ("single", "w1", "w2"))
for rel in ("corpus/documents.jsonl", "quest/index.jsonl", "quest/doc_keywords.jsonl", "quest/doc_tokens.npy"):
  print(rel, "single==w1", filecmp.cmp(a / rel, b / rel, shallow=False), "single==w2", filecmp.cmp(a / rel, c / rel, shallow=False))
PY
PYTHONPATH=. /work/main/.venv/bin/python experiments/bench/build_stages.py --docs 2000 --out $R/build_stages_wiki_cpu2.json > /tmp/b17/bench/stages.out 2>&1
echo done > /tmp/b17/bench/run2.done
