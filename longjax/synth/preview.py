"""`python -m longjax.synth preview <task>`: show how a Task's samples are put together.

For span-based samples (Standard, KNN, ICLM, Quest, replay) it lists every piece with its token
range in the sample, the document (id and stable key) and which part of the document it is, so
one sees where the boundaries fall and which documents were cut. For NExtLong it lists the blocks:
each meta-chunk with its hard negatives (chunk id, source document, similarity rank order), and
how many meta-chunks survived the cut to T tokens. TF-free: the Task name is resolved with
`methods.task_names`, not through seqio.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from longjax.io import format_length, read_manifest
from longjax.models.tokenizer import Tokenizer
from longjax.synth import corpus
from longjax.synth.methods import METHODS, replay
from longjax.synth.methods.task_names import parse_task_name

_SNIPPET = 56


def _snippet(text: str, n: int = _SNIPPET) -> str:
  flat = text.replace("\n", "⏎")
  return flat if len(flat) <= n else flat[:n - 1] + "…"


def _spans_view(prov: dict[str, Any], store: corpus.DocumentStore,
                tokenizer: Tokenizer) -> list[str]:
  lines = [f"  {'sample tokens':>15}  {'doc':>6}  {'key':<18} {'doc tokens':>13}  piece"]
  pos = 0
  for span in prov["spans"]:
    keyword, (doc, start, end) = (span[0], span[1:]) if len(span) == 4 else (None, span)
    tokens = tokenizer.encode(store.text(doc))
    n = len(tokens) + 1  # + EOS
    cut = ("cut head " if start > 0 else "") + ("cut tail" if end < n else "")
    text = tokenizer.decode(tokens[start:min(end, len(tokens))])
    tag = f"[{keyword}] " if keyword is not None else ""
    lines.append(f"  {f'{pos}-{pos + end - start}':>15}  {doc:>6}  {store.key(doc)[:18]:<18} "
                 f"{f'{start}-{end}/{n}':>13}  {tag}{_snippet(text)}"
                 + (f"  ({cut.strip()})" if cut else ""))
    pos += end - start
  docs = {(s[1] if len(s) == 4 else s[0]) for s in prov["spans"]}
  lines.append(f"  {len(prov['spans'])} pieces from {len(docs)} documents, {pos} tokens")
  return lines


def _nextlong_view(prov: dict[str, Any], index_dir: Path) -> list[str]:
  from longjax.synth import chunking  # pylint: disable=import-outside-toplevel
  manifest_cfg = read_manifest(index_dir / "nextlong")["config"]
  chunks = chunking.open_chunk_store(index_dir, manifest_cfg["chunk_size"])
  lines = [f"  meta doc {prov['doc_id']}: p={prov['p']} meta-chunks, k={prov['k']} (last block "
           f"{prov.get('k_last')}), {prov['tokens_before_truncation']} tokens before the cut; "
           f"meta-chunks complete after the cut: {prov.get('meta_chunks_complete')}/{prov['p']}"
           f", shortfall {prov['shortfall']}"]
  for i, (meta, negs) in enumerate(zip(prov["meta_chunks"], prov["negatives"])):
    lines.append(f"  block {i + 1}: META chunk {meta}: {_snippet(chunks.text(meta))}")
    for rank, c in enumerate(negs[:5]):
      lines.append(f"      neg {rank + 1:>3}: chunk {c:>6} (doc {int(chunks.doc_of_chunk[c]):>5})"
                   f": {_snippet(chunks.text(c), 44)}")
    if len(negs) > 5:
      docs = {int(chunks.doc_of_chunk[c]) for c in negs}
      lines.append(f"      ... {len(negs) - 5} more negatives; {len(docs)} source documents")
  return lines


def preview(task: str, *, index_dir: str | Path, tokenizer: Tokenizer, seed: int = 0,
            num: int = 1, shard: int = 0, num_shards: int = 1) -> str:
  """A readable description of the first `num` samples of `task` (a Task or `_mix` name)."""
  index_dir = Path(index_dir)
  _, method, length, is_mix = parse_task_name(task)
  if method == replay.NAME:
    examples_fn = replay.replay_examples
  elif method in METHODS:
    examples_fn = METHODS[method].examples
  else:
    raise ValueError(f"task {task!r}: unknown method {method!r}; known: "
                     f"{sorted(METHODS) + [replay.NAME]}")
  store = corpus.open_store(index_dir)
  out = [f"{task}: method {method}, length {format_length(length)} ({length} tokens), "
         f"seed {seed}, shard {shard}/{num_shards}, index {index_dir}"]
  if is_mix:
    out.append(f"(a Mixture: showing its {method} Task; replay samples are single documents)")
  examples: Iterable[dict[str, Any]] = examples_fn(index_dir, length=length, tokenizer=tokenizer,
                                                   shard=shard, num_shards=num_shards, seed=seed)
  shown = 0
  for ex in examples:
    if shown == num:
      break
    prov = json.loads(ex["provenance"])
    out.append(f"\nsample {shown}: {len(ex['targets'])} tokens; first: "
               f"{_snippet(tokenizer.decode(ex['targets'][:24]))}")
    if "spans" in prov:
      out += _spans_view(prov, store, tokenizer)
    elif "meta_chunks" in prov:
      out += _nextlong_view(prov, index_dir)
    else:
      out.append("  provenance: " + json.dumps(prov)[:2000])
    shown += 1
  if shown == 0:
    out.append("no samples (is the shard empty, or every sample shorter than the length?)")
  return "\n".join(out)
