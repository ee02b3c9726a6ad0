"""The corpus-file reader: malformed structure is a CorpusError naming the file and line or row.

Every format read end to end into a store: tests/synth/test_corpus.py.
"""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longjax.documents import CorpusError, iter_raw_documents


@pytest.mark.parametrize("line,message", [
    ('{"text": "ok"', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"body": "x"}', "missing field 'text'"),
    ('{"text": 5}', "must be a string"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, line, message):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"text": "fine"}\n' + line + "\n")
  with pytest.raises(CorpusError, match=rf"bad\.jsonl:2: .*{message}"):
    list(iter_raw_documents(path))


def test_missing_column_and_path(tmp_path):
  pq.write_table(pa.table({"body": ["x"]}), tmp_path / "t.parquet")
  with pytest.raises(CorpusError, match=r"t\.parquet: no column 'text'"):
    list(iter_raw_documents(tmp_path / "t.parquet"))
  with pytest.raises(CorpusError, match="no such file"):
    list(iter_raw_documents(tmp_path / "nope"))
