"""The query API on real data: APISnoop's published 1.36.0 coverage replayed through a real sink (as in
tests/test_replay_apisnoop.py) as run `base`, a second replay with tests and (test, endpoint) pairs left out as
run `head`, and real per-test Python lines (pytest-cov with contexts over tests/pyproject_sample) in both.

The answers are checked against what the fixture says (per-test endpoints, endpoint -> tests, summary totals,
untested) and against coverage.py's own per-context lines (the code reverse map); the diff against the two
runs' own answers and the pairs left out. Then 404s, 400s, the query token, the OpenAPI document against the
app's routes, and schemathesis against the running app with its own document.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import schemathesis
from coverage import CoverageData
from hypothesis import HealthCheck, given, settings
from sink_support import event, event_list
from test_replay_apisnoop import BATCH, E2E_AGENT, EventMaker, synthesise

from auditcov.merge.cover.pycoverage import ContextLines, read_contexts
from auditcov.merge.cover.snapshots import save_python_lines
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import save_catalogue
from auditcov.merge.openapi.synth import fill_template
from auditcov.merge.store import open_store
from auditcov.sink.apidoc import api_document
from auditcov.sink.app import init_app
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

pytestmark = pytest.mark.slow

SAMPLE = Path(__file__).parent / "pyproject_sample"
SQUARE, CIRCLE = "check_shapes.py::test_square", "check_shapes.py::test_circle_big"


@pytest.fixture(scope="module")
def apisnoop(fixtures) -> dict:
    with gzip.open(fixtures / "apisnoop/1.36.0.json.gz") as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def catalogue(fixtures):
    return load_catalogue(fixtures / "openapi/swagger-v1.36.json.gz")


@pytest.fixture(scope="module")
def coverage_file(tmp_path_factory) -> Path:
    """A real `.coverage` file with per-test contexts: pytest-cov with `--cov-context=test` over the sample."""
    workdir = tmp_path_factory.mktemp("pysample") / "sample"
    shutil.copytree(SAMPLE, workdir)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=shapes", "--cov-context=test",
         "--cov-report="],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir / ".coverage"


@pytest.fixture(scope="module")
def contexts(coverage_file) -> list[ContextLines]:
    return read_contexts(coverage_file)


def coverage_py_lines(coverage_file: Path, test: str) -> dict[str, set[int]]:
    """A test's lines as coverage.py itself says: its setup, run and teardown contexts together."""
    data = CoverageData(basename=str(coverage_file))
    data.read()
    data.set_query_contexts([f"^{re.escape(test)}(\\|(setup|run|teardown))?$"])
    return {file: set(data.lines(file)) for file in data.measured_files() if data.lines(file)}


def failed_only_endpoint(apisnoop: dict, catalogue) -> str:
    """An endpoint no test hit that one test will "test" only by a clean-up delete answered 404 (APISnoop #12)."""
    return min(
        row["endpoint"]
        for row in apisnoop["endpoints"]
        if not named_tests(row)
        and row["action"] == "delete"
        and "{name}" in catalogue.endpoints[row["endpoint"]].path
        and "{namespace}" in catalogue.endpoints[row["endpoint"]].path
    )


def failed_cleanup(maker: EventMaker, endpoint, test: str, namespace: str) -> dict:
    uri = fill_template(endpoint.path, maker.rng, {"namespace": namespace})
    item = maker.event("delete", uri, f"{E2E_AGENT} -- {test}", namespace=namespace)
    item["responseStatus"] = {"code": 404}
    return item


class Store:
    """The replayed store and what the test needs to know about it."""

    def __init__(
        self, path: Path, removed: set[str], dropped: set[tuple[str, str]], failing_test: str, failed_only: str
    ):
        self.path = path
        self.failed_only = failed_only
        self.removed = removed
        self.dropped = dropped
        self.failing_test = failing_test


