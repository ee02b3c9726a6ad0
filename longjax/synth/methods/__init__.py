"""The registry of long-context synthesis methods, `METHODS: name -> Method`.

`python -m longjax.synth build` runs `build` for the methods it is asked for, and `longjax.tasks`
registers one SeqIO Task per method and length from this registry. Every method lives in this
package (Quest, several modules, in `quest/`, with its control `questshuffled`), so the registry
imports them directly. A method that reads another's build names it in `reads`.
"""

from longjax.synth.methods.base import BuildContext, DocStore, Embedder, Method
from longjax.synth.methods.iclm import ICLMMethod
from longjax.synth.methods.knn import KNNMethod
from longjax.synth.methods.nextlong import NExtLongMethod
from longjax.synth.methods.quest import QuestMethod, QuestShuffledMethod
from longjax.synth.methods.standard import StandardMethod

__all__ = ["METHODS", "BuildContext", "DocStore", "Embedder", "Method"]

METHODS: dict[str, Method] = {m.name: m for m in (
    StandardMethod(), KNNMethod(), ICLMMethod(), QuestMethod(), QuestShuffledMethod(),
    NExtLongMethod())}
