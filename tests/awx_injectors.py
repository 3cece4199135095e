"""A test double of AWX/AAP's credential injection, for the collection's custom credential types.

AWX itself (a Django service with a database and a task system) cannot run here. This double follows
what AWX documents and does for a custom type's ``extra_vars`` injector (``CredentialType.inject_credential``):
- the template namespace holds the credential's string fields that are set and not empty; a boolean
  field the credential does not set is ``False``;
- every leaf of the injector (nested dicts and lists included) is rendered on its own in Jinja's
  ``ImmutableSandboxedEnvironment``, so every value is a string, and a field left unset renders as ``""``;
- the result is written as YAML to a 0400 file in the job's private data directory and given to
  ansible-playbook as ``-e @file`` (ansible-runner: ``env/extravars``).
What stays unproven: AWX's UI/API validation of the inputs, and its marking of the values as unsafe.
"""

from __future__ import annotations

import os
from typing import Any, Dict

import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

CREDENTIAL_TYPES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "awx",
                                "credential_types")  # fmt: skip


def credential_type(name: str) -> Dict[str, Any]:
    """One of ``docs/awx/credential_types/<name>.yml``."""
    with open(os.path.join(CREDENTIAL_TYPES, f"{name}.yml")) as handle:
        return yaml.safe_load(handle)


def inject_extra_vars(kind: Dict[str, Any], inputs: Dict[str, Any]) -> Dict[str, Any]:
    """The extra vars a credential of ``kind`` with ``inputs`` gives a job, as AWX renders them."""
    fields = kind["inputs"]["fields"]
    unknown = set(inputs) - {f["id"] for f in fields}
    assert not unknown, f"not fields of {kind['name']}: {unknown}"
    missing = [f for f in kind["inputs"].get("required", []) if not inputs.get(f)]
    assert not missing, f"{kind['name']} requires {missing}"
    namespace: Dict[str, Any] = {}
    for field in fields:
        value = inputs.get(field["id"])
        if field["type"] == "boolean":
            namespace[field["id"]] = bool(value)
        elif value:
            namespace[field["id"]] = value
    env = ImmutableSandboxedEnvironment()

    def render(node):
        if isinstance(node, dict):
            return {render(k): render(v) for k, v in node.items()}
        if isinstance(node, list):
            return [render(x) for x in node]
        return env.from_string(node).render(**namespace)

    return render(kind["injectors"]["extra_vars"])
