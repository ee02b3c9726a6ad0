"""NExtLong sample assembly against a brute-force reference on a hand-built chunk corpus."""

import numpy as np
import pytest

from longjax.synth.methods import nextlong as nl
from tests.helpers.synth import BOS, byte_tokenizer

SEP = "\n\n"


@pytest.fixture(scope="module")
def tok():
  return byte_tokenizer()


def _corpus(seed=0, n_docs=12, dup_of_meta=True):
  """Doc 0 is the meta-document (3 chunks); chunk 0's text reappears in doc 5 when asked."""
  rng = np.random.default_rng(seed)
  words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "zeta"]
  texts, doc_of = [], []
  for d in range(n_docs):
    for _ in range(3 if d == 0 else int(rng.integers(2, 6))):
      texts.append(f"d{d}c{len(texts)} " + " ".join(rng.choice(words, int(rng.integers(4, 9)))))
      doc_of.append(d)
  if dup_of_meta:
    texts[doc_of.index(5)] = "  " + texts[0].upper() + " "  # same normalised text as m_1
  vecs = rng.normal(size=(len(texts), 5))
  vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
  if dup_of_meta:
    vecs[doc_of.index(5)] = vecs[0]  # and the most similar chunk to m_1
  vecs[1] = vecs[0] * 0.9 + vecs[1] * 0.1  # a same-document chunk close to m_1
  sims = vecs @ vecs.T
  doc_of = np.asarray(doc_of)

  def search(c, fetch):
    return np.argsort(-sims[c], kind="stable")[:fetch]

  return texts, doc_of, sims, nl.ChunkSource(texts.__getitem__, doc_of, search)


def _reference_negatives(texts, doc_of, sims, metas, ks, meta_doc=0, dedup=True):
  """Full sort + the four exclusions, block by block (no fetch sizes involved).

  Text duplicates of any meta-chunk of the sample count as exclusion (d) (see nextlong.py).
  """
  norm = lambda t: " ".join(t.split()).lower()
  used, out = [], []
  used_text = {norm(texts[m]) for m in metas}
  ks = [ks] * len(metas) if isinstance(ks, int) else ks
  for m, k in zip(metas, ks):
    block = []
    for c in np.argsort(-sims[m], kind="stable"):
      if len(block) == k:
        break
      if c == m or doc_of[c] == meta_doc or c in used:
        continue
      if dedup and norm(texts[c]) in used_text:
        continue
      block.append(int(c))
      used.append(int(c))
      used_text.add(norm(texts[c]))
    out.append(block)
  return out


def test_num_negatives_formula():
  cfg = nl.NExtLongOptions()
  # ceil((65536*4*1.5 - 6000) / (3*2048)) = ceil(63.02) = 64
  assert nl.num_negatives(65536, 6000, 3, cfg) == 64
  assert nl.num_negatives(131072, 6000, 3, cfg) == 128
  assert nl.num_negatives(1000, 10_000, 2, cfg) == 0  # clipped at 0
  small = nl.NExtLongOptions(chunk_size=64, chars_per_token=1.0)
  assert nl.num_negatives(100, 50, 2, small) == 1  # ceil(100 / 128)
  assert nl.fetch_size(5, 7, 3, cfg) == 5 + 7 + 3 + 32
  assert nl.fetch_size(4000, 500, 3, cfg) == 4096
  with pytest.raises(ValueError, match="p = 0"):
    nl.num_negatives(100, 10, 0, cfg)


def _assemble(tok, source, length, cfg, metas=(0, 1, 2)):
  return nl.assemble_sample(source, tok, meta_doc=0, metas=list(metas), length=length, cfg=cfg)


def test_blocks_hold_the_top_k_after_the_exclusions(tok):
  texts, doc_of, sims, source = _corpus()
  cfg = nl.NExtLongOptions(chunk_size=32, chars_per_token=1.0, overgen=1.5)
  tokens, info = _assemble(tok, source, 300, cfg)
  k = info["k"]
  assert k > 0
  ref = _reference_negatives(texts, doc_of, sims, [0, 1, 2], [k, k, 10_000])
  assert info["negatives"][:2] == ref[:2]
  negs = [c for block in info["negatives"] for c in block]
  assert len(negs) == len(set(negs))  # no reuse within the sample
  assert not any(doc_of[c] == 0 for c in negs)  # no chunk of the meta-document (self included)
  dup = int(np.flatnonzero(doc_of == 5)[0])
  assert dup not in negs  # text duplicate of m_1, although it is m_1's nearest chunk
  # Layout: m_1 n_11..n_1k m_2 ... joined by SEP, cut to exactly T tokens; no BOS (the byte
  # tokenizer's boundary convention has no start token).
  pieces = [texts[c] for m, block in zip((0, 1, 2), info["negatives"]) for c in (m, *block)]
  assert tokens.dtype == np.int32 and tokens.shape == (300,) and BOS not in tokens.tolist()
  assert tok.decode(tokens) == SEP.join(pieces)[:300]


def test_text_dedup_can_be_switched_off(tok):
  texts, doc_of, sims, source = _corpus()
  cfg = nl.NExtLongOptions(chunk_size=32, chars_per_token=1.0, dedup_text=False)
  _, info = _assemble(tok, source, 300, cfg)
  dup = int(np.flatnonzero(doc_of == 5)[0])
  assert info["negatives"][0][0] == dup
  k = info["k"]
  assert info["negatives"][:2] == _reference_negatives(texts, doc_of, sims, [0, 1, 2],
                                                       [k, k, 0], dedup=False)[:2]


