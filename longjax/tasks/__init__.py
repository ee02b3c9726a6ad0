"""SeqIO layer of longjax: vocabularies, Tasks and Mixtures over built synthesis indexes.

    import longjax.tasks                      # registers every index dir in $LONGJAX_INDEX_DIRS
    longjax.tasks.register("/tmp/idx")        # or register one explicitly (options: registry.py)

Task names: `longjax_<corpus>_<method>_<length>`, `longjax_<corpus>_replay_<length>`;
Mixtures: `longjax_<corpus>_<method>_<length>_mix`. This is the only package that imports
seqio/TensorFlow.
"""

from longjax.synth.methods.task_names import ENV_INDEX_DIRS, index_dirs_from_env
from longjax.tasks.registry import MethodSource, output_features, register
from longjax.tasks.vocabularies import HFVocabulary, make_vocabulary, tokenizer_of

__all__ = ["ENV_INDEX_DIRS", "HFVocabulary", "MethodSource", "make_vocabulary",
           "output_features", "register", "register_from_env", "tokenizer_of"]


def register_from_env() -> list[str]:
  """Registers every index directory named in `$LONGJAX_INDEX_DIRS` with default options."""
  return [name for d in index_dirs_from_env() for name in register(d)]


register_from_env()
