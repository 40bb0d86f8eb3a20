"""Helpers shared by the sink tests: real events derived from the fixtures, and bodies built from them."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

FIXTURES = Path(__file__).parent / "fixtures"
E2E_GREP_LINE = FIXTURES / "audit/apisnoop/e2e-event-grep-output.txt"
CONTROLLER_AGENT = (
    "kube-controller-manager/v1.36.0 (linux/amd64) kubernetes/abc1234/system:serviceaccount:kube-system:x"
)


def e2e_event() -> dict:
    """The real e2e event: the fixture line is grep output, `<file>:` then the JSON event."""
    line = E2E_GREP_LINE.read_text()
    return orjson.loads(line[line.index("{") :])


def event(audit_id: str, **changes: object) -> dict:
    """The real e2e event with a new auditID and fields replaced (`objectRef`, `responseStatus` are merged)."""
    item = copy.deepcopy(e2e_event())
    item["auditID"] = audit_id
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(item.get(key), dict):
            item[key].update(value)
        elif value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def event_list(items: list[dict], api_version: str = "audit.k8s.io/v1") -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": api_version, "metadata": {}, "items": items})
