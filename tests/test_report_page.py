"""The HTML report in a real browser: Debian's headless Chromium, driven by Python playwright (which never
downloads a browser of its own here: it is given /usr/bin/chromium).

The store is a run's worth of real events replayed through `auditcov serve` and real per-test coverage.py lines
(tests/report_support.py). The page is opened from a running sink (`GET /`) and from a `file://` copy; every
test fails on any console message of level error or warning and on any uncaught page error. Screenshots go to
the test's tmp dir, and also to $AUDITCOV_SCREENSHOTS when that names a folder (the README's comes from there).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from playwright.sync_api import Page, sync_playwright
from report_support import E2E_AGENT, event_list, import_code, measure_code, replayed_store, run_events
from test_sink_process import Sink

from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.reports.coverjson import report_test_lines
from auditcov.merge.reports.endpointcov import endpoint_coverage
from auditcov.merge.reports.html import html_report, page_document
from auditcov.merge.store import open_store_readonly
from auditcov.sink.cli import cli
from auditcov.sink.server import banner
from auditcov.sink.settings import Settings

CHROMIUM = "/usr/bin/chromium"
#: What Chromium needs as root in a container, and nothing that reaches out (updates, sync, QUIC probes).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
JSON = {"Content-Type": "application/json"}
RUN = "e2e-1.36.0"
#: An earlier run of the same suite, to compare with: fewer tests, and each test's code measured on half its events.
BASE = "e2e-base"
#: A test name that is also markup: the page must show it as text.
ODD_TEST = "[sig-testing] names are text, not markup: </script><b>bold</b> & <!-- [Conformance]"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A store of real replayed events (60 tests) with each test's real code coverage, and a base run to compare
    with (stored first, so the sink's page shows the other by default)."""
    tmp = tmp_path_factory.mktemp("report-store")
    events, own = run_events(60, RUN)
    odd = dict(events[-1], auditID="odd-1", userAgent=f"{E2E_AGENT} -- {ODD_TEST}", requestURI="/api/v1/nodes")
    events.append(odd)
    own[ODD_TEST] = [odd]
    base_own = {test: items[: max(1, len(items) // 2)] for test, items in list(own.items())[:45]}
    runs = {BASE: [item for test in base_own for item in own[test]], RUN: events}
    return replayed_store(tmp, runs, {BASE: base_own, RUN: own})


@pytest.fixture(scope="module")
def report(store) -> dict:
    """`auditcov report --format json` of the store: what the page must agree with; each test's `code.files`
    (its interned lines decoded) as the query API gives them."""
    result = CliRunner().invoke(cli, ["report", "--db", str(store), "--run", RUN, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = orjson.loads(result.output)
    for entry in document["tests"]:
        if entry["code"]:
            entry["code"]["files"] = report_test_lines(document, entry)
    return document


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (or: apt-get install chromium)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        yield context
        context.close()


class Watched:
    """A page whose console errors, warnings and uncaught errors are collected, and whose requests are listed."""

    def __init__(self, context, tmp_path: Path):
        self.page: Page = context.new_page()
        self.tmp_path = tmp_path
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("request", lambda request: self.requests.append(request.url))

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"console {message.type}: {message.text}")

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("#view[data-ready]")

    def go(self, selector: str) -> None:
        """Click, and wait until the view has been drawn again."""
        self.page.evaluate("document.getElementById('view').removeAttribute('data-ready')")
        self.page.click(selector)
        self.page.wait_for_selector("#view[data-ready]")

    def go_svg(self, selector: str) -> None:
        """Click an SVG shape where it is really drawn (the middle of its box may be another shape)."""
        point = self.page.eval_on_selector(
            selector,
            """shape => {
                const box = shape.getBoundingClientRect();
                for (let i = 1; i < 40; i++) for (let j = 1; j < 40; j++) {
                    const x = box.left + box.width * i / 40, y = box.top + box.height * j / 40;
                    if (document.elementFromPoint(x, y) === shape) return [x, y];
                }
                return null;
            }""",
        )
        assert point is not None, f"{selector} is nowhere visible"
        self.page.evaluate("document.getElementById('view').removeAttribute('data-ready')")
        self.page.mouse.click(*point)
        self.page.wait_for_selector("#view[data-ready]")

    def screenshot(self, name: str) -> Path:
        path = self.tmp_path / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=False)
        wanted = os.environ.get("AUDITCOV_SCREENSHOTS")
        if wanted:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(wanted) / path.name)
        return path

    def close(self) -> None:
        self.page.close()
        assert self.problems == []


@pytest.fixture
def watched(browser_context, tmp_path):
    page = Watched(browser_context, tmp_path)
    yield page
    page.close()


def _conformance_test_with_code(report: dict) -> dict:
    candidates = [t for t in report["tests"] if t["conformance"] and t["code"] and len(t["endpoints"]) >= 3]
    return max(candidates, key=lambda t: (len(t["endpoints"]), t["test"]))


def test_from_the_sink_a_click_into_a_test_shows_its_endpoints_and_lines(store, report, watched):
    sink = Sink(store)
    try:
        watched.open(f"{sink.url}/")
        page = watched.page
        totals = report["totals"]
        lead = page.inner_text(".card.lead")
        assert f"{totals['eligible_conformance_tested']} of {totals['eligible']}" in lead
        watched.screenshot("report-endpoints")

        chosen = _conformance_test_with_code(report)
        watched.go("#tabs a[href='#tests']")
        page.fill("#test-search", chosen["test"][-40:])
        watched.go(f"table.tests a:text-is({orjson.dumps(chosen['test']).decode()})")
        assert page.inner_text("#test-name") == chosen["test"]
        shown = page.eval_on_selector_all("#test-endpoints a.mono", "links => links.map(a => a.textContent)")
        assert shown == sorted(chosen["endpoints"])
        files = page.eval_on_selector_all("#test-files a.mono", "links => links.map(a => a.textContent)")
        assert "openapi/matcher.py" in files  # shown relative to the folder all files share
        assert len(files) == len(chosen["code"]["files"])
        watched.screenshot("report-test")

        # From the test to one of its files: the lines this test ran, each with the tests that ran it; then every
        # line of the file, this test's marked.
        watched.go("#test-files a:text-is('openapi/matcher.py')")
        assert page.inner_text("#file-name").endswith("merge/openapi/matcher.py")
        file = next(name for name in chosen["code"]["files"] if name.endswith("merge/openapi/matcher.py"))
        lines = {n for a, b in chosen["code"]["files"][file] for n in range(a, b + 1)}

        def shown_lines(rows: str) -> set[int]:
            found = set()
            for text in page.eval_on_selector_all(f"{rows} td:first-child", "cells => cells.map(c => c.textContent)"):
                first, _, last = text.partition("\u2013")  # an en dash, as the page writes ranges
                found.update(range(int(first), int(last or first) + 1))
            return found

        assert shown_lines("table.lines tbody tr") == lines
        first_names = page.eval_on_selector_all(
            "table.lines td.names > div:first-child a", "a => a.map(x => x.textContent)"
        )
        assert set(first_names) == {chosen["test"]}  # listed first wherever it ran
        watched.screenshot("report-file")
        page.uncheck("#filter-ownLines")
        page.wait_for_selector("#view[data-ready]")
        assert shown_lines("table.lines tr.hit") == lines
        assert shown_lines("table.lines tbody tr") > lines  # other tests ran other lines of the matcher
    finally:
        assert sink.stop() == 0


def test_the_sunburst_zooms_filters_and_opens_an_endpoint(store, report, watched):
    sink = Sink(store)
    try:
        watched.open(f"{sink.url}/")
        page = watched.page
        current = {e["operation_id"]: e for e in report["endpoints"] if not e["deprecated"]}
        assert page.locator("path.leaf").count() == len(current)
        conformance = sum(e["conformance_tested"] for e in current.values())
        assert page.locator("path.leaf.conf").count() == conformance
        page.check("#filter-eligibleOnly")
        page.wait_for_selector("#view[data-ready]")
        assert page.locator("path.leaf").count() == sum(e["eligible"] for e in current.values())
        page.uncheck("#filter-eligibleOnly")

        watched.go_svg("path[data-key='/stable']")
        assert page.inner_text(".crumbs") == "all endpoints \u203a stable"
        stable = [e for e in current.values() if e["level"] == "stable"]
        assert page.locator("path.leaf").count() == len(stable)
        tested = next(e for e in sorted(stable, key=lambda e: e["operation_id"]) if e["conformance_tested"])
        watched.go_svg(f"path[data-endpoint='{tested['operation_id']}']")
        assert page.inner_text(".side h2") == tested["operation_id"]
        listed = page.eval_on_selector_all(".side tbody tr td:first-child a", "links => links.map(a => a.textContent)")
        hit_by = {t["test"] for t in report["tests"] if tested["operation_id"] in t["endpoints"]}
        assert set(listed) == hit_by
        watched.screenshot("report-endpoint")
    finally:
        assert sink.stop() == 0


def test_the_same_file_works_offline_from_a_file_url(store, report, watched, tmp_path):
    db = open_store_readonly(store)
    try:
        html = tmp_path / "report.html"
        html.write_text(html_report(db, RUN))
    finally:
        db.conn.close()
    watched.open(html.as_uri())
    page = watched.page
    assert page.locator("path.leaf").count() > 0
    watched.go("#tabs a[href='#tests']")
    watched.go(f"table.tests a:text-is({orjson.dumps(ODD_TEST).decode()})")
    assert page.inner_text("#test-name") == ODD_TEST  # shown as text: no <b>, no script cut short
    assert page.locator("#test-name b").count() == 0
    watched.go("#tabs a[href='#code']")
    assert page.locator("table.list tbody tr").count() == len(
        {f for t in report["tests"] if t["code"] for f in t["code"]["files"]}
    )
    assert all(url.startswith(("file://", "data:")) for url in watched.requests), watched.requests
    watched.screenshot("report-offline-code")


def test_an_empty_store_says_how_to_point_an_apiserver_here(tmp_path, watched, monkeypatch):
    sink = Sink(tmp_path / "empty.db")
    try:
        watched.open(f"{sink.url}/")
        monkeypatch.chdir(tmp_path)  # where the sink runs: the banner reads ./config when there is one
        expected = banner(Settings(db=str(tmp_path / "empty.db")), sink.url)
        assert watched.page.inner_text("#setup").strip() == expected.strip()
        assert f"{sink.url}/v1/audit/default" in watched.page.inner_text("#setup")
        watched.screenshot("report-empty")
    finally:
        assert sink.stop() == 0


def test_with_a_query_token_the_page_asks_for_it_once(store, tmp_path, watched):
    token_file = tmp_path / "query.token"
    token_file.write_text("s3cret-query\n")
    sink = Sink(store, "--query-token-file", str(token_file))
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{sink.url}/", timeout=30)
        assert refused.value.code == 401 and b"query token" in refused.value.read()
        request = urllib.request.Request(f"{sink.url}/?run={RUN}", headers={"Authorization": "Bearer s3cret-query"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200 and b'id="auditcov-data"' in answer.read()

        page = watched.page
        page.goto(f"{sink.url}/?token=wrong")
        assert "not the sink's query token" in page.inner_text("body")
        page.fill("input[name=token]", "s3cret-query")
        page.click("button[type=submit]")
        page.wait_for_selector("#view[data-ready]")
        assert page.url == f"{sink.url}/"  # the token left the address bar
        cookie = next(c for c in page.context.cookies() if c["name"] == "auditcov_query_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.reload()
        page.wait_for_selector("#view[data-ready]")
        # The 401 answers above were the page asking for the token: Chromium logs each as a failed load.
        watched.problems = [p for p in watched.problems if "401" not in p]
    finally:
        assert sink.stop() == 0


def test_unknown_run_is_a_404_naming_the_runs(store):
    sink = Sink(store)
    try:
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{sink.url}/?run=nope", timeout=30)
        assert missing.value.code == 404
        assert orjson.loads(missing.value.read()) == {"error": "no run 'nope' in the store"}
    finally:
        assert sink.stop() == 0


def _expand(numbers: list[int]) -> set[int]:
    """The numbers of `[start, length, gap, length, ...]` runs (each start relative to the end of the run before)."""
    end, found = 0, set()
    for gap, length in zip(numbers[::2], numbers[1::2], strict=True):
        first = end + gap
        end = first + length - 1
        found.update(range(first, end + 1))
    return found


def test_the_document_holds_each_tests_lines_exactly(store, report):
    """The compact segments decode to exactly the lines of the JSON report (what the page draws from), and tests
    that ran a file the same way share its segment."""
    db = open_store_readonly(store)
    try:
        document = page_document(RUN, endpoint_coverage(db, RUN), per_test_coverage(db, RUN))
    finally:
        db.conn.close()
    names = [name for name, _ in document["tests"]]
    segments = document["segments"]
    assert len({(file, tuple(numbers)) for file, *numbers in segments}) == len(segments)
    shared = 0
    for entry in report["tests"]:
        if not entry["code"]:
            continue
        numbers = _expand(document["code"][str(names.index(entry["test"]))]["segments"])
        files = [segments[number][0] for number in numbers]
        assert len(files) == len(set(files))  # one segment per file
        got = {document["files"][segments[number][0]]: _expand(segments[number][1:]) for number in numbers}
        expected = {f: {n for a, b in spans for n in range(a, b + 1)} for f, spans in entry["code"]["files"].items()}
        assert got == expected, entry["test"]
        shared += len(numbers)
    assert len(segments) < shared / 2  # the tests share most of their segments


def test_the_diff_against_another_run_shows_what_changed(store, watched):
    sink = Sink(store)
    try:
        with urllib.request.urlopen(f"{sink.url}/v1/diff?base={BASE}&head={RUN}", timeout=30) as answer:
            diff = orjson.loads(answer.read())
        assert diff["endpoints"]["gained"] and diff["tests"]["changed"]
        watched.open(f"{sink.url}/?run={RUN}&base={BASE}")
        page = watched.page
        watched.go("#tabs a[href='#diff']")
        gained = page.eval_on_selector_all("#diff-endpoints-gained li", "items => items.map(i => i.textContent)")
        assert gained == diff["endpoints"]["gained"]
        assert page.locator("table.diff-tests tbody tr").count() == len(diff["tests"]["changed"])
        # A test whose code ran more lines: its row opens to the files and the lines gained.
        index, changed = next(
            (i, r) for i, r in enumerate(diff["tests"]["changed"]) if r["lines"] and r["lines"]["gained"]
        )
        row = page.locator("table.diff-tests tbody tr").nth(index)
        row.locator("details summary").click()
        assert row.locator(".diff-file .gained").first.is_visible()
        assert row.locator(".diff-file").count() == len(changed["lines"]["files"])
        watched.screenshot("report-diff")
        # The page chooses another comparison itself.
        assert page.eval_on_selector("#base-select", "select => select.value") == BASE
        page.select_option("#base-select", "")
        page.wait_for_selector("#view[data-ready]")
        assert page.locator("#tabs a[href='#diff']").count() == 0
    finally:
        assert sink.stop() == 0


def test_report_format_html_with_a_diff_base(store, tmp_path, watched):
    html = tmp_path / "report.html"
    command = ["report", "--db", str(store), "--run", RUN, "--format", "html", "--diff-base", BASE, "-o", str(html)]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    watched.open(html.as_uri())
    watched.go("#tabs a[href='#diff']")
    assert f"{RUN} compared with {BASE}" in watched.page.inner_text("#view h2")
    result = CliRunner().invoke(
        cli, ["report", "--db", str(store), "--run", RUN, "--format", "json", "--diff-base", BASE]
    )
    assert result.exit_code == 1 and "--diff-base applies to html only, not to json" in result.output


def test_a_store_without_a_catalogue_still_shows_the_tests_code(tmp_path, watched):
    events, own = run_events(5, "plain")
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(orjson.dumps(item) + b"\n" for item in events))
    db = tmp_path / "plain.db"
    result = CliRunner().invoke(cli, ["import", "--db", str(db), "--run", "plain", str(log)])
    assert result.exit_code == 0, result.output
    import_code(db, "plain", measure_code(tmp_path, own))
    html = tmp_path / "plain.html"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--run", "plain", "--format", "html", "-o", str(html)])
    assert result.exit_code == 0, result.output
    watched.open(html.as_uri())
    assert "auditcov remap" in watched.page.inner_text("#view .notice")
    watched.go("#tabs a[href='#tests']")
    names = watched.page.eval_on_selector_all("table.tests a", "links => links.map(a => a.textContent)")
    assert set(own) <= set(names)


def test_the_live_page_is_rebuilt_only_when_its_run_changes(store, tmp_path):
    db = tmp_path / "copy.db"
    shutil.copy(store, db)
    sink = Sink(db)
    try:

        def page() -> bytes:
            with urllib.request.urlopen(f"{sink.url}/?run={RUN}", timeout=60) as answer:
                return answer.read()

        first = page()
        assert page() == first  # the same build, down to its "generated" time
        events, _ = run_events(1, RUN)
        later = dict(events[1], auditID="a-later-one", requestReceivedTimestamp="2026-05-01T00:00:00.000000Z")
        request = urllib.request.Request(f"{sink.url}/v1/audit/{RUN}", event_list([later]), JSON)
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        assert page() != first
    finally:
        assert sink.stop() == 0