async def replay(url: str, run: str, events: list[dict]) -> None:
    async with aiohttp.ClientSession() as session:
        for start in range(0, len(events), BATCH):
            body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}}
            body["items"] = events[start : start + BATCH]
            async with session.post(f"{url}/v1/audit/{run}", data=orjson.dumps(body),
                                    headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                assert response.status == 200, await response.text()


@pytest.fixture(scope="module")
def store(tmp_path_factory, fixtures, apisnoop, catalogue, contexts) -> Store:
    path = tmp_path_factory.mktemp("queries") / "sink.db"
    events, _ = synthesise(apisnoop, catalogue)
    tests = sorted({t for row in apisnoop["endpoints"] for t in row["tests"] if t})
    namespace_of = {e["userAgent"].partition(" -- ")[2]: e["objectRef"]["name"] for e in events
                    if e["verb"] == "create" and e["objectRef"].get("resource") == "namespaces"}  # fmt: skip
    failing_test = next(t for t in tests if "ServerSideApply" in t or "Server Side Apply" in t)
    maker = EventMaker()
    maker.clock = iter(range(1_776_700_000_000_000, 1_776_800_000_000_000, 1000))
    failed_only = failed_only_endpoint(apisnoop, catalogue)
    base = [*events, failed_cleanup(maker, catalogue.endpoints[failed_only], failing_test, namespace_of[failing_test])]
    # head: every tenth test left out entirely; one endpoint left out of every seventh remaining test.
    removed = set(tests[::10])
    match = Matcher(catalogue).match
    kept_tests = [t for t in tests if t not in removed]
    direct_ops: dict[str, set[str]] = {}
    for row in apisnoop["endpoints"]:
        for t in row["tests"]:
            if t:
                direct_ops.setdefault(t, set()).add(row["endpoint"])
    dropped = {(t, min(direct_ops[t])) for t in kept_tests[::7] if len(direct_ops[t]) > 1}
    head = []
    for item in events:
        test = item["userAgent"].partition(" -- ")[2] if item["userAgent"].startswith(E2E_AGENT + " -- ") else None
        if test in removed:
            continue
        if test is not None and (test, match(item["verb"], item["requestURI"])[0]) in dropped:
            continue
        head.append(item)
    spec = fixtures / "openapi/swagger-v1.36.json.gz"

    async def fill() -> None:
        sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(path), openapi=str(spec)))
        try:
            await replay(sink.url, "base", base)
            await replay(sink.url, "head", head)
        finally:
            await sink.stop()

    asyncio.run(fill())
    db = open_store(path)
    save_python_lines(db, run="base", contexts=contexts, now_us=1)
    # head: test_square ran what test_circle_big runs (real lines of another test): its lines change.
    circle = [item for item in contexts if item.context.startswith(CIRCLE)]
    swapped = [item for item in contexts if not item.context.startswith(SQUARE)]
    swapped += [ContextLines(item.context.replace(CIRCLE, SQUARE), item.lines) for item in circle]
    save_python_lines(db, run="head", contexts=swapped, now_us=1)
    db.conn.close()
    return Store(path, removed, dropped, failing_test, failed_only)


@pytest.fixture
async def client(aiohttp_client, store):
    return await aiohttp_client(init_app(Settings(db=str(store.path))))


async def get(client, path: str, **params) -> tuple[int, dict]:
    response = await client.get(path, params=params)
    return response.status, await response.json()


def named_tests(row: dict) -> set[str]:
    return {t for t in row["tests"] if t}


