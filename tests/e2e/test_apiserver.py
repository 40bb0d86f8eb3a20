"""The acceptance test of the whole product: a real kube-apiserver audits real traffic to auditcov.

For each mode (batch, blocking, cover): start etcd, kube-apiserver (audit log file + audit webhook to auditcov
over mTLS), kube-controller-manager and `auditcov serve` on loopback; run kubectl commands and the e2e.test
conformance tests listed in focus.txt, one at a time; wait until kube-controller-manager has finalized every
test namespace; stop the apiserver (it flushes its audit backends) and then auditcov. Then auditcov's store and
report must agree with the apiserver's own audit log, event for event. The log is read here with orjson, not
with auditcov's own readers: it is the independent record. Each mode leaves summary.txt (make e2e prints it).

The cover mode is the blocking webhook with a kube-apiserver built by `auditcov cover build`
(hack/e2e/build-cover.sh) whose coverage agent registers with the sink: the sink snapshots its counters before
it answers the first event of each test, so each test gets its own kube-apiserver lines, exactly bounded. Every
check of the other modes holds there too; three tests are also run each alone on a fresh apiserver, and their
lines compared with the whole run's (alone/summary.txt).

The live spec: every mode runs `serve --openapi auto --kubeconfig <the admin kubeconfig>`. In batch mode auditcov
starts after the apiserver (which retries its first batches until auditcov answers) and fetches the spec at
start. In the blocking modes the apiserver cannot start without its webhook answering (each request waits for it),
so auditcov starts first: its cluster does not answer yet, so it keeps asking, and once the catalogue arrives it
maps new batches and the events stored meanwhile itself; the test checks that it logged doing so.

Runs only under `make e2e` (AUDITCOV_E2E=1), which builds the binaries first; there a missing binary is an
error, not a skip. Everything it writes stays in build/e2e/<mode>/ for inspection.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from controlplane import (
    Certificates,
    ControlPlane,
    Process,
    binary_dir,
    missing_binaries,
    webhook_audit,
    webhook_port,
)
from deployfiles import deploy_dry_run
from traffic import (
    E2E_MARKS,
    KUBECTL_COMMANDS,
    OUT,
    SHARED_AUDIT_ID,
    auditcov,
    logged_events,
    start_auditcov,
    stored_events,
)

FOCUS = Path(os.environ.get("AUDITCOV_E2E_FOCUS") or Path(__file__).with_name("focus.txt"))
#: The apiserver's own count of audit events and of the ones its backends failed to deliver or rejected.
AUDIT_METRICS = (
    "apiserver_audit_event_total",
    "apiserver_audit_error_total",
    "apiserver_audit_requests_rejected_total",
)

pytestmark = E2E_MARKS


def focus_tests() -> list[str]:
    """The e2e tests to run, one exact name per line of focus.txt (# starts a comment)."""
    names = []
    for line in FOCUS.read_text().splitlines():
        name = line.split(" #", 1)[0].strip() if not line.startswith("#") else ""
        if name:
            names.append(name)
    return names


def focus_regex(names: list[str]) -> str:
    """A Ginkgo focus that selects `names` (RE2 accepts Python's escapes of punctuation).

    Anchored at the end only: the text Ginkgo matches does not start with the test name (a `^` selects nothing).
    """
    return "(" + "|".join(re.escape(name) for name in names) + ")$"


@dataclass
class Outcome:
    """What one end-to-end session left behind."""

    mode: str
    run: str
    work: Path
    store: Path
    audit_log: Path
    passed: list[str]
    failed: list[str]
    metrics: dict[str, float]  # AUDIT_METRICS, scraped before the apiserver stopped
    apiserver_log: Path
    auditcov_log: Path
    deploy_problems: list[str] | None = None  # what a server-side dry run of config/deploy found wrong (batch)


def junit_results(report_dir: Path) -> tuple[list[str], list[str]]:
    """(passed, failed) test names from e2e.test's JUnit reports; skipped specs and suite nodes are neither.

    JUnit names are `[It] <name>`; the name is what the e2e user agent carries after ` -- `.
    """
    passed, failed = [], []
    for report in sorted(report_dir.glob("junit*.xml")):
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "")
            if case.find("skipped") is not None or not name.startswith("[It] "):
                continue
            failing = case.find("failure") is not None or case.find("error") is not None
            (failed if failing else passed).append(name.removeprefix("[It] "))
    return passed, failed


