"""What the end-to-end tests do to a cluster and how they read the results: kubectl traffic, the `auditcov`
CLI, the apiserver's audit log and auditcov's store."""

from __future__ import annotations

import os
import sqlite3
import ssl
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from controlplane import Certificates, Process, wait_until

#: Where a run leaves everything (logs, audit log, store, JUnit), one folder per session.
OUT = Path(os.environ.get("AUDITCOV_E2E_OUT", Path(__file__).resolve().parents[2] / "build" / "e2e"))

#: The marks of every end-to-end test: they run only under `make e2e`, which builds the binaries first.
E2E_MARKS = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("AUDITCOV_E2E") != "1", reason="end-to-end: run it with `make e2e`"),
]

#: kubectl traffic before the e2e tests: discovery, a namespace, a ConfigMap's life, a CRD and one of its
#: objects (created after auditcov fetched the spec, so it exercises the "not in the spec" path), raw
#: non-resource URLs, an access review.
CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.e2e.auditcov.io}
spec:
  group: e2e.auditcov.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""
WIDGET = """
apiVersion: e2e.auditcov.io/v1
kind: Widget
metadata: {name: first, namespace: auditcov-kubectl}
spec: {size: 3}
"""
KUBECTL_COMMANDS: list[tuple[list[str], str | None]] = [
    (["version", "-o", "json"], None),
    (["api-resources"], None),
    (["create", "namespace", "auditcov-kubectl"], None),
    (["-n", "auditcov-kubectl", "create", "configmap", "settings", "--from-literal=mode=e2e"], None),
    (["-n", "auditcov-kubectl", "get", "configmap", "settings", "-o", "yaml"], None),
    (["-n", "auditcov-kubectl", "label", "configmap", "settings", "tier=test"], None),
    (["-n", "auditcov-kubectl", "patch", "configmap", "settings", "-p", '{"data":{"mode":"patched"}}'], None),
    (["-n", "auditcov-kubectl", "get", "configmaps", "--watch=false", "-l", "tier=test"], None),
    (["apply", "-f", "-"], CRD),
    (["wait", "--for=condition=Established", "crd/widgets.e2e.auditcov.io", "--timeout=60s"], None),
    (["apply", "-f", "-"], WIDGET),
    (["-n", "auditcov-kubectl", "get", "widgets"], None),
    (["get", "--raw", "/healthz"], None),
    (["get", "--raw", "/version"], None),
    (["auth", "can-i", "create", "pods"], None),
    (["-n", "auditcov-kubectl", "delete", "configmap", "settings"], None),
    (["delete", "crd", "widgets.e2e.auditcov.io"], None),
    (["delete", "namespace", "auditcov-kubectl", "--wait=false"], None),
]


#: The Audit-ID two requests send: the apiserver takes a client's Audit-ID as the event's auditID, so both
#: requests' events carry it, and auditcov must store each of them (told apart by their receive times).
SHARED_AUDIT_ID = "auditcov-e2e-shared-audit-id"


def auditcov(*args: str) -> subprocess.CompletedProcess:
    """Run the installed `auditcov` CLI (the same console script users run); failing raises with its stderr."""
    done = subprocess.run([auditcov_path(), *args], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"auditcov {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def auditcov_path() -> str:
    return str(Path(sys.executable).with_name("auditcov"))


def logged_events(audit_log: Path) -> Counter:
    """(auditID, stage) -> how many times the apiserver's audit log file holds it."""
    keys: Counter = Counter()
    with audit_log.open("rb") as lines:
        for line in lines:
            event = orjson.loads(line)
            keys[(event["auditID"], event["stage"])] += 1
    return keys


def stored_events(store: Path, run: str) -> Counter:
    """(auditID, stage) -> how many events auditcov stored with it."""
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT audit_id, stage FROM events WHERE run = ?", (run,)).fetchall()
    return Counter(rows)


def start_auditcov(work: Path, certs: Certificates, port: int, *flags: str, mtls: bool = True) -> Process:
    """`auditcov serve` over HTTPS (and mTLS unless `mtls` is false) on 127.0.0.1:`port`, storing into
    work/auditcov.db; `flags` are added to its command line."""
    serving = certs.issue("auditcov", "127.0.0.1", user="auditcov")
    sink = Process(
        "auditcov",
        [
            auditcov_path(),
            "serve",
            f"--listen=127.0.0.1:{port}",
            f"--db={work / 'auditcov.db'}",
            f"--tls-cert={serving.cert}",
            f"--tls-key={serving.key}",
            *([f"--client-ca={certs.ca}"] if mtls else []),
            *flags,
        ],
        work,
    )
    probe = certs.client_context(certs.issue("probe", user="probe"))
    wait_until("auditcov", lambda: _status(f"https://127.0.0.1:{port}/readyz", probe) == 200, sink)
    return sink


def _status(url: str, context: ssl.SSLContext) -> int:
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return response.status
