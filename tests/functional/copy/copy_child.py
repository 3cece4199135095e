"""Run one journaled copy in its own process, so a test can kill -9 it part-way.

Usage: python copy_child.py SOURCE_URI TARGET JOURNAL
"""

import sys

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import CopyOptions, copy_extents
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.nbd_source import plan_allocated

if __name__ == "__main__":
    source, target, journal = sys.argv[1:4]
    # Few, small reads in flight: with the test's 20 ms per read the copy lasts about a second,
    # long enough to be killed at a chosen point even on a loaded machine.
    options = CopyOptions(checkpoint_bytes=4 << 20, checkpoint_seconds=0.2, request_size=256 << 10, max_in_flight=4)
    copy_extents(source, target, plan_allocated(source), options=options, journal_path=journal)
