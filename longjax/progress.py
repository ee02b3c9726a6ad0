"""The one progress convention: a callable that wraps an iterable (tqdm-compatible keywords).

Library functions that loop over long work take `progress: Progress = silent`, so a library
call prints nothing unless its caller asks; the entry points (`python -m longjax.synth`,
`python -m longjax.eval`) pass `console`.
"""

import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")
Progress = Callable[..., Iterable[Any]]


def silent(items: Iterable[_T], **_: Any) -> Iterable[_T]:
  """No display: the default of every library function that takes `progress`."""
  return items


def console(items: Iterable[_T], **kwargs: Any) -> Iterable[_T]:
  """A tqdm bar on stderr (`desc`, `total`, `unit`... pass through); refreshed at most every
  0.5 s on a terminal and every 10 s in a log file, so logs stay readable."""
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  kwargs.setdefault("mininterval", 0.5 if sys.stderr.isatty() else 10.0)
  return tqdm(items, file=sys.stderr, **kwargs)
