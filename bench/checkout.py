"""The collection importable from this checkout, for the benchmarks.

Importing this module links ``tests/output/collection/ansible_collections/xms/warm_migration`` to
the checkout (as scripts/test.sh and scripts/demo.sh do) and puts its root first on ``sys.path``,
so that a benchmark runs on a fresh clone after ``scripts/setup-host.sh`` alone, as bench/README.md
says. ``COLLECTIONS`` is that root (for ``ANSIBLE_COLLECTIONS_PATH`` and child processes).
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "tests", "output", "collection")
_LINK = os.path.join(COLLECTIONS, "ansible_collections", "xms", "warm_migration")

if not os.path.islink(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(ROOT, _LINK)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
