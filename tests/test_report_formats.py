"""`auditcov report` formats on real data: the text report in 80 columns (a real audit log mapped to the 1.36
spec), JUnit and the gate (real events through `auditcov import`, counted with and without --success-only), and
lcov and Cobertura of real coverage (the instrumented tests/gocov_sample, per-test snapshots as in
test_cover_pertest_go.py) opened by genhtml (Debian's lcov) and checked against Cobertura's DTD (xmllint) and the
way Codecov's parser reads a report.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import time
from pathlib import Path
from xml.etree import ElementTree

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console
from test_cover_pertest_go import PATHS, SAMPLE, _atomic_snapshots, _import, _markers
from test_cover_pycoverage import _coverage_lines
from test_cover_pycoverage import coverage_file as coverage_file  # the real pytest-cov data file, re-exported

from auditcov.merge.events import format_time
from auditcov.merge.reports.endpointcov import endpoint_coverage
from auditcov.merge.reports.endpointtable import render_endpoint_coverage
from auditcov.merge.store import open_store_readonly
from auditcov.sink.cli import cli

SPEC = "openapi/swagger-v1.36.json.gz"
E2E = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- "
CONFORMANCE_TEST = "[sig-node] ConfigMap should be consumable via the environment [NodeConformance] [Conformance]"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _store_of(tmp_path: Path, fixtures: Path, events: Path) -> str:
    db = str(tmp_path / "store.db")
    _invoke("import", "--db", db, "--run", "r", str(events))
    _invoke("remap", "--db", db, "--openapi", str(fixtures / SPEC))
    return db


def test_text_report_fits_80_columns(tmp_path, fixtures):
    db = _store_of(tmp_path, fixtures, fixtures / "audit/audit2rbac/demo.log")
    store = open_store_readonly(db)
    coverage = endpoint_coverage(store, "r")
    buffer = io.StringIO()
    render_endpoint_coverage(Console(file=buffer, width=80), coverage, untested=True)
    lines = buffer.getvalue().splitlines()
    assert max(map(len, lines)) <= 80
    assert not any("…" in line for line in lines)  # nothing cut short
    header = " ".join(lines[:8])
    for word in ("level", "endpoints", "e2e", "conformance", "incl.", "indirect", "eligible", "conf.", "tested"):
        assert re.search(rf"(^|\s){re.escape(word)}(\s|$)", header), word
    # Every untested eligible endpoint's operationId is one whole line.
    untested = [s.endpoint.operation_id for s in coverage.endpoints if s.eligible and not s.endpoint.deprecated]
    assert len(untested) == 524  # audit2rbac's demo run has no conformance test
    assert set(untested) <= {line.strip() for line in lines}


def _e2e_events(path: Path) -> None:
    """One conformance test: it lists ConfigMaps (200), and deletes a Deployment that is gone (404)."""
    base = 1_776_667_676_000_000
    items = [
        ("list", "/api/v1/namespaces/cm-1/configmaps", "configmaps", 200),
        ("delete", "/apis/apps/v1/namespaces/cm-1/deployments/web", "deployments", 404),
    ]
    lines = []
    for n, (verb, uri, resource, code) in enumerate(items):
        moment = format_time(base + n * 1000)
        group = "apps" if resource == "deployments" else ""
        lines.append(
            {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{n}",
             "stage": "ResponseComplete", "verb": verb, "requestURI": uri, "userAgent": E2E + CONFORMANCE_TEST,
             "user": {"username": "admin"},
             "objectRef": {"resource": resource, "namespace": "cm-1", "apiGroup": group, "apiVersion": "v1"},
             "responseStatus": {"code": code}, "requestReceivedTimestamp": moment, "stageTimestamp": moment}
        )  # fmt: skip
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))


def _junit_cases(xml: str) -> dict[str, str]:
    """testcase name -> passed, failure or skipped."""
    root = ElementTree.fromstring(xml)
    cases = {}
    for case in root.iter("testcase"):
        outcome = "passed"
        if case.find("failure") is not None:
            outcome = "failure"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        cases[case.get("name")] = outcome
    suite = root.find("testsuite")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(o == "failure" for o in cases.values())
    assert int(suite.get("skipped")) == sum(o == "skipped" for o in cases.values())
    return cases


def test_junit_gate_and_success_only(tmp_path, fixtures):
    events = tmp_path / "audit.jsonl"
    _e2e_events(events)
    db = _store_of(tmp_path, fixtures, events)
    cases = _junit_cases(_invoke("report", "--db", db, "--format", "junit"))
    assert len(cases) == 524  # every eligible endpoint of 1.36, pending ones included
    assert cases["listCoreV1NamespacedConfigMap"] == "passed"
    assert cases["deleteAppsV1NamespacedDeployment"] == "passed"  # a 404 is still a hit (APISnoop's rule)
    assert "skipped" in cases.values()  # untested but pending: not a failure of the gate
    # Only successful hits: the 404 delete no longer tests anything.
    strict = _junit_cases(_invoke("report", "--db", db, "--format", "junit", "--success-only"))
    assert strict["listCoreV1NamespacedConfigMap"] == "passed"
    assert strict["deleteAppsV1NamespacedDeployment"] == "failure"

    out = tmp_path / "junit_conformance.xml"
    result = CliRunner().invoke(cli, ["report", "--db", db, "--format", "junit", "--gate", "-o", str(out)])
    assert result.exit_code == 1
    failures = sum(outcome == "failure" for outcome in cases.values())
    assert f"gate: {failures} eligible endpoints no conformance test hit" in result.output
    assert _junit_cases(out.read_text()) == cases  # the report is written before the gate fails

    # The json report carries every endpoint's hits by status class.
    report = orjson.loads(_invoke("report", "--db", db, "--format", "json"))
    hits = {row["operation_id"]: row["hits"] for row in report["endpoints"]}
    assert hits["deleteAppsV1NamespacedDeployment"]["status"] == {"4xx": 1}
    assert hits["listCoreV1NamespacedConfigMap"]["status"] == {"2xx": 1}
    text = CliRunner().invoke(cli, ["report", "--db", db, "--success-only", "--untested"], env={"COLUMNS": "80"})
    assert text.exit_code == 0 and "\ndeleteAppsV1NamespacedDeployment\n" in text.output


@pytest.fixture(scope="module")
def covered_store(tmp_path_factory) -> Path:
    """A store with the atomic sample's snapshots between three marked tests."""
    tmp = tmp_path_factory.mktemp("reportcov")
    db = tmp / "store.db"
    _import(db, "r", _atomic_snapshots(tmp), "covsample")
    _markers(db, "r")
    return db