async def test_per_test_endpoints_are_the_fixtures(client, apisnoop, store):
    expected: dict[str, set[str]] = {}
    for row in apisnoop["endpoints"]:
        for test in named_tests(row):
            expected.setdefault(test, set()).add(row["endpoint"])
    expected[store.failing_test].add(store.failed_only)
    status, listing = await get(client, "/v1/runs/base/tests")
    assert status == 200
    listed = {row["test"]: row for row in listing["tests"]}
    assert set(expected) <= set(listed)
    for test, operations in expected.items():
        status, answer = await get(client, f"/v1/runs/base/tests/{quote(test, safe='')}")
        assert status == 200, answer
        direct = {row["endpoint"] for row in answer["endpoints"] if "direct" in row["how"]}
        assert direct == operations, test
        assert listed[test]["endpoints"] == len(answer["endpoints"])
        for row in answer["endpoints"]:
            hits = row["hits"]
            assert hits["hits"] == sum(hits["status"].values()) == sum(h["hits"] for h in row["by_how"].values())
            assert hits["first"] <= hits["last"]
    # The clean-up delete: a hit by default, answered 404, and not counted with successful_only.
    failing = quote(store.failing_test, safe="")
    _, answer = await get(client, f"/v1/runs/base/tests/{failing}")
    (row,) = [row for row in answer["endpoints"] if row["endpoint"] == store.failed_only]
    assert (row["how"], row["counted"], row["hits"]["status"], row["hits"]["successful"]) == (
        ["direct"], True, {"4xx": 1}, 0)  # fmt: skip
    _, answer = await get(client, f"/v1/runs/base/tests/{failing}", successful_only="true")
    (row,) = [row for row in answer["endpoints"] if row["endpoint"] == store.failed_only]
    assert (row["how"], row["counted"]) == ([], False)


async def test_endpoint_to_tests_is_the_fixtures(client, apisnoop, store):
    for row in apisnoop["endpoints"]:
        status, answer = await get(client, f"/v1/runs/base/endpoints/{row['endpoint']}")
        assert status == 200, answer
        e2e = {test["test"] for test in answer["tests"] if test["e2e"]}
        expected = named_tests(row) | ({store.failing_test} if row["endpoint"] == store.failed_only else set())
        assert e2e == expected, row["endpoint"]
        assert answer["conformance_tested"] == row["conf_tested"], row["endpoint"]
        assert answer["tested_directly"] == bool(expected)
        assert answer["hits"]["hits"] >= sum(t["hits"]["hits"] for t in answer["tests"] if "direct" in t["by_how"])
    _, answer = await get(client, f"/v1/runs/base/endpoints/{store.failed_only}", successful_only="true")
    assert not answer["tested_directly"] and answer["hits"]["status"].get("4xx") == 1


async def test_summary_and_untested_agree_with_the_fixture(client, apisnoop, catalogue, store):
    eligibility = load_eligibility()
    theirs = {row["endpoint"]: row for row in apisnoop["endpoints"]}
    status, summary = await get(client, "/v1/runs/base/summary")
    assert status == 200
    # APISnoop's list leaves out deprecated endpoints; so does the summary. store.failed_only adds one direct hit.
    tested_directly = sum(bool(named_tests(row)) for row in theirs.values()) + (
        not named_tests(theirs[store.failed_only])
    )
    assert summary["totals"]["tested_directly"] == tested_directly
    assert summary["totals"]["endpoints"] == len(theirs) == 908
    assert summary["totals"]["conformance_tested"] == sum(row["conf_tested"] for row in theirs.values())
    assert sum(level["endpoints"] for level in summary["by_level"].values()) == 908
    assert sum(group["tested_directly"] for group in summary["by_group"].values()) == tested_directly
    assert sum(category["endpoints"] for category in summary["by_category"].values()) == 908
    catalogue_eligible = {op for op in theirs if eligibility.is_eligible(catalogue.endpoints[op])}
    status, untested = await get(client, "/v1/runs/base/untested")
    assert status == 200
    expected = {op for op in catalogue_eligible if not theirs[op]["conf_tested"]}
    assert {row["endpoint"] for row in untested["endpoints"]} == expected
    assert untested["count"] == summary["conformance_eligible"]["untested"] == len(expected)
    assert summary["conformance_eligible"]["eligible"] == len(catalogue_eligible)
    assert summary["conformance_eligible"]["tested"] == sum(theirs[op]["conf_tested"] for op in catalogue_eligible)


