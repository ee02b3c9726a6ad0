"""The registry of long-context synthesis methods, `METHODS: name -> Method`.

`python -m longjax.synth build` runs `build` for the methods it is asked for, and `longjax.tasks`
registers one SeqIO Task per method and length from this registry.

`METHODS` is built on first access (PEP 562 module `__getattr__`): method modules elsewhere
(`synth.quest`) import `methods.base`, so importing them here eagerly would be circular.
"""

from typing import Any

from longjax.synth.methods.base import BuildContext, DocStore, Embedder, Method

__all__ = ["METHODS", "BuildContext", "DocStore", "Embedder", "Method"]


def _registry() -> dict[str, Method]:
  # pylint: disable=import-outside-toplevel
  from longjax.synth.methods.iclm import ICLMMethod
  from longjax.synth.methods.knn import KNNMethod
  from longjax.synth.methods.nextlong import NExtLongMethod
  from longjax.synth.methods.standard import StandardMethod
  from longjax.synth.quest import QuestMethod
  methods = (StandardMethod(), KNNMethod(), ICLMMethod(), QuestMethod(), NExtLongMethod())
  return {m.name: m for m in methods}


def __getattr__(name: str) -> Any:
  if name == "METHODS":
    globals()["METHODS"] = _registry()
    return globals()["METHODS"]
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
