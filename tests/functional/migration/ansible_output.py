"""Task results out of ``ansible-playbook -v`` output with ANSIBLE_CALLBACK_RESULT_FORMAT=json (one a line).

Shared by the tests and bench/wave_bench.py, which read the modules' results from real playbook runs.
"""

import json
import re
from typing import List, Tuple

RESULT = re.compile(r"^(?:ok|changed): \[([^\] ]+)(?: -> [^\]]+)?\] => (\{.*\})$")


def task_results(output: str) -> List[Tuple[str, dict]]:
    """Each ``ok`` or ``changed`` task result, with the inventory host it ran for, in output order."""
    found = []
    for line in output.splitlines():
        match = RESULT.match(line)
        if match:
            found.append((match.group(1), json.loads(match.group(2))))
    return found
