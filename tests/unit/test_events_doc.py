"""docs/events.md stays true: every test it names exists (scripts/test.sh runs them all)."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REFERENCE = re.compile(r"`(tests/[\w/.-]+\.py)::(\w+)`")


def test_every_test_named_in_the_events_table_exists():
    with open(os.path.join(ROOT, "docs", "events.md")) as handle:
        references = REFERENCE.findall(handle.read())
    assert len(references) >= 20
    missing = []
    for path, name in references:
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            missing.append(f"{path} (no such file)")
            continue
        with open(full) as handle:
            if not re.search(rf"^def {name}\(", handle.read(), re.MULTILINE):
                missing.append(f"{path}::{name}")
    assert not missing, f"docs/events.md names tests that do not exist: {missing}"


def test_every_row_names_a_test():
    with open(os.path.join(ROOT, "docs", "events.md")) as handle:
        rows = [line for line in handle if line.startswith("| ") and not line.startswith("| side |")]
    assert all(REFERENCE.search(row) or "same test" in row for row in rows if not set(row) <= set("|- \n"))
