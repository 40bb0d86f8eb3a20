"""Dynamic audit (Kubernetes 1.13 to 1.18): auditcov registered through an `AuditSink` object, not a flag.

A v1.18.19 kube-apiserver (hack/e2e/build-1.18.sh) runs with the DynamicAuditing gate and the
auditregistration.k8s.io/v1alpha1 API on; config/auditsink.yaml as it is passes a server-side dry run, and
auditcov is registered by creating it with its webhook replaced by auditcov's URL and the test CA as caBundle.
AuditSink webhooks carry no client credentials (clientConfig has only a URL or service and a CA bundle), so
auditcov serves plain TLS here, without a client CA.

A dynamic sink only hears what happens while it is registered, so "nothing lost" is checked over a window:
from the first event auditcov stored to the end of the kubectl traffic. Within it, every auditID+stage of the
apiserver's own audit log must reach auditcov's store (the dynamic backend batches for up to 30 s, so the test
waits for that before it deletes the AuditSink: deleting it drops what the sink's buffer still holds); at no
time may auditcov hold an event the log lacks.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from controlplane import DYNAMIC_AUDIT, Certificates, ControlPlane, binary_dir, free_port
from deployfiles import AUDITSINK, audit_sink
from traffic import E2E_MARKS, KUBECTL_COMMANDS, start_auditcov, stored_events
from traffic import OUT as E2E_OUT

from auditcov.merge.events import parse_time

KUBE_VERSION = "v1.18.19"
OUT = E2E_OUT / "dynamic"
RUN = "e2e-dynamic"

pytestmark = E2E_MARKS


@dataclass
class Outcome:
    store: Path
    log: list[dict]
    window: tuple[int, int]  # first event auditcov stored .. end of the traffic, microseconds since the epoch
    audit_errors: float
    apiserver_log: Path


def logged_in(audit_log: Path, window: tuple[int, int]) -> set[tuple[str, str]]:
    """(auditID, stage) of the logged events received and finished within `window`."""
    start, end = window
    events = (orjson.loads(line) for line in audit_log.read_bytes().splitlines())
    return {
        (e["auditID"], e["stage"])
        for e in events
        if parse_time(e["requestReceivedTimestamp"]) >= start and parse_time(e["stageTimestamp"]) <= end
    }


def first_stored_us(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT min(received_us) FROM events WHERE run = ?", (RUN,)).fetchone()[0]


def wait_for_first_event(store: Path, timeout: float = 60) -> None:
    """The AuditSink takes effect when the apiserver's informer sees it: wait until auditcov stored something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists() and stored_events(store, RUN):
            return
        time.sleep(0.5)
    raise TimeoutError(f"no event reached auditcov within {timeout:.0f}s of creating the AuditSink")


def run_traffic(plane: ControlPlane, certs: Certificates, port: int) -> tuple[tuple[int, int], float]:
    """Start the apiserver and auditcov, register auditcov, run the kubectl commands, unregister, stop both.

    Returns the window checked and apiserver_audit_error_total (scraped before the apiserver stops)."""
    sink = None
    try:
        plane.start()
        sink = start_auditcov(OUT, certs, port, "--openapi=auto", f"--kubeconfig={plane.kubeconfig}", mtls=False)
        # config/auditsink.yaml as it is must be accepted; the one registered sends to this auditcov instead.
        plane.kubectl("apply", "--dry-run=server", "-f", str(AUDITSINK))
        plane.kubectl("apply", "-f", "-", stdin=audit_sink(f"https://127.0.0.1:{port}/v1/audit/{RUN}", certs.ca))
        wait_for_first_event(OUT / "auditcov.db")
        for args, stdin in KUBECTL_COMMANDS:
            plane.kubectl(*args, stdin=stdin)
        window = (first_stored_us(OUT / "auditcov.db"), time.time_ns() // 1000)
        wait_for_window(plane.audit_log, OUT / "auditcov.db", window)
        audit_errors = plane.metric("apiserver_audit_error_total")
        plane.kubectl("delete", "auditsink", "auditcov")
        plane.stop_apiserver()
        sink.stop()
    finally:
        plane.stop()
        if sink is not None:
            sink.stop()
    return window, audit_errors


def wait_for_window(audit_log: Path, store: Path, window: tuple[int, int], timeout: float = 90) -> None:
    """Wait (past the dynamic backend's 30 s batch wait) until every event logged in `window` is stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and logged_in(audit_log, window) - stored_events(store, RUN).keys():
        time.sleep(1)


@pytest.fixture(scope="module")
def outcome() -> Outcome:
    apiserver = binary_dir(KUBE_VERSION) / "kube-apiserver"
    if not apiserver.exists():
        pytest.fail(f"{apiserver} is not built; run hack/e2e/build-1.18.sh (make e2e does)")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    certs = Certificates(OUT / "pki")
    port = free_port()
    plane = ControlPlane(OUT, certs, DYNAMIC_AUDIT, apiserver=apiserver, controller_manager=False)
    # kubectl 1.36's `wait` asks for a streamed initial list (WatchList), which a 1.18 server never finishes.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBE_FEATURE_WatchListClient", "false")
        window, audit_errors = run_traffic(plane, certs, port)
    log = [orjson.loads(line) for line in plane.audit_log.read_bytes().splitlines()]
    return Outcome(OUT / "auditcov.db", log, window, audit_errors, OUT / "kube-apiserver.log")


def test_nothing_lost_while_registered(outcome: Outcome) -> None:
    expected = logged_in(OUT / "audit.log", outcome.window)
    assert len(expected) > 100
    missing = expected - stored_events(outcome.store, RUN).keys()
    assert not missing, f"{len(missing)} events logged while the AuditSink was registered never reached auditcov"


def test_nothing_extra(outcome: Outcome) -> None:
    logged = {(e["auditID"], e["stage"]) for e in outcome.log}
    extra = stored_events(outcome.store, RUN).keys() - logged
    assert not extra, f"{len(extra)} events in auditcov are not in the audit log, e.g. {sorted(extra)[:5]}"


def test_kubectl_traffic_arrived_mapped(outcome: Outcome) -> None:
    with sqlite3.connect(outcome.store) as db:
        rows = db.execute(
            "SELECT operation_id FROM events WHERE run = ? AND client = 'kubectl' AND verb = 'create' "
            "AND request_uri LIKE '/api/v1/namespaces/auditcov-kubectl/configmaps%' AND stage = 'ResponseComplete'",
            (RUN,),
        ).fetchall()
        unexplained = db.execute(
            "SELECT count(*) FROM events WHERE run = ? AND operation_id IS NULL AND unmatched_reason IS NULL", (RUN,)
        ).fetchone()[0]
    assert rows == [("createCoreV1NamespacedConfigMap",)]
    assert unexplained == 0


def test_apiserver_reports_no_audit_errors(outcome: Outcome) -> None:
    assert outcome.audit_errors == 0
    assert "Error in audit plugin" not in outcome.apiserver_log.read_text(errors="replace")