async def test_test_filters(client, apisnoop):
    _, everything = await get(client, "/v1/runs/base/tests")
    _, conformance = await get(client, "/v1/runs/base/tests", conformance="true")
    _, others = await get(client, "/v1/runs/base/tests", conformance="false")
    their_conformance = {t["test"] for t in apisnoop["tests"] if t["test"] and t["conformance_test"]}
    assert {row["test"] for row in conformance["tests"]} == their_conformance
    assert conformance["count"] + others["count"] == everything["count"]
    _, apps = await get(client, "/v1/runs/base/tests", sig="apps")
    assert apps["count"] > 0 and all(row["test"].startswith("[sig-apps]") for row in apps["tests"])
    assert apps == (await get(client, "/v1/runs/base/tests", sig="SIG-apps"))[1]
    _, found = await get(client, "/v1/runs/base/tests", q="deployment", sig="apps", conformance="true")
    assert found["count"] > 0
    assert all("deployment" in row["test"].lower() and row["conformance"] for row in found["tests"])


async def test_code_reverse_map_is_coverage_pys(client, contexts, coverage_file):
    tests = {item.context.rsplit("|", 1)[0] for item in contexts}
    by_test = {test: coverage_py_lines(coverage_file, test) for test in tests}
    area = next(file for lines in by_test.values() for file in lines if file.endswith("shapes/area.py"))
    status, answer = await get(client, "/v1/runs/base/code", file=area)
    assert status == 200
    (entry,) = answer["files"]
    got = {row["test"]: {n for a, b in row["ranges"] for n in range(a, b + 1)} for row in entry["tests"]}
    assert got == {test: lines[area] for test, lines in by_test.items() if lines.get(area)}
    # The end of the path finds it too, as an editor would ask; and a line: only the tests that ran it.
    assert (await get(client, "/v1/runs/base/code", file="shapes/area.py"))[1]["files"] == answer["files"]
    _, line8 = await get(client, "/v1/runs/base/code", file="shapes/area.py", line="8")
    assert {row["test"] for row in line8["files"][0]["tests"]} == {t for t, lines in by_test.items()
                                                                   if 8 in lines.get(area, ())}  # fmt: skip
    assert SQUARE in {row["test"] for row in line8["files"][0]["tests"]}
    assert CIRCLE not in {row["test"] for row in line8["files"][0]["tests"]}
    # A test's own lines per file, in its answer.
    _, square = await get(client, f"/v1/runs/base/tests/{quote(SQUARE, safe='')}")
    files = {file: {n for a, b in spans for n in range(a, b + 1)} for file, spans in square["code"]["files"].items()}
    assert files == by_test[SQUARE]


