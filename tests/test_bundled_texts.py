"""The bundled texts' split: the reserved BBC items are fixed and balanced.

The training store built from them: tests/synth/test_corpus.py::test_default_corpus_split.
"""

from longjax import bundled_texts


def test_reserved_bbc_ids_fixed_and_balanced():
  ids = bundled_texts.reserved_bbc_ids()
  assert ids == bundled_texts.reserved_bbc_ids() and len(set(ids)) == 300
  for cls in bundled_texts.BBC_CLASSES:
    assert sum(bundled_texts.bbc_label(i) == cls for i in ids) == 60
