"""The shipped example, examples/e2e-v1.36.3 (one real `make e2e` run: examples/README.md), loaded with the command
the README gives into a fresh store: the store then holds the run, its tests, each test's endpoints and each
test's kube-apiserver lines, the same figures the bundle's own reports were rendered with; loading it again adds
nothing; and the sink's page shows it in Chromium, as the bundle's report.html does from the folder (the README's
screenshot comes from here, with AUDITCOV_SCREENSHOTS).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sink_support import Sink
from test_report_page import Watched, browser_context, watched  # noqa: F401 (the page tests' Chromium fixtures)

from auditcov.sink.cli import cli

EXAMPLE = Path(__file__).parent.parent / "examples/e2e-v1.36.3"
RUN = "e2e-cover"
#: What examples/README.md says the run holds.
TESTS = 88
A_TEST = "[sig-api-machinery] ResourceQuota should manage the lifecycle of a ResourceQuota [Conformance]"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("example") / "auditcov.db"
    out = _invoke("merge", str(EXAMPLE), "--db", str(db))
    assert f"{db}: run '{RUN}' from 1 bundle(s): " in out and f", {TESTS} tests, " in out and "(0 new)" not in out
    assert "(0 new)" in _invoke("merge", str(EXAMPLE), "--db", str(db))
    return db


def test_the_example_loads_with_each_tests_endpoints_and_lines(loaded):
    report = orjson.loads(_invoke("report", "--db", str(loaded), "--run", RUN, "--format", "json"))
    summary = orjson.loads((EXAMPLE / "summary.json").read_bytes())
    assert report["totals"] == summary["totals"] and report["code_totals"] == summary["code_totals"]
    tests = {test["test"]: test for test in report["tests"]}
    assert len(tests) == TESTS and A_TEST in tests
    for name, test in tests.items():
        assert test["conformance"] and name.endswith("[Conformance]"), name
        assert test["endpoints"] and test["code"]["lines_covered"] > 0, name
    assert tests[A_TEST]["endpoints"]["createCoreV1NamespacedResourceQuota"] == ["direct"]

    # Each test's lines are the kube-apiserver's own, from a snapshot at each of its boundaries (none missing).
    cover = orjson.loads(_invoke("cover", "report", "--db", str(loaded), "--run", RUN, "--format", "json"))
    lines = {test["test"]: test for test in cover["tests"]}
    assert set(lines) == set(tests)
    for name, test in lines.items():
        assert not test["incomplete"] and test["lines_covered"] > 0, name
    files = lines[A_TEST]["files"]
    assert "k8s.io/kubernetes/pkg/registry/core/resourcequota/strategy.go" in files
    assert "k8s.io/apiserver/pkg/endpoints/handlers/create.go" in files


def test_the_sinks_page_shows_the_example(loaded, watched):  # noqa: F811
    sink = Sink(loaded)
    try:
        watched.open(f"{sink.url}/")
        page = watched.page
        assert page.inner_text("#run-line").startswith(f"run {RUN} ")
        summary = orjson.loads((EXAMPLE / "summary.json").read_bytes())["totals"]
        assert f"{summary['eligible_conformance_tested']} of {summary['eligible']}" in page.inner_text(".card.lead")
        watched.screenshot("example-report")
    finally:
        assert sink.stop() == 0
    # The bundle's own report.html is the same page, from the folder, offline.
    sent = len(watched.requests)
    watched.open(EXAMPLE.joinpath("report.html").resolve().as_uri())
    assert watched.page.inner_text("#run-line").startswith(f"run {RUN} ")
    assert f"{summary['eligible_conformance_tested']} of {summary['eligible']}" in watched.page.inner_text(".card.lead")
    assert all(url.startswith("file://") for url in watched.requests[sent:]), watched.requests[sent:]