async def test_diff_of_two_real_runs(client, store, coverage_file):
    status, diff = await get(client, "/v1/diff", base="base", head="head")
    assert status == 200
    assert {row["test"] for row in diff["tests"]["removed"]} == store.removed
    assert diff["tests"]["added"] == []
    changed = {row["test"]: row for row in diff["tests"]["changed"]}
    for test, operation_id in store.dropped:
        _, head = await get(client, f"/v1/runs/head/tests/{quote(test, safe='')}")
        if operation_id not in {row["endpoint"] for row in head["endpoints"]}:  # not also hit indirectly
            assert operation_id in changed[test]["endpoints"]["lost"], (test, operation_id)
    # Each changed test's endpoints are the difference of its two answers.
    for test, row in list(changed.items())[:40]:
        if row["lines"] is not None:
            continue
        before = {
            e["endpoint"] for e in (await get(client, f"/v1/runs/base/tests/{quote(test, safe='')}"))[1]["endpoints"]
        }
        after = {
            e["endpoint"] for e in (await get(client, f"/v1/runs/head/tests/{quote(test, safe='')}"))[1]["endpoints"]
        }
        assert row["endpoints"] == {"gained": sorted(after - before), "lost": sorted(before - after)}
    _, base_summary = await get(client, "/v1/runs/base/summary")
    _, head_summary = await get(client, "/v1/runs/head/summary")
    assert (
        diff["totals"]["base"]["tested"] - len(diff["endpoints"]["lost"]) + len(diff["endpoints"]["gained"])
        == (diff["totals"]["head"]["tested"])
    )
    assert diff["totals"]["head"]["tested"] <= head_summary["totals"]["tested"] + head_summary["totals"]["deprecated"]
    assert diff["totals"]["base"]["conformance_tested_eligible"] == base_summary["conformance_eligible"]["tested"]
    # Lines: test_square ran test_circle_big's lines in head.
    square, circle = coverage_py_lines(coverage_file, SQUARE), coverage_py_lines(coverage_file, CIRCLE)
    lines = changed[SQUARE]["lines"]
    expand = lambda spans: {n for a, b in spans for n in range(a, b + 1)}  # noqa: E731
    for file in set(square) | set(circle):
        gained, lost = (
            circle.get(file, set()) - square.get(file, set()),
            square.get(file, set()) - circle.get(file, set()),
        )
        if gained or lost:
            assert (expand(lines["files"][file]["gained"]), expand(lines["files"][file]["lost"])) == (gained, lost)
    assert CIRCLE not in changed


async def test_unknown_things_are_404s_saying_which(client):
    for path, words in [
        ("/v1/runs/nope/summary", "no run 'nope'"),
        ("/v1/runs/nope/tests", "no run 'nope'"),
        ("/v1/runs/base/tests/" + quote("[sig-x] no such test", safe=""), "no test '[sig-x] no such test' in run"),
        ("/v1/runs/base/endpoints/readNothing", "no endpoint 'readNothing'"),
        ("/v1/runs/base/code?file=no/such.go", "ran a file named 'no/such.go'"),
        ("/v1/diff?base=base&head=nope", "no run 'nope'"),
    ]:
        response = await client.get(path)
        assert response.status == 404, path
        assert words in (await response.json())["error"], path
    for path, words in [
        ("/v1/runs/base/tests?conformance=yes", "conformance must be true or false"),
        ("/v1/runs/base/code", "file is required"),
        ("/v1/runs/base/code?file=x.go&line=0", "line must be a line number"),
        ("/v1/diff?base=base", "head is required"),
    ]:
        response = await client.get(path)
        assert response.status == 400, path
        assert words in (await response.json())["error"], path


async def test_a_slash_in_a_test_name(client, store):
    # Test names may hold '/': encoded as %2F they still name one test.
    status, answer = await get(client, "/v1/runs/base/tests/" + quote("a/b", safe=""))
    assert status == 404 and "'a/b'" in answer["error"]


async def test_answers_are_cached_until_the_run_changes(aiohttp_client, tmp_path, catalogue):
    settings = Settings(db=str(tmp_path / "c.db"))
    db = open_store(settings.db)
    save_catalogue(db, catalogue, load_eligibility())
    db.conn.close()
    app = init_app(settings, matcher=Matcher(catalogue))
    client = await aiohttp_client(app)
    from auditcov.sink.queries import QUERIES

    cache = app[QUERIES].cache
    body = event_list([event("a", requestReceivedTimestamp="2026-11-25T10:00:00Z")])
    assert (await client.post("/v1/audit/c", data=body, headers={"Content-Type": "application/json"})).status == 200
    first = await get(client, "/v1/runs/c/summary")
    assert (await get(client, "/v1/runs/c/summary")) == first and cache.builds == 1
    await client.post("/v1/audit/other", data=body, headers={"Content-Type": "application/json"})
    await get(client, "/v1/runs/c/summary")
    assert cache.builds == 1  # another run's events: run c's fingerprint is the same
    more = event_list([event("b", requestReceivedTimestamp="2026-11-25T10:00:01Z")])
    await client.post("/v1/audit/c", data=more, headers={"Content-Type": "application/json"})
    _, after = await get(client, "/v1/runs/c/summary")
    assert cache.builds == 2 and after["hits"]["hits"] == first[1]["hits"]["hits"] + 1


