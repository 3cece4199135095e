"""Make the collection importable as ``ansible_collections.xms.warm_migration``.

Module code imports its helpers by that name (Ansible ships them that way to
remote hosts), so tests must too. When the checkout is not already inside an
``ansible_collections/xms/warm_migration`` tree, a symlink under
``tests/output/`` (git-ignored) provides one.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collection_parent() -> str:
    parts = ROOT.split(os.sep)
    if parts[-3:-1] == ["ansible_collections", "xms"] and parts[-1] == "warm_migration":
        return os.sep.join(parts[:-3])
    parent = os.path.join(ROOT, "tests", "output", "collection")
    link = os.path.join(parent, "ansible_collections", "xms", "warm_migration")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)
    return parent


if "ansible_collections.xms.warm_migration" not in sys.modules:
    sys.path.insert(0, _collection_parent())
