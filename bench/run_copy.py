"""One engine copy in its own process, for the benchmark: prints its stats as JSON.

Usage: python bench/run_copy.py SOURCE_URI TARGET (--allocated | --extents FILE.json) [--target-is-zero]
The time printed covers planning and copying (including the final flush), not
Python's start-up.
"""

import argparse
import json
import time

import checkout  # noqa: F401  # pylint: disable=unused-import  # imported for its effect: the collection importable

from ansible_collections.xms.warm_migration.plugins.module_utils.copy.copier import (
    CopyOptions,
    copy_extents,
)
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.extents import Extent
from ansible_collections.xms.warm_migration.plugins.module_utils.copy.nbd_source import plan_allocated


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("--extents")
    args = parser.parse_args()
    started = time.monotonic()
    if args.extents:
        with open(args.extents) as handle:
            plan = [Extent(o, n) for o, n in json.load(handle)]
    else:
        plan = plan_allocated(args.source)
    stats = copy_extents(args.source, args.target, plan, options=CopyOptions())
    print(json.dumps({"seconds": time.monotonic() - started, **stats.as_dict()}))


if __name__ == "__main__":
    main()
