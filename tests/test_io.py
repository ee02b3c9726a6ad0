"""The bottom `io` layer: atomic files and directories, manifests, length names."""

import os

import pytest

from longjax import io


def _tree(directory) -> dict[str, str]:
  return {p.name: p.read_text() for p in sorted(directory.iterdir())}


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_directory_is_replaced_whole(tmp_path, monkeypatch, exchange):
  """The new directory replaces the old one whole (no old file survives), by an exchange of
  names where the OS has it and by two renames otherwise; nothing is left beside it."""
  if not exchange:
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
  target = tmp_path / "d"
  target.mkdir()
  (target / "old_only").write_text("old")
  (target / "both").write_text("old")
  with io.atomic_path(target) as tmp:
    tmp.mkdir()
    (tmp / "both").write_text("new")
  assert _tree(target) == {"both": "new"}
  assert os.listdir(tmp_path) == ["d"]


def test_exchange_swaps_two_directories_on_linux(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "f").write_text("a")
  (tmp_path / "b").mkdir()
  if not io._exchange(tmp_path / "a", tmp_path / "b"):  # pylint: disable=protected-access
    pytest.skip("no renameat2(RENAME_EXCHANGE) here")
  assert _tree(tmp_path / "b") == {"f": "a"} and _tree(tmp_path / "a") == {}


def test_a_failed_write_leaves_the_old_file_and_no_litter(tmp_path):
  target = io.write_json(tmp_path / "x.json", {"v": 1})
  with pytest.raises(RuntimeError):
    with io.atomic_path(target) as tmp:
      tmp.write_text("half")
      raise RuntimeError("crash")
  assert target.read_text() == '{\n  "v": 1\n}\n'
  assert os.listdir(tmp_path) == ["x.json"]


def test_manifest_marks_complete_for_the_same_config_and_inputs(tmp_path):
  io.write_manifest(tmp_path, kind="x", config={"a": 1, "p": tmp_path}, inputs={"f": "h"},
                    counts={"n": 2})
  m = io.read_manifest(tmp_path)
  assert m["kind"] == "x" and m["counts"] == {"n": 2} and "python" in m["versions"]
  assert io.is_complete(tmp_path, config={"a": 1, "p": tmp_path}, inputs={"f": "h"})
  assert not io.is_complete(tmp_path, config={"a": 2, "p": tmp_path}, inputs={"f": "h"})
  io.begin_stage(tmp_path)
  assert io.read_manifest(tmp_path) is None


@pytest.mark.parametrize("text,n", [("8k", 8192), ("1M", 1 << 20), ("4096", 4096), (" 64k ", 65536),
                                    ("1000", 1000)])
def test_length_names(text, n):
  assert io.parse_length(text) == n
  assert io.parse_length(io.format_length(n)) == n


def test_bad_length_name():
  with pytest.raises(ValueError, match="expected an integer with optional k/m suffix"):
    io.parse_length("8q")


def test_a_crash_at_the_swap_leaves_the_old_directory(tmp_path, monkeypatch):
  def crash(a, b):
    raise OSError("killed")
  monkeypatch.setattr(io, "_exchange", crash)
  target = tmp_path / "d"
  target.mkdir()
  (target / "f").write_text("old")
  with pytest.raises(OSError, match="killed"):
    with io.atomic_path(target) as tmp:
      tmp.mkdir()
      (tmp / "f").write_text("new")
  assert _tree(target) == {"f": "old"}
  assert os.listdir(tmp_path) == ["d"]