async def test_the_query_token(aiohttp_client, tmp_path, store):
    (tmp_path / "query").write_text("query-secret\n")
    client = await aiohttp_client(init_app(Settings(db=str(store.path), query_token_file=str(tmp_path / "query"))))
    paths = [
        "/v1/runs", "/v1/runs/base/tests", "/v1/runs/base/tests/x", "/v1/runs/base/endpoints/x",
        "/v1/runs/base/code?file=x", "/v1/runs/base/summary", "/v1/runs/base/untested", "/v1/diff?base=a&head=b",
        "/v1/runs/base/tests?conformance=junk",
    ]  # fmt: skip
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = await client.get(path, headers=headers)
            assert response.status == 401, path
            assert "bearer token" in (await response.json())["error"]
    response = await client.get("/v1/runs", headers={"Authorization": "Bearer query-secret"})
    assert response.status == 200
    assert {run["run"] for run in (await response.json())["runs"]} == {"base", "head"}
    assert (await client.get("/openapi.json")).status == 200  # the document holds no data


def _routes(app) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical
        routes.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return routes


def test_the_document_lists_every_route_of_the_app(tmp_path):
    document = api_document()
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == _routes(init_app(Settings(db=str(tmp_path / "d.db"))))
    assert document["openapi"].startswith("3.")


class SinkThread:
    """The real sink on loopback in a thread of its own, for a synchronous client (schemathesis)."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sink = asyncio.run_coroutine_threadsafe(start_sink(settings), self.loop).result(60)
        self.url = self.sink.url

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def small_sink(tmp_path_factory, fixtures, contexts):
    """A sink over a small real store: the fixture's e2e events and the sample's Python lines, run `small`."""
    path = tmp_path_factory.mktemp("fuzz") / "sink.db"
    running = SinkThread(
        Settings(listen="127.0.0.1:0", db=str(path), openapi=str(fixtures / "openapi/swagger-v1.36.json.gz"))
    )
    try:
        import requests

        body = event_list([event(f"e{i}", requestReceivedTimestamp=f"2026-11-25T10:00:0{i}Z") for i in range(5)])
        assert requests.post(f"{running.url}/v1/audit/small", data=body, headers={"Content-Type": "application/json"},
                             timeout=30).status_code == 200  # fmt: skip
        db = open_store(path)
        save_python_lines(db, run="small", contexts=contexts, now_us=1)
        db.conn.close()
        yield running
    finally:
        running.stop()


#: Routes that make the sink call agents at addresses a request gives (registration) or has registered: with
#: generated addresses they could reach off this machine. tests/test_cover_agent_go.py drives them with real agents.
AGENT_ROUTES = r"^/v1/runs/\{run\}/(agents|snapshots|clear|coverage)"


def test_schemathesis(small_sink):
    """Every route with generated input, against the document the sink serves: no 5xx, every answer matches it.
    (schemathesis's own pytest loader does not run under this pytest, so each operation's strategy is drawn here.)"""
    schema = schemathesis.openapi.from_url(f"{small_sink.url}/openapi.json").exclude(path_regex=AGENT_ROUTES)
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = [(m, path) for path, item in api_document()["paths"].items() for m in item]
    # schemathesis leaves out the document's own address; the document test covers it.
    assert {op.label for op in operations} == {
        f"{m.upper()} {path}" for m, path in documented if not re.match(AGENT_ROUTES, path) and path != "/openapi.json"
    }
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            if "run" in (case.path_parameters or {}) and hash(repr(case.query)) % 2:
                case.path_parameters["run"] = "small"  # half the cases ask about the real run
            case.call_and_validate(base_url=small_sink.url)

        check()
