"""`python tests/train/no_tf_driver.py <longjax.train args>`: the real CLI with TF and seqio
made unimportable, as on a GPU host without them.

Every attempt to import either is refused and recorded; the last stdout line is JSON:
{"rc": exit status, "attempts": [[module, importing file], ...]}.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys
import traceback

# This checkout's longjax, not whichever one the environment has installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BLOCKED = ("tensorflow", "seqio")
attempts = []


class Refuse(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds BLOCKED packages (so `find_spec` probes see them) but refuses to load them, recording
  the file that imports."""

  def find_spec(self, name, path=None, target=None):
    del path, target
    if name.split(".")[0] in BLOCKED:
      return importlib.machinery.ModuleSpec(name, self)
    return None

  def create_module(self, spec):
    files = [f.filename for f in traceback.extract_stack()
             if not f.filename.startswith("<") and f.filename != __file__]
    attempts.append([spec.name, files[-1] if files else "?"])
    raise ImportError(f"{spec.name} is blocked by no_tf_driver.py")

  def exec_module(self, module):
    raise AssertionError("unreachable: create_module refuses")


if __name__ == "__main__":
  sys.meta_path.insert(0, Refuse())
  from longjax.train.__main__ import main  # pylint: disable=wrong-import-position
  rc = main(sys.argv[1:])
  leaked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
  print(json.dumps({"rc": rc, "attempts": attempts, "leaked": leaked}))