def _lcov_records(text: str) -> dict[str, dict[int, int]]:
    records: dict[str, dict[int, int]] = {}
    for record in text.split("end_of_record\n")[:-1]:
        lines = record.splitlines()
        source = next(line[3:] for line in lines if line.startswith("SF:"))
        hits = dict(tuple(map(int, line[3:].split(","))) for line in lines if line.startswith("DA:"))
        assert f"LF:{len(hits)}" in lines and f"LH:{sum(1 for c in hits.values() if c)}" in lines
        records[source] = hits
    return records


def _genhtml(tmp_path: Path, tracefile: Path) -> str:
    """genhtml over the tracefile, with the sources where the Go import paths say, from a module tree."""
    tree = tmp_path / "src"
    (tree / "example.com").mkdir(parents=True, exist_ok=True)
    if not (tree / "example.com/covsample").exists():
        (tree / "example.com/covsample").symlink_to(SAMPLE)
    out = tmp_path / f"html-{tracefile.stem}"
    done = subprocess.run(
        ["genhtml", "--output-directory", str(out), str(tracefile)], cwd=tree, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "index.html").is_file()
    # genhtml drops the common prefix; the page shows gamma.go's own source, so it found the file.
    page = (out / "covsample/gamma.go.gcov.html").read_text()
    assert "func gamma(" in page
    return done.stdout


@pytest.mark.go
def test_lcov_opens_in_genhtml(covered_store, tmp_path):
    assert shutil.which("genhtml"), "genhtml missing: `make test` installs Debian's lcov"
    db = str(covered_store)
    run_trace = tmp_path / "run.info"
    _invoke("report", "--db", db, "--format", "lcov", "-o", str(run_trace))
    whole = _lcov_records(run_trace.read_text())
    assert set(whole) == {f"example.com/covsample/{name}.go" for name in ("main", "alpha", "beta", "gamma")}
    found = sum(len(hits) for hits in whole.values())
    hit = sum(1 for hits in whole.values() for count in hits.values() if count)
    summary = _genhtml(tmp_path, run_trace)
    assert re.search(rf"lines\.+: [\d.]+% \({hit} of {found} lines\)", summary), summary

    gamma_trace = tmp_path / "gamma.info"
    _invoke("report", "--db", db, "--format", "lcov", "--test", "test-gamma", "-o", str(gamma_trace))
    text = gamma_trace.read_text()
    assert text.startswith("TN:test_gamma\n")
    gamma = _lcov_records(text)
    assert set(gamma) == set(whole)  # the whole program, the other lines at 0
    covered = {file: sorted(line for line, count in hits.items() if count) for file, hits in gamma.items()}
    assert covered["example.com/covsample/gamma.go"] == [6, 7, 8, 9, 10]  # the long branch, not line 11
    assert covered["example.com/covsample/alpha.go"] == [] and covered["example.com/covsample/beta.go"] == []
    summary = _genhtml(tmp_path, gamma_trace)
    lines_hit = sum(len(lines) for lines in covered.values())
    assert re.search(rf"\({lines_hit} of {found} lines\)", summary), summary


