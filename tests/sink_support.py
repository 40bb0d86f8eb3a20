"""Helpers shared by the sink tests: real events derived from the fixtures, bodies built from them, and
`auditcov serve` as a subprocess."""

from __future__ import annotations

import copy
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

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


SERVE = [sys.executable, "-c", "from auditcov.sink.cli import main; main()", "serve"]


class Sink:
    """An `auditcov serve` subprocess on a free loopback port, and what it printed until it listened."""

    def __init__(self, db: Path | str, *flags: str, stderr: int | IO = subprocess.PIPE, cwd: Path | None = None):
        # Run in the store's directory (or `cwd`, for a PostgreSQL URL) so the repository's config/sink.toml is not
        # picked up.
        self.process = subprocess.Popen(
            [*SERVE, "--listen", "127.0.0.1:0", "--db", str(db), *flags],
            cwd=cwd or Path(db).parent,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.banner = ""
        while match := not re.search(r"listening on (http\S+)", self.banner):
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"the sink exited: {self.process.stderr and self.process.stderr.read()}")
            self.banner += line
        for line in iter(self.process.stdout.readline, ""):
            self.banner += line
            if "Stop with Ctrl-C" in line:  # the banner's last line
                break
        match = re.search(r"listening on (http\S+)", self.banner)
        self.url = match.group(1)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 60) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout)


#: event_groups as the groups its rows add up to (rows themselves depend on how events were batched).
SUMMED_EVENT_GROUPS = (
    "SELECT run, test, namespace, operation_id, unmatched_reason, e2e, e2e_version, code, SUM(hits), MIN(first_us),"
    " MAX(last_us), MAX(done_us) FROM event_groups GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
)
