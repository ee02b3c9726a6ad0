"""The base of every synthesis method's options: typed fields with defaults, unknown keys refused.

`python -m longjax.synth build --config '{"knn": {"k_nn": 64}}'` hands each method a plain
mapping (JSON). Each method declares its options as a frozen dataclass deriving from
`MethodOptions` (fields with the spec's defaults, ranges checked in `__post_init__`), and
`parse` is the one way a mapping becomes such an instance, at `synth build`'s up-front check,
in `build` and when `examples` reads the options back from the manifest:

- a name the dataclass does not declare is a ValueError listing the known ones (a misspelt
  option must not silently leave the default in place), as MaxText's config forbids extra keys;
- a value whose type does not match the field's annotation is a ValueError naming the option
  (a string for a number would otherwise fail deep inside the build, or compare wrongly).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Self


@dataclasses.dataclass(frozen=True)
class MethodOptions:
  """A method's options; subclass as a frozen dataclass whose every field has a default."""

  @classmethod
  def parse(cls, method: str, given: Mapping[str, Any]) -> Self:
    """`cls(**given)` after checking names and types; errors name `method` and the option."""
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(given) - set(known))
    if unknown:
      names = ", ".join(repr(n) for n in unknown)
      raise ValueError(f"{method}: unknown option{'s' if len(unknown) > 1 else ''} {names}; "
                       f"known: {', '.join(known) or '(none)'}")
    hints = typing.get_type_hints(cls)
    for name, value in given.items():
      if not _has_type(value, hints[name]):
        raise ValueError(f"{method}.{name}: expected {_type_name(hints[name])}, got {value!r} "
                         f"({type(value).__name__})")
    return cls(**given)


def _has_type(value: Any, hint: Any) -> bool:
  """isinstance for the annotations options use; an int is a number (JSON writes 2 for 2.0),
  a bool is not an int."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    return any(_has_type(value, h) for h in typing.get_args(hint))
  if hint is Any:
    return True
  if hint is type(None):
    return value is None
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is int:
    return isinstance(value, int) and not isinstance(value, bool)
  cls = origin or hint
  return not isinstance(cls, type) or isinstance(value, cls)


def _type_name(hint: Any) -> str:
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    return " or ".join(_type_name(h) for h in typing.get_args(hint))
  return {type(None): "null", float: "a number", int: "an integer", bool: "true/false",
          str: "a string"}.get(hint, getattr(typing.get_origin(hint) or hint, "__name__",
                                             str(hint)))
