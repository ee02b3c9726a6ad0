#!/bin/bash
# As run2.sh for Beam 1 and 2 workers, with one tokenizer thread per worker process.
cd /work/wt17b
while [ ! -f /tmp/b17/bench/run2.done ]; do sleep 5; done
export TOKENIZERS_PARALLELISM=false
R=experiments/bench/results
CFG='{"quest":{"predictor":"extractive","predictor_options":{"max_phrase_words":2,"phrases_per_query":12,"window_words":120},"min_keyword_df":20}}'
for W in 1 2; do
  NAME=w${W}_tok1; EXTRA="--runner DirectRunner --direct_num_workers=$W --direct_running_mode=multi_processing"
  OUT=/tmp/b17/bench/wiki_$NAME; rm -rf $OUT; LOG=$R/beam_build_wiki_$NAME.log
  echo "# corpus /tmp/b17/wiki: links to ../shared/corpora/wiki_en_2019-0{0..3}-of-04.jsonl.gz (24,512 articles)" > $LOG
  echo "# TOKENIZERS_PARALLELISM=false (one tokenizer thread per worker)" >> $LOG
  echo "== $(date -Is) start; loadavg: $(cat /proc/loadavg)" >> $LOG
  echo "\$ TOKENIZERS_PARALLELISM=false python -m longjax.synth build --corpus /tmp/b17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config '$CFG' $EXTRA" >> $LOG
  /usr/bin/time -v /work/main/.venv/bin/python -m longjax.synth build --corpus /tmp/b17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config "$CFG" $EXTRA 2>&1 | grep -v "it/s\]\|it/s$\|Converting and de-quant\|^INFO:\|semi_persistent\|apitools" >> $LOG
  echo "== $(date -Is) end; loadavg: $(cat /proc/loadavg)" >> $LOG
  /work/main/.venv/bin/python -c "import json; m=json.load(open('$OUT/manifest.json')); json.dump({'build': '$NAME', 'run': m['run'], 'corpus': m['counts']['corpus']}, open('$R/beam_build_wiki_$NAME.json','w'), indent=1)"
done
for d in corpus quest quest/queries token_counts; do du -sb /tmp/b17/bench/wiki_w2/$d; done > $R/beam_build_wiki_sizes.txt
echo done > /tmp/b17/bench/run3.done
