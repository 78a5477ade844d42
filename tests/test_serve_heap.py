"""``runnel serve`` settles the heap before serving (``api.app.settle_heap``)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from runnel.api.app import FULL_COLLECTION_THRESHOLD, settle_heap
before = gc.get_threshold()
settle_heap()
print(gc.get_freeze_count() > 10000, before[:2] == gc.get_threshold()[:2],
      gc.get_threshold()[2] == FULL_COLLECTION_THRESHOLD > before[2])
"""


def test_the_start_up_heap_is_frozen_and_full_collections_are_rarer() -> None:
    # in a child process: freezing the test process's heap would change every other test
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "True", "True"]
