"""MethodOptions: every method's options refuse unknown names (listing the known ones) and
values of the wrong type, and read back what their manifests record."""

import dataclasses

import pytest

from longjax.synth.methods import METHODS
from longjax.synth.methods.options import MethodOptions

# One option of the wrong type per method that has options, and the error it must give.
WRONG_TYPES = {
    "knn": ({"k_nn": "many"}, "knn.k_nn: expected an integer, got 'many' (str)"),
    "iclm": ({"dedup_threshold": "high"},
             "iclm.dedup_threshold: expected a number, got 'high' (str)"),
    "nextlong": ({"dedup_text": 1}, "nextlong.dedup_text: expected true/false, got 1 (int)"),
    "quest": ({"target_share": "half"},
              "quest.target_share: expected a number or null, got 'half' (str)"),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_its_options_as_one_base(name):
  cls = METHODS[name].options_type
  assert issubclass(cls, MethodOptions) and dataclasses.is_dataclass(cls)
  assert cls.__dataclass_params__.frozen
  assert cls.parse(name, {}) == cls()  # every option has a default


@pytest.mark.parametrize("name", sorted(METHODS))
def test_unknown_option_lists_the_known_ones(name):
  cls = METHODS[name].options_type
  known = ", ".join(sorted(f.name for f in dataclasses.fields(cls))) or "(none)"
  with pytest.raises(ValueError) as e:
    cls.parse(name, {"x": 1})
  assert str(e.value) == f"{name}: unknown option 'x'; known: {known}"
  with pytest.raises(ValueError, match=rf"^{name}: unknown options 'x', 'y'; known: "):
    cls.parse(name, {"y": 1, "x": 1})


@pytest.mark.parametrize("name", sorted(WRONG_TYPES))
def test_wrong_type_names_option_and_expected_type(name):
  given, message = WRONG_TYPES[name]
  with pytest.raises(ValueError) as e:
    METHODS[name].options_type.parse(name, given)
  assert str(e.value) == message


def test_wrong_types_cover_every_method_with_options():
  with_options = {n for n, m in METHODS.items() if dataclasses.fields(m.options_type)}
  assert with_options == set(WRONG_TYPES)


@pytest.mark.parametrize("given,ok", [
    ({"chars_per_token": 4}, True),  # JSON writes 4.0 as 4: an int is a number
    ({"chunk_size": 2048.0}, False),  # a float is not an integer
    ({"chunk_size": True}, False),  # nor is a bool
    ({"sep": None}, False),
])
def test_numbers_and_bools(given, ok):
  cls = METHODS["nextlong"].options_type
  if ok:
    assert cls.parse("nextlong", given) == cls(**given)
  else:
    with pytest.raises(ValueError, match="^nextlong."):
      cls.parse("nextlong", given)


def test_optional_and_mapping_options():
  cls = METHODS["quest"].options_type
  cfg = cls.parse("quest", {"checkpoint": None, "target_share": 0.3,
                            "predictor_options": {"max_phrase_words": 2}})
  assert cfg.target_share == 0.3 and cfg.predictor_options == {"max_phrase_words": 2}
  with pytest.raises(ValueError, match=r"^quest.predictor_options: expected Mapping, got \[1\]"):
    cls.parse("quest", {"predictor_options": [1]})


def test_ranges_still_checked_after_types():
  with pytest.raises(ValueError, match="knn.overflow must be one of"):
    METHODS["knn"].options_type.parse("knn", {"overflow": "wrap"})
  with pytest.raises(ValueError, match=r"iclm: window \(60\) must be in \[1, k_nn=50\]"):
    METHODS["iclm"].options_type.parse("iclm", {"window": 60})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_recorded_options_parse_back(name):
  """`examples` rebuilds the options from the manifest's JSON record of `asdict`."""
  cls = METHODS[name].options_type
  assert cls.parse(name, dataclasses.asdict(cls())) == cls()
