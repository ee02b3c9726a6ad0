#!/bin/bash
# Issue 17, second part: Quest's keyword choice and inverted index now run in Beam (corpus_wide
# pipeline). The same Quest build as run3.sh in one process and with 2 Beam workers, one
# tokenizer thread each; then the two builds' artifacts compared byte for byte.
cd /work/wt17
export TOKENIZERS_PARALLELISM=false
R=experiments/bench/results
CFG='{"quest":{"predictor":"extractive","predictor_options":{"max_phrase_words":2,"phrases_per_query":12,"window_words":120},"min_keyword_df":20}}'
for NAME in single w2; do
  EXTRA=""
  [ $NAME = w2 ] && EXTRA="--runner DirectRunner --direct_num_workers=2 --direct_running_mode=multi_processing"
  OUT=/tmp/h17/bench/wiki_$NAME; rm -rf $OUT; LOG=$R/beam_build_wiki_keywords_$NAME.log
  echo "# corpus /tmp/h17/wiki: links to ../shared/corpora/wiki_en_2019-0{0..3}-of-04.jsonl.gz (24,512 articles)" > $LOG
  echo "# TOKENIZERS_PARALLELISM=false (one tokenizer thread per process)" >> $LOG
  echo "== $(date -Is) start; loadavg: $(cat /proc/loadavg)" >> $LOG
  echo "\$ TOKENIZERS_PARALLELISM=false python -m longjax.synth build --corpus /tmp/h17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config '$CFG' $EXTRA" >> $LOG
  /usr/bin/time -v /work/main/.venv/bin/python -m longjax.synth build --corpus /tmp/h17/wiki --out $OUT --methods quest --tokenizer smollm2 --lengths 16k --config "$CFG" $EXTRA 2>&1 | grep -v "it/s\]\|it/s$\|Converting and de-quant\|^INFO:\|semi_persistent\|apitools" >> $LOG
  echo "== $(date -Is) end; loadavg: $(cat /proc/loadavg)" >> $LOG
  /work/main/.venv/bin/python -c "import json; m=json.load(open('$OUT/manifest.json')); json.dump({'build': '$NAME', 'run': m['run'], 'corpus': m['counts']['corpus']}, open('$R/beam_build_wiki_keywords_$NAME.json','w'), indent=1)"
done
A=/tmp/h17/bench/wiki_single; B=/tmp/h17/bench/wiki_w2
for f in corpus/documents.jsonl quest/keywords/doc_keywords.jsonl quest/keywords/index.jsonl quest/keywords/keyword_df_top200.json quest/doc_tokens.npy; do
  if cmp -s $A/$f $B/$f; then echo "$f single==w2 True"; else echo "$f single==w2 False"; fi
done > $R/beam_build_wiki_keywords_compare.txt
/work/main/.venv/bin/python -c "
import json
a, b = (json.load(open(f'$A/quest/keywords/manifest.json')), json.load(open(f'$B/quest/keywords/manifest.json')))
print('quest/keywords/manifest.json counts, config, inputs, skipped single==w2', all(a[k] == b[k] for k in ('counts', 'config', 'inputs', 'skipped')))
print('keywords', a['counts']['keywords'], 'documents_indexed', a['counts']['documents_indexed'], 'of', a['counts']['documents'])
" >> $R/beam_build_wiki_keywords_compare.txt
echo done > /tmp/h17/bench/run4.done
