"""`python tests/train/cli_driver.py <longjax.train args>`: the real CLI, with the test task.

Registers the Shakespeare SeqIO task, then runs `longjax.train.__main__.main`. With
SLOW_BATCHES=<seconds> every batch is delayed on the host (numerics unchanged), so a test can
send SIGTERM while the run is still going.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from longjax.tasks import input as task_input  # noqa: E402
from longjax.train.__main__ import main  # noqa: E402
from tests.helpers import shakespeare_task  # noqa: E402,F401  (registers the task)

if float(os.environ.get("SLOW_BATCHES", "0")) > 0:
  _batches = task_input.SeqioBatches.batches

  def _slow(self, **kw):
    for batch in _batches(self, **kw):
      time.sleep(float(os.environ["SLOW_BATCHES"]))
      yield batch
  task_input.SeqioBatches.batches = _slow

if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
