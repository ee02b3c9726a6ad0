"""The registry of long-context synthesis methods, `METHODS: name -> Method`.

`python -m longjax.synth build` runs `build` for the methods it is asked for, and `longjax.tasks`
registers one SeqIO Task per method and length from this registry.
"""

from longjax.synth.methods.base import BuildContext, DocStore, Embedder, Method

METHODS: dict[str, Method] = {}