def test_short_samples_are_discarded(tok):
  _, _, _, source = _corpus()
  cfg = nl.NExtLongOptions(chunk_size=32, chars_per_token=1.0, fetch_cap=4)
  tokens, info = _assemble(tok, source, 5000, cfg)
  assert tokens is None and info["tokens_before_truncation"] < 5000
  assert info["shortfall"] > 0  # the cap left blocks short of k, and that is recorded


def test_every_meta_chunk_survives_where_the_paper_estimate_cuts_one(tok):
  texts, doc_of, sims, source = _corpus(dup_of_meta=False)
  length = 260
  cfg = nl.NExtLongOptions(chunk_size=16, chars_per_token=1.0, overgen=1.5)

  def through(kk):  # blocks 1..2 with kk negatives + SEP + m_3, in tokens (= bytes)
    blocks = _reference_negatives(texts, doc_of, sims, [0, 1], kk)
    pieces = [texts[c] for m, b in zip((0, 1), blocks) for c in (m, *b)] + [texts[2]]
    return len(SEP.join(pieces))

  chars = sum(len(texts[m]) for m in (0, 1, 2)) + 2 * len(SEP)
  assert through(nl.num_negatives(length, chars, 3, cfg)) > length  # the paper's k loses m_3
  tokens, info = _assemble(tok, source, length, cfg)
  assert tokens.shape == (length,)
  assert info["meta_chunks_complete"] == info["p"] == 3
  k = info["k"]
  ref = _reference_negatives(texts, doc_of, sims, [0, 1, 2], [k, k, 10_000])
  # Blocks 1..p-1 hold the top-k; the last block continues in rank order until T is reached.
  assert info["negatives"][:2] == ref[:2]
  last = info["negatives"][2]
  assert last == ref[2][:len(last)] and len(last) == info["k_last"]
  assert through(k) <= length < through(k + 1)  # the largest k that keeps m_3 inside T
  total = through(k) + sum(len(texts[c]) + len(SEP) for c in last)
  assert total >= length > total - len(texts[last[-1]]) - len(SEP)  # filled just past T
  assert info["tokens_before_truncation"] == total
  text = tok.decode(tokens)
  for m in (0, 1, 2):
    assert texts[m] in text


def test_meta_documents_split_long_documents_at_chunk_boundaries():
  # doc 0: chunks 0-3 of 40, 50, 30, 20 tokens; doc 1: chunk 4 of 150 (> L); doc 2: no chunk.
  chunk_tokens = np.array([40, 50, 30, 20, 150])
  doc_chunks = [range(0, 4), range(4, 5), range(5, 5)]
  # L = 100, one start token, SEP of 2 tokens: [0, 1] = 1 + 40 + 2 + 50 = 93 (adding chunk 2
  # would make 125); [2, 3] = 1 + 30 + 2 + 20 = 53; [4] alone = 151 > L (loses text).
  plan = nl.meta_documents(doc_chunks, chunk_tokens, length=100, start_tokens=1, sep_tokens=2)
  assert plan.tolist() == [[0, 0, 2], [0, 2, 4], [1, 4, 5]]
  # A slice of the corpus (what a Beam task holds): documents 1-2, only their chunks' counts.
  part = nl.meta_documents(doc_chunks[1:], chunk_tokens[4:], length=100, start_tokens=1,
                           sep_tokens=2, first_doc=1, first_chunk=4)
  assert part.tolist() == plan[2:].tolist()


def test_long_documents_are_split_so_that_negatives_interleave(tok):
  """A document of 12 chunks (20 tokens each, 262 with separators) as one meta-document of a
  300-token sample leaves no room for a negative between its meta-chunks: k = 0, the sample is
  the document verbatim. Capped at half of L, its meta-documents each get k >= 1."""
  rng = np.random.default_rng(0)
  texts, doc_of = [], []
  for d in range(11):
    for i in range(12 if d == 0 else 5):
      texts.append(f"d{d:02d}c{i:02d} " + "".join(rng.choice(list("abcdefgh"), 13)))
      doc_of.append(d)
  assert {len(t) for t in texts} == {20}
  vecs = rng.normal(size=(len(texts), 5))
  sims = vecs @ vecs.T
  source = nl.ChunkSource(texts.__getitem__, np.asarray(doc_of),
                          lambda c, fetch: np.argsort(-sims[c], kind="stable")[:fetch])
  cfg = nl.NExtLongOptions(chunk_size=20, chars_per_token=1.0, fetch_cap=64)
  start, sep = nl.piece_tokens(tok, cfg)
  length, counts = 300, np.full(len(texts), 20)

  def ks(meta_cap):
    plan = nl.meta_documents([range(0, 12)], counts, length=meta_cap, start_tokens=start,
                             sep_tokens=sep)
    out = []
    for _, first, end in plan:
      tokens, info = nl.assemble_sample(source, tok, meta_doc=0, metas=list(range(first, end)),
                                        length=length, cfg=cfg)
      assert tokens is not None and info["meta_chunks_complete"] == info["p"]
      out.append(info["k"])
    return out

  assert ks(length) == [0]  # one meta-document of 262 + start tokens: nothing interleaves
  assert nl.meta_tokens(length, cfg) == 150
  capped = ks(nl.meta_tokens(length, cfg))
  assert len(capped) == 2 and min(capped) >= 1
  with pytest.raises(ValueError, match="max_meta_share"):
    nl.NExtLongOptions(max_meta_share=0)
