"""NExtLong meta-chunking: the spec's hand-computed edge cases and the greedy invariants."""

import random

import pytest

from longjax.synth.chunking import build_chunk_store, meta_chunks
from longjax.documents import RawDocument
from longjax.synth.corpus import build_store


def test_hand_computed_groups():
  # Segment lengths 3, 3, 3 with s = 6: "aaa\nbbb" counts 6 (newline not counted), "ccc" opens.
  assert meta_chunks("aaa\nbbb\nccc", 6) == ["aaa\nbbb", "ccc"]
  # Chunk exceeds s by the uncounted newlines: 3 segments of 2 = 6 counted, 8 characters.
  assert meta_chunks("aa\nbb\ncc", 6) == ["aa\nbb\ncc"]
  assert len(meta_chunks("aa\nbb\ncc", 6)[0]) == 8


def test_oversized_segment_is_not_split():
  long = "x" * 20
  assert meta_chunks(f"ab\n{long}\ncd", 6) == ["ab", long, "cd"]


def test_blank_lines_survive_inside_a_chunk():
  assert meta_chunks("ab\n\n\ncd", 6) == ["ab\n\n\ncd"]


def test_blank_lines_before_oversized_segment_are_dropped():
  # "abcdef" fills the group (6); zero-length lines still fit, so they stay in that group.
  assert meta_chunks("abcdef\n\n\n" + "y" * 10, 6) == ["abcdef\n\n", "y" * 10]
  # Blank lines at the head of a fresh zero-length group are dropped with it.
  assert meta_chunks("abcdefg\n\n\n" + "y" * 10, 6) == ["abcdefg", "y" * 10]
  assert meta_chunks("\n\n" + "y" * 10, 6) == ["y" * 10]


def test_degenerate_inputs():
  assert meta_chunks("", 2048) == [""]
  assert meta_chunks("\n\n\n", 2048) == ["\n\n\n"]
  assert meta_chunks("\n \n", 2048) == ["\n \n"]  # one blank chunk (the store drops it)
  with pytest.raises(ValueError, match="chunk size"):
    meta_chunks("x", 0)


@pytest.mark.parametrize("seed", range(20))
def test_greedy_invariants_on_random_text(seed):
  rng = random.Random(seed)
  segs = [("z" * rng.choice([0, 0, 1, 5, 40, 130, 300])) for _ in range(rng.randint(1, 60))]
  text = "\n".join(segs)
  size = 128
  chunks = meta_chunks(text, size)
  counted = [sum(len(p) for p in c.split("\n")) for c in chunks]
  for c, n in zip(chunks, counted):
    assert n <= size or "\n" not in c.strip("\n") and n == len(c.replace("\n", ""))
  for c, nxt in zip(chunks, chunks[1:]):  # greedy: the next chunk's first segment did not fit
    assert sum(len(p) for p in c.split("\n")) + len(nxt.split("\n")[0]) > size
  # Concatenation gives back the text unless zero-length groups (blank lines) were dropped.
  joined = "\n".join(chunks)
  if joined != text:
    assert joined.replace("\n", "") == text.replace("\n", "")
    assert len(joined) < len(text)


def test_chunk_store_ids_and_ranges(tmp_path):
  docs = [RawDocument("a", "x" * 10 + "\n" + "y" * 10, key="a"),
          RawDocument("b", "short", key="b"),
          RawDocument("c", "p" * 12 + "\n\n   \n" + "q" * 12, key="c")]
  store = build_store(docs, tmp_path / "corpus")
  chunks = build_chunk_store(store, tmp_path / "chunks", size=12)
  # c: "p"*12 + "" fits (12), "   " opens a group that is emitted as a blank chunk (dropped).
  assert meta_chunks(docs[2].text, 12) == ["p" * 12 + "\n", "   ", "q" * 12]
  expect = [(0, 0, "x" * 10), (0, 1, "y" * 10), (1, 0, "short"), (2, 0, "p" * 12 + "\n"),
            (2, 1, "q" * 12)]
  got = [(c.doc_id, c.j, c.text) for c in chunks]
  assert got == expect
  assert [c.chunk_id for c in chunks] == list(range(len(chunks)))
  assert list(chunks.chunks_of(1)) == [2]
  assert chunks.doc_of_chunk.tolist() == [d for d, _, _ in expect]
  assert chunks.manifest["counts"]["chunks"] == len(expect)
  assert chunks.manifest["counts"]["blank_dropped"] == 1
  assert build_chunk_store(store, tmp_path / "chunks", size=12).manifest == chunks.manifest
