"""row_context: same-document context per token of exported rows, against hand-computed cases."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from longjax import io
from longjax.tasks.export import write_shard
from longjax.train.arrayrecord import KIND, RowFormat

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "experiments" / "compare_methods"))
import row_context  # pylint: disable=wrong-import-position


def test_context_of_a_row_by_hand(monkeypatch):
  """Row of 10 tokens: doc 7 (4 tokens), doc 3 (3), doc 7 again (3). Same-document context of
  each token: 0 1 2 3 | 0 1 2 | 4 5 6, sum 24, mean 2.4; >= 2: six tokens; >= 5: two. Reach
  (back to the document's first token in the row): 0 1 2 3 | 0 1 2 | 7 8 9, sum 33; >= 2: six;
  >= 5: three."""
  monkeypatch.setattr(row_context, "THRESHOLDS", (2, 5))
  m = row_context.row_measures([(7, 4), (3, 3), (7, 3)], 10)
  assert m == {"documents": 2.0, "one_document": 0.0, "context": 2.4, "ctx>=2": 0.6,
               "ctx>=5": 0.2, "reach": 3.3, "reach>=2": 0.6, "reach>=5": 0.3}
  with pytest.raises(ValueError, match="cover 9 tokens, the rows hold 10"):
    row_context.row_measures([(7, 9)], 10)


def test_layout_tokens_belong_to_no_document(monkeypatch):
  """NExtLong-like row: a start token, doc 7 (4), a separator, a distractor of doc 3 (2), a
  separator, doc 7 again (2). Doc 7's tokens see 0 1 2 3 | 4 5 across the distractor; doc 3's
  0 1; layout tokens count 0: sum 16 over 11 tokens. Reach: doc 7 starts at position 1, so its
  tokens reach 0 1 2 3 | 8 9, doc 3's 0 1: sum 24."""
  monkeypatch.setattr(row_context, "THRESHOLDS", (4,))
  m = row_context.row_measures([(-1, 1), (7, 4), (-1, 1), (3, 2), (-1, 1), (7, 2)], 11)
  assert m == {"documents": 2.0, "one_document": 0.0, "context": 16 / 11, "ctx>=4": 2 / 11,
               "reach": 24 / 11, "reach>=4": 2 / 11}


def test_cross_document_copies_by_hand(monkeypatch):
  """Tokens 1 2 3 9 1 2 3, n = 3: of the five 3-grams only the last (1 2 3, ending at position
  6) occurred before, ending at position 2. It counts when position 2 is another document's
  (1 of 7 tokens), not when it is the same document's or a layout token's."""
  tokens = np.array([1, 2, 3, 9, 1, 2, 3])
  assert row_context.cross_document_copies(tokens, np.array([0, 0, 0, 1, 1, 1, 1]), 3) == 1 / 7
  assert row_context.cross_document_copies(tokens, np.zeros(7, int), 3) == 0.0
  assert row_context.cross_document_copies(tokens, np.array([0, 0, -1, 1, 1, 1, 1]), 3) == 0.0
  assert row_context.cross_document_copies(tokens[:2], np.zeros(2, int), 3) == 0.0
  monkeypatch.setattr(row_context, "COPY_NGRAM", 3)
  m = row_context.row_measures([(0, 3), (1, 4)], 7, tokens)
  assert m["copied"] == 1 / 7 and m["documents"] == 2.0
  assert "copied" not in row_context.row_measures([(0, 3), (1, 4)], 7)


def test_pieces_from_provenance():
  quest = {"spans": [["1 january", 5, 0, 3], ["1 january", 9, 2, 4]]}
  assert row_context.row_pieces([json.dumps({"spans": [[1, 0, 2]]}), quest], 7, None) == [
      (1, 2), (5, 3), (9, 2)]
  assert row_context.row_pieces([{"meta_chunks": [1], "negatives": [[2]]}], 7, None) is None


def _export(directory: Path, rows: list[dict]) -> None:
  """An export directory of rows of 8 tokens, each row packed from one example of provenance
  `rows[i]`."""
  fmt = RowFormat.make(8, 100)
  directory.mkdir(parents=True)
  zeros = np.zeros(8, np.int32)
  write_shard(directory / "rows-00000-of-00001.arrayrecord",
              (({"targets": zeros, "segment_ids": zeros + 1, "positions": np.arange(8)}, prov)
               for prov in ([r] for r in rows)), fmt)
  size = (directory / "rows-00000-of-00001.arrayrecord").stat().st_size
  io.write_manifest(directory, kind=KIND, config={"length": 8}, inputs={}, counts={},
                    extra={"format": fmt.to_json(), "shards": [
                        {"file": "rows-00000-of-00001.arrayrecord", "bytes": size,
                         "rows": len(rows), "sha256": "unused"}]})


def test_arms_table_and_difference_from_standard(tmp_path):
  """Standard rows hold 4 documents of 2 tokens (context 0.5 per token), Quest rows one document
  of 8 (3.5): Quest − Standard = +3.0 with a zero-width interval; NExtLong's chunk rows are
  reported, not measured."""
  standard = [{"spans": [[d, 0, 2] for d in range(4 * r, 4 * r + 4)]} for r in range(3)]
  _export(tmp_path / "standard_seed0", standard)
  _export(tmp_path / "standard_seed1", standard)
  _export(tmp_path / "quest_seed0", [{"spans": [["kw", r, 0, 8]]} for r in range(3)])
  _export(tmp_path / "nextlong_seed0", [{"meta_chunks": [0], "negatives": [[1]]}] * 3)
  assert row_context.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
  summary = json.loads((tmp_path / "out" / "row_context.json").read_text())
  assert summary["arms"]["standard"]["rows"] == 6
  assert summary["arms"]["standard"]["context"] == {"mean": 0.5, "ci95": [0.5, 0.5]}
  assert summary["arms"]["quest"]["documents"]["mean"] == 1.0
  assert summary["arms"]["quest"]["one_document"]["mean"] == 1.0
  assert summary["arms"]["standard"]["one_document"]["mean"] == 0.0
  assert summary["versus"]["quest"]["context"] == {"mean": 3.0, "ci95": [3.0, 3.0],
                                                   "significant": True}
  assert summary["arms"]["nextlong"] is None
  table = (tmp_path / "out" / "row_context.md").read_text()
  assert "| nextlong | – | not measured (chunk rows: --index-dir)" in table
  assert "| quest | +0.0" not in table and "+3 [+3, +3] *" in table
  assert summary["arms"]["quest"]["copied"]["mean"] == 0.0  # every row is zeros: one 8-gram
  assert (tmp_path / "out" / "row_context.png").stat().st_size > 0