def run_e2e(plane: ControlPlane, work: Path, names: list[str] | None = None) -> Path:
    """Run the focused e2e.test conformance tests (or `names`) against `plane`, one at a time (e2e.test runs
    its specs serially); returns the JUnit report folder."""
    report_dir = work / "junit"
    with (work / "e2e.log").open("wb") as out:
        subprocess.run(
            [
                str(binary_dir() / "e2e.test"),
                f"--kubeconfig={plane.kubeconfig}",
                f"--kubectl-path={binary_dir() / 'kubectl'}",
                "--provider=skeleton",
                # The default (-1) counts ready nodes and fails when there are none.
                "--num-nodes=1",
                "--disable-log-dump",
                f"--report-dir={report_dir}",
                f"--ginkgo.focus={focus_regex(names or focus_tests())}",
                "--ginkgo.no-color",
                "--ginkgo.v",
                "--ginkgo.timeout=40m",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
            timeout=45 * 60,
            check=False,
        )
    return report_dir


def cover_binary() -> Path:
    """The kube-apiserver with the coverage agent in it (hack/e2e/build-cover.sh, which make e2e runs)."""
    apiserver = Path(os.environ.get("AUDITCOV_E2E_COVER_BIN") or f"{binary_dir()}-cover") / "kube-apiserver"
    if not apiserver.exists():
        pytest.fail(f"{apiserver} is not built; run hack/e2e/build-cover.sh (make e2e does)")
    return apiserver


def agent_environment(certs: Certificates, sink_url: str, run: str) -> dict[str, str]:
    """The coverage agent's settings for the instrumented kube-apiserver: any free loopback port, registered with
    the sink over mTLS (the sink requires a client certificate of the test CA, as the webhook's)."""
    client = certs.issue("coverage-agent", user="kube-apiserver-coverage-agent")
    return {
        "AUDITCOV_AGENT": "127.0.0.1:0",
        "AUDITCOV_SINK": sink_url,
        "AUDITCOV_SINK_CA": str(certs.ca),
        "AUDITCOV_SINK_CERT": str(client.cert),
        "AUDITCOV_SINK_KEY": str(client.key),
        "AUDITCOV_RUN": run,
        "AUDITCOV_PROCESS": "kube-apiserver",
    }


@dataclass
class Session:
    """One control plane and sink: what ran and what it left, before the checks."""

    plane: ControlPlane
    sink: Process
    passed: list[str]
    failed: list[str]
    metrics: dict[str, float]
    e2e_seconds: float
    deploy_problems: list[str] | None


def run_session(
    mode: str, run: str, work: Path, names: list[str] | None = None, *, kubectl: bool = True, agent: bool = True
) -> Session:
    """Start a control plane auditing to a sink in `mode` (batch, blocking, or cover: blocking with the
    instrumented kube-apiserver and its agent), run the kubectl traffic and the e2e tests, stop everything.
    `agent=False` runs the cover mode's binary with its agent off (bench/e2e_cover.py compares the two)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    certs = Certificates(work / "pki")
    # auditcov listens where config/webhook-mtls.kubeconfig sends, and stores what comes to /v1/audit in `run`.
    port = webhook_port()
    sink_url = f"https://127.0.0.1:{port}"
    webhook_mode = "blocking" if mode == "cover" else mode
    cover = mode == "cover"
    plane = ControlPlane(
        work,
        certs,
        webhook_audit(work, certs, webhook_mode),
        cover_binary() if cover else None,
        apiserver_env=agent_environment(certs, sink_url, run) if cover and agent else None,
    )
    # The admin kubeconfig exists from here on (ControlPlane writes it), before auditcov reads it at start.
    live_spec = ["--openapi=auto", f"--kubeconfig={plane.kubeconfig}", f"--default-run={run}"]
    sink = None
    try:
        if webhook_mode == "blocking":
            sink = start_auditcov(work, certs, port, *live_spec)
            plane.start()
        else:
            plane.start()
            sink = start_auditcov(work, certs, port, *live_spec)
        namespaces = plane.namespaces()
        if kubectl:
            for args, stdin in KUBECTL_COMMANDS:
                plane.kubectl(*args, stdin=stdin)
            for _ in range(2):
                plane.get("/api/v1/namespaces/default", headers={"Audit-ID": SHARED_AUDIT_ID})
        deploy_problems = deploy_dry_run(plane, work / "deploy") if mode == "batch" else None
        started = time.monotonic()
        passed, failed = junit_results(run_e2e(plane, work, names))
        e2e_seconds = time.monotonic() - started
        plane.wait_for_namespaces(namespaces)
        if cover and agent:
            # The end of the last test: a boundary with no test after it.
            sink_post(certs, f"{sink_url}/v1/runs/{run}/snapshots")
        metrics = {name: plane.metric(name) for name in AUDIT_METRICS}
        plane.stop_apiserver()
        sink.stop()
    finally:
        plane.stop()
        if sink is not None:
            sink.stop()
    return Session(plane, sink, passed, failed, metrics, e2e_seconds, deploy_problems)


def sink_post(certs: Certificates, url: str) -> bytes:
    """POST an empty JSON object to the sink as a client of the test CA."""
    context = certs.client_context(certs.issue("sink-client", user="e2e-harness"))
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module", params=["batch", "blocking", "cover"])
def outcome(request) -> Outcome:
    missing = missing_binaries()
    if missing:
        pytest.fail(f"not built in {binary_dir()}: {', '.join(missing)}; run hack/e2e/build.sh (make e2e does)")
    mode = request.param
    run = f"e2e-{mode}"
    work = OUT / mode
    session = run_session(mode, run, work)
    outcome = Outcome(
        mode,
        run,
        work,
        work / "auditcov.db",
        session.plane.audit_log,
        session.passed,
        session.failed,
        session.metrics,
        work / "kube-apiserver.log",
        session.sink.log,
        session.deploy_problems,
    )
    text = summary(outcome, session.e2e_seconds)
    if mode == "cover":
        text += cover_summary(outcome)
    (work / "summary.txt").write_text(text)
    return outcome


def summary(outcome: Outcome, e2e_seconds: float) -> str:
    """What `make e2e` prints for a mode: tests, the audit log against the store, unmatched events by reason,
    the apiserver's audit metrics."""
    logged = logged_events(outcome.audit_log)
    stored = stored_events(outcome.store, outcome.run)
    with sqlite3.connect(outcome.store) as db:
        quarantined, duplicates = db.execute(
            "SELECT (SELECT count(*) FROM quarantine WHERE run = ?1), (SELECT duplicates FROM runs WHERE name = ?1)",
            (outcome.run,),
        ).fetchone()
        unmatched = db.execute(
            "SELECT unmatched_reason, count(*) FROM events WHERE run = ? AND unmatched_reason IS NOT NULL "
            "GROUP BY 1 ORDER BY 2 DESC",
            (outcome.run,),
        ).fetchall()
        unmapped = db.execute(
            "SELECT count(*) FROM events WHERE run = ? AND operation_id IS NULL AND unmatched_reason IS NULL",
            (outcome.run,),
        ).fetchone()[0]
    lines = [
        f"== make e2e, {outcome.mode} mode (run {outcome.run}) ==",
        f"e2e.test: {len(outcome.passed)} passed, {len(outcome.failed)} failed in {e2e_seconds:.0f} s",
        f"audit log: {logged.total()} events (auditID+stage); stored by auditcov: {stored.total()}; "
        f"missing {(logged - stored).total()}, extra {(stored - logged).total()}; "
        f"quarantined {quarantined}, duplicates {duplicates}",
        f"mapped: {stored.total() - sum(count for _, count in unmatched) - unmapped}, unmatched with a reason: "
        f"{sum(count for _, count in unmatched)}, with no reason: {unmapped}",
        *(f"    {count:7d}  {reason}" for reason, count in unmatched),
        *(f"{name}: {value:g}" for name, value in outcome.metrics.items()),
    ]
    return "\n".join(lines) + "\n"


def cover_report(store: Path, run: str) -> dict[str, dict]:
    """Each test's lines, from `auditcov cover report --format json` (the per-test model every report reads)."""
    report = orjson.loads(auditcov("cover", "report", "--format=json", f"--db={store}", f"--run={run}").stdout)
    return {test["test"]: test for test in report["tests"]}


def covered_lines(test: dict) -> set[tuple[str, int]]:
    """(file, line) of every line a test's report entry covers (its files hold [first, last] ranges)."""
    return {
        (file, line)
        for file, ranges in test["files"].items()
        for first, last in ranges
        for line in range(first, last + 1)
    }


def cover_summary(outcome: Outcome) -> str:
    """The coverage lines of `make e2e`'s summary: snapshots taken and missing, lines per test."""
    with sqlite3.connect(outcome.store) as db:
        snapshots, missing, first, last = db.execute(
            "SELECT count(*), count(missing), min(at_us), max(at_us) FROM cover_snapshots WHERE run = ?",
            (outcome.run,),
        ).fetchone()
    tests = cover_report(outcome.store, outcome.run)
    counts = sorted(test["lines_covered"] for test in tests.values())
    incomplete = [name for name, test in tests.items() if test["problems"]]
    costs = boundary_costs(outcome.auditcov_log)
    return (
        f"coverage: {snapshots} kube-apiserver snapshots ({missing} missing) over {(last - first) / 1e6:.0f} s; "
        f"{len(tests)} tests with lines, {len(incomplete)} incomplete; lines per test min {counts[0]}, "
        f"median {counts[len(counts) // 2]}, max {counts[-1]}\n"
        f"boundary cost (the sink's time to snapshot and store before it answers the event opening a test), "
        f"{len(costs)} boundaries: p50 {percentile(costs, 50):.1f} ms, p99 {percentile(costs, 99):.1f} ms, "
        f"max {max(costs):.1f} ms\n"
    )


def boundary_costs(auditcov_log: Path) -> list[float]:
    """Milliseconds each boundary that opened a test took, as the sink logged them."""
    pattern = re.compile(r"coverage boundary of run \S+ at \S+ \((.*)\): \d+ agents in ([\d.]+) ms")
    found = (pattern.search(line) for line in auditcov_log.read_text(errors="replace").splitlines())
    return sorted(float(match[2]) for match in found if match and match[1] != "no test")


def percentile(values: list[float], percent: float) -> float:
    """The nearest-rank percentile of sorted `values`."""
    return values[max(0, int(-(-len(values) * percent // 100)) - 1)] if values else float("nan")


#: Tests run again, each alone on a fresh apiserver, to compare with their lines in the whole run.
ALONE = [
    "[sig-storage] ConfigMap should be immutable if `immutable` field is set [Conformance]",
    "[sig-api-machinery] Watchers should be able to restart watching from the last resource version observed by "
    "the previous watch [Conformance]",
    "[sig-node] Lease lease API should be available [Conformance]",
]


@pytest.fixture(scope="module")
def alone(outcome: Outcome) -> dict[str, dict]:
    """test -> its report entry from a session of its own: a fresh control plane running that test alone."""
    if outcome.mode != "cover":
        pytest.skip("only the coverage mode measures lines")
    names = [name for name in ALONE if name in outcome.passed]
    if not names:
        pytest.skip("none of the tests to run alone is in this focus")
    entries = {}
    for number, name in enumerate(names):
        run = f"e2e-alone-{number}"
        work = OUT / "alone" / str(number)
        session = run_session("cover", run, work, names=[name], kubectl=False)
        assert session.passed == [name], f"{name} alone: passed {session.passed}, failed {session.failed}"
        entries[name] = cover_report(work / "auditcov.db", run)[name]
    return entries


def test_each_test_has_its_apiserver_lines_from_exact_boundaries(outcome: Outcome) -> None:
    """Coverage mode: every boundary snapshot was taken, and every test that ran has kube-apiserver lines of its
    own, complete (no missing or undecodable snapshot at its edges)."""
    if outcome.mode != "cover":
        pytest.skip("only the coverage mode measures lines")
    with sqlite3.connect(outcome.store) as db:
        missing = db.execute(
            "SELECT at_us, missing FROM cover_snapshots WHERE run = ? AND missing IS NOT NULL", (outcome.run,)
        ).fetchall()
    assert missing == []
    tests = cover_report(outcome.store, outcome.run)
    for name in outcome.passed:
        assert name in tests, f"{name!r} has no code coverage"
        assert tests[name]["problems"] == [], f"{name!r}: {tests[name]['problems']}"
        assert tests[name]["lines_covered"] > 0, f"{name!r} covers no kube-apiserver line"


def test_a_test_alone_on_a_fresh_apiserver_covers_nearly_the_same_lines(outcome: Outcome, alone: dict) -> None:
    """Each of three tests run alone on a fresh apiserver covers nearly every line it covered in the whole run.

    They cannot be equal: the apiserver works in the background (its controllers, lease and storage-version
    loops, kube-controller-manager's requests, the previous test's namespace being finalized), so each window
    holds some lines of that too; and a fresh apiserver runs first-use paths (caches filled, schemas compiled)
    that the whole run had already taken before. The comparison is written to alone/summary.txt."""
    tests = cover_report(outcome.store, outcome.run)
    lines, kept = [], {}
    for name, single in alone.items():
        whole, by_itself = covered_lines(tests[name]), covered_lines(single)
        shared = len(whole & by_itself)
        kept[name] = shared / len(whole)
        lines.append(
            f"{name}\n    whole run {len(whole)} lines, alone {len(by_itself)}, both {shared} "
            f"({kept[name]:.1%} of the whole run's), only in the whole run {len(whole - by_itself)}, "
            f"only alone {len(by_itself - whole)}"
        )
    (OUT / "alone" / "summary.txt").write_text(
        "== make e2e, tests alone against the whole run ==\n" + "\n".join(lines) + "\n"
    )
    # Measured: 97.6-100% of the whole run's lines, while a fresh apiserver's first use adds up to 20% more.
    assert all(share >= 0.95 for share in kept.values()), lines


def test_every_focused_test_ran_and_passed(outcome: Outcome) -> None:
    assert outcome.failed == []
    assert sorted(outcome.passed) == sorted(focus_tests())


def test_nothing_lost_nothing_extra(outcome: Outcome) -> None:
    logged = logged_events(outcome.audit_log)
    stored = stored_events(outcome.store, outcome.run)
    assert len(logged) > 1000
    # Only the two requests sent with one Audit-ID share an auditID and stage.
    assert {key for key, times in logged.items() if times > 1} == {
        key for key in logged if key[0] == SHARED_AUDIT_ID
    }, "the audit log repeats an auditID+stage of its own"
    missing = logged - stored
    extra = stored - logged
    assert not missing, f"{sum(missing.values())} logged events never reached auditcov, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{sum(extra.values())} events in auditcov are not in the audit log, e.g. {sorted(extra)[:5]}"
    with sqlite3.connect(outcome.store) as db:
        quarantined = db.execute("SELECT count(*) FROM quarantine WHERE run = ?", (outcome.run,)).fetchone()[0]
    assert quarantined == 0


def test_requests_sharing_an_audit_id_are_both_stored(outcome: Outcome) -> None:
    logged = logged_events(outcome.audit_log)
    stored = stored_events(outcome.store, outcome.run)
    assert logged[(SHARED_AUDIT_ID, "ResponseComplete")] == 2
    assert stored[(SHARED_AUDIT_ID, "ResponseComplete")] == 2


def test_apiserver_reports_no_audit_errors(outcome: Outcome) -> None:
    assert outcome.metrics["apiserver_audit_event_total"] > 0, "/metrics was not scraped"
    assert outcome.metrics["apiserver_audit_error_total"] == 0
    assert outcome.metrics["apiserver_audit_requests_rejected_total"] == 0
    assert "Error in audit plugin" not in outcome.apiserver_log.read_text(errors="replace")


def test_every_request_is_mapped_or_explained(outcome: Outcome) -> None:
    with sqlite3.connect(outcome.store) as db:
        unexplained = db.execute(
            "SELECT verb, request_uri FROM events WHERE run = ? AND operation_id IS NULL AND unmatched_reason IS NULL",
            (outcome.run,),
        ).fetchall()
        unmatched = db.execute(
            "SELECT unmatched_reason, verb, request_uri, count(*) FROM events "
            "WHERE run = ? AND operation_id IS NULL AND unmatched_reason IS NOT NULL "
            "GROUP BY 1, 2, 3 ORDER BY 1, 3",
            (outcome.run,),
        ).fetchall()
    (outcome.work / "unmatched.txt").write_text(
        "".join(f"{count}\t{verb}\t{uri}\t{reason}\n" for reason, verb, uri, count in unmatched)
    )
    assert unexplained == []


def test_blocking_sink_maps_what_it_stored_before_the_catalogue(outcome: Outcome) -> None:
    """In blocking mode auditcov starts before its cluster answers: the events it stored before the catalogue
    arrived were mapped by the sink itself once it did (there is no `remap` here)."""
    if outcome.mode == "batch":
        pytest.skip("only blocking webhook modes start auditcov before the apiserver")
    log = outcome.auditcov_log.read_text(errors="replace")
    arrived = re.search(r"endpoint catalogue from .*: (\d+) operations; (\d+) events stored before it mapped", log)
    assert arrived, f"auditcov never logged the catalogue's arrival; see {outcome.auditcov_log}"
    operations, stored_before = map(int, arrived.groups())
    assert operations > 0
    # Requests audited before the catalogue arrived: at least auditcov's own fetches of it.
    assert stored_before > 0
    with sqlite3.connect(outcome.store) as db:
        unexplained = db.execute(
            "SELECT count(*) FROM events WHERE run = ? AND operation_id IS NULL AND unmatched_reason IS NULL",
            (outcome.run,),
        ).fetchone()[0]
    assert unexplained == 0


def test_report_lists_every_test_with_endpoints(outcome: Outcome) -> None:
    """Every test that ran is in `auditcov report --format json` under its exact name, with endpoints its own
    client hit, and flagged conformance exactly when its name says [Conformance]."""
    report_path = outcome.work / "report.json"
    auditcov("report", "--format", "json", f"--db={outcome.store}", f"--run={outcome.run}", f"--output={report_path}")
    report = orjson.loads(report_path.read_bytes())
    tests = {test["test"]: test for test in report["tests"]}
    assert report["totals"]["unmapped_events"] == 0
    for name in outcome.passed:
        assert name in tests, f"{name!r} is missing from the report"
        direct = [op for op, how in tests[name]["endpoints"].items() if "direct" in how]
        assert direct, f"{name!r} has no endpoint hit by its own client"
        assert tests[name]["conformance"] == ("[Conformance]" in name)


def test_deploy_kustomization_passes_a_server_side_dry_run(outcome: Outcome) -> None:
    """config/deploy, as it is and through an overlay (image, store size, a filled Secret), is accepted by the
    real apiserver with no rejection and no warning (its namespace warns of any "restricted" Pod Security
    violation)."""
    if outcome.deploy_problems is None:
        pytest.skip("checked once, in batch mode")
    assert outcome.deploy_problems == []