@pytest.mark.go
def test_cobertura_is_valid_and_reads_as_codecov_reads_it(covered_store, tmp_path, fixtures):
    assert shutil.which("xmllint"), "xmllint missing: `make test` installs Debian's libxml2-utils"
    db = str(covered_store)
    report = tmp_path / "coverage.xml"
    _invoke("report", "--db", db, "--format", "cobertura", "-o", str(report))
    dtd = fixtures / "cobertura/coverage-04.dtd"
    done = subprocess.run(["xmllint", "--noout", "--dtdvalid", str(dtd), str(report)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # Codecov's reader: the report's timestamp (ms) within max_report_age (12 h); per class its filename and per
    # line its number and hits (non-branch lines).
    root = ElementTree.parse(report).getroot()
    assert abs(int(root.get("timestamp")) / 1000 - time.time()) < 12 * 3600
    read: dict[str, dict[int, int]] = {}
    for klass in root.iter("class"):
        for line in klass.iter("line"):
            assert line.get("branch") == "false"
            read.setdefault(klass.get("filename"), {})[int(line.get("number"))] = int(line.get("hits"))
    lcov = _lcov_records(_invoke("report", "--db", db, "--format", "lcov"))
    assert read == lcov
    found = sum(len(hits) for hits in read.values())
    hit = sum(1 for hits in read.values() for count in hits.values() if count)
    assert (root.get("lines-valid"), root.get("lines-covered")) == (str(found), str(hit))
    assert [p.get("name") for p in root.iter("package")] == ["example.com/covsample"]

    # One test; a fixed report time with SOURCE_DATE_EPOCH.
    result = CliRunner().invoke(
        cli,
        ["report", "--db", db, "--format", "cobertura", "--test", PATHS[1][0]],
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert result.exit_code == 0, result.output
    beta = ElementTree.fromstring(result.output.split("\n", 2)[2])
    assert beta.get("timestamp") == "1700000000000"
    hits = {
        (klass.get("filename").rsplit("/", 1)[-1], int(line.get("number")))
        for klass in beta.iter("class")
        for line in klass.iter("line")
        if int(line.get("hits"))
    }
    assert {name for name, _ in hits} >= {"beta.go"} and not {name for name, _ in hits} & {"alpha.go", "gamma.go"}


def test_lcov_of_python_tests(coverage_file, tmp_path):
    """coverage.py contexts (pytest-cov --cov-context=test) as lcov: every line some test ran, and one test's."""
    db = str(tmp_path / "store.db")
    _invoke("cover", "import", "--db", db, "--run", "py", str(coverage_file))
    run_trace = tmp_path / "py.info"
    _invoke("report", "--db", db, "--format", "lcov", "-o", str(run_trace))
    whole = _lcov_records(run_trace.read_text())
    assert {file: set(hits) for file, hits in whole.items()} == _coverage_lines(coverage_file, ".*")
    test = "check_shapes.py::test_square"
    square = _lcov_records(_invoke("report", "--db", db, "--format", "lcov", "--test", test))
    assert set(square) == set(whole)
    ran = {file: {line for line, count in hits.items() if count} for file, hits in square.items()}
    expected = _coverage_lines(coverage_file, f"^{re.escape(test)}(\\|(setup|run|teardown))?$")
    assert {file: lines for file, lines in ran.items() if lines} == expected
    done = subprocess.run(
        ["genhtml", "--output-directory", str(tmp_path / "html"), str(run_trace)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = sum(len(hits) for hits in whole.values())
    assert f"({found} of {found} lines)" in done.stdout  # coverage.py records only lines that ran


def test_report_option_errors(tmp_path, fixtures):
    db = _store_of(tmp_path, fixtures, fixtures / "audit/audit2rbac/demo.log")
    result = CliRunner().invoke(cli, ["report", "--db", db, "--format", "junit", "--test", "t"])
    assert result.exit_code == 1 and "--test applies to lcov and cobertura only, not to junit" in result.output
    result = CliRunner().invoke(cli, ["report", "--db", db, "--format", "lcov", "--test", "no such test"])
    assert result.exit_code == 1 and "run 'r' has no test 'no such test'" in result.output
