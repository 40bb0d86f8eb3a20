"""The store on PostgreSQL gives the answers the store on SQLite gives: the same data in both, every report format
and every query of the API compared byte for byte.

The data goes in as users put it there: real sinks (`auditcov serve`, one per store) take the same batches of
events made from APISnoop's 1.36.0 results (tests, their namespaces, controllers inside them, 404 clean-ups,
requests that match nothing, items that are not events) and the same markers (tests with windows); `auditcov
cover import` adds per-test Python lines; `auditcov merge --db` loads the shipped real run (examples/, Go
coverage snapshots of a kube-apiserver). A second, smaller run gives the diffs something to compare.

What may differ, and is set aside before comparing: the moments the stores first saw a run or quarantined an
item (each sink's own clock), when the page was made (`generated`; SOURCE_DATE_EPOCH fixes the other reports'),
and what each sink's own health checks found of the recorded run's agents (long gone).
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

import orjson
import pytest
from click.testing import CliRunner
from report_support import SPEC, event_list, measure_code, run_events
from sink_support import Sink

from auditcov.merge.events import format_time, parse_time
from auditcov.sink.cli import cli

EXAMPLE = Path(__file__).parent.parent / "examples/e2e-v1.36.3"
RUN, OTHER, EXAMPLE_RUN = "pg-a", "pg-b", "e2e-cover"
RUNS = (RUN, OTHER, EXAMPLE_RUN)
FORMATS = ("text", "json", "apisnoop", "html", "lcov", "cobertura", "junit")
BATCH = 150
#: Bundle files that differ by nature: the store's pages, and the page's `generated` time.
UNLIKE = ("auditcov.db", "report.html")


def _post(url: str, body: bytes, content_type: str = "application/json") -> dict:
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return orjson.loads(answer.read())


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _invoke(*args: str) -> str:
    result = CliRunner(env={"SOURCE_DATE_EPOCH": "1780000000"}).invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _fill(db: Path | str, folder: Path, runs: dict[str, list[dict]], markers: list[dict], coverage: Path) -> None:
    sink = Sink(db, "--openapi", str(SPEC), cwd=folder)
    try:
        for run, events in runs.items():
            for start in range(0, len(events), BATCH):
                body = event_list(events[start : start + BATCH])
                if start == BATCH:  # one batch with an item that is not an event, quarantined
                    body = body.replace(b'"items":[', b'"items":[{"kind":"Event","stage":7},', 1)
                _post(f"{sink.url}/v1/audit/{run}", body)
            # A retried batch: nothing stored twice, counted as duplicates.
            _post(f"{sink.url}/v1/audit/{run}", event_list(events[:BATCH]))
        for marker in markers:
            _post(f"{sink.url}/v1/runs/{RUN}/markers", orjson.dumps(marker))
    finally:
        assert sink.stop() == 0
    _invoke("cover", "import", "--db", str(db), "--run", RUN, str(coverage))


@pytest.fixture(scope="module")
def stores(tmp_path_factory, postgres_server) -> dict[str, tuple[Path, str]]:
    """Each run's pair of stores (SQLite, PostgreSQL); the example has a pair of its own, as its catalogue (the
    apiserver's own, served live) is not the spec the other runs were mapped with."""
    folder = tmp_path_factory.mktemp("differential")
    events, own = run_events(30, RUN)
    other, _ = run_events(12, OTHER)
    # Markers: windows around two tests' events, and controller events inside them that no namespace explains.
    markers = []
    for test in list(own)[3:5]:
        first, last = (parse_time(own[test][i]["requestReceivedTimestamp"]) for i in (0, -1))
        markers += [{"test": test, "event": "start", "time": format_time(first)}]
        markers += [{"test": test, "event": "end", "time": format_time(last + 500)}]
        lone = dict(own[test][-1], auditID=f"lone-{len(markers)}", objectRef={}, requestURI="/api/v1/nodes")
        lone["userAgent"] = "kube-scheduler/v1.36.0 (linux/amd64) kubernetes/abc1234"
        events.append(lone)
    coverage = measure_code(folder, own)
    sqlite = folder / "auditcov.db"
    postgres = postgres_server.new_database()
    for db in (sqlite, postgres):
        _fill(db, folder, {RUN: events, OTHER: other}, markers, coverage)
    example = (folder / "example.db", postgres_server.new_database())
    for db in example:
        out = _invoke("merge", str(EXAMPLE), "--db", str(db))
        assert f"run '{EXAMPLE_RUN}' from 1 bundle(s): 22898 events (22898 new), 88 tests" in out
        again = _invoke("merge", str(EXAMPLE), "--db", str(db))  # idempotent: nothing twice
        assert f"run '{EXAMPLE_RUN}' from 1 bundle(s): 22898 events (0 new), 88 tests, 89 coverage snapshots" in again
    return {RUN: (sqlite, postgres), OTHER: (sqlite, postgres), EXAMPLE_RUN: example}


def _same(pair: tuple[Path, str], *args: str) -> str:
    answers = [_invoke(*args, "--db", str(db)) for db in pair]
    assert _without_times(answers[0]) == _without_times(answers[1]), f"{' '.join(args)} differs"
    return answers[0]


def _same_report(stores, run: str, *args: str) -> str:
    return _same(stores[run], "report", "--run", run, *args)


@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("output_format", FORMATS)
def test_every_report_format_is_the_same(stores, run, output_format):
    answer = _same_report(stores, run, "--format", output_format)
    has_code = run != OTHER or output_format not in ("lcov", "cobertura")  # the other run has no code coverage
    assert len(answer) > 200 or not has_code


def test_report_options_are_the_same(stores):
    _same_report(stores, RUN, "--format", "text", "--untested")
    _same_report(stores, RUN, "--format", "json", "--success-only")
    assert "Diff" in _same_report(stores, RUN, "--format", "html", "--diff-base", OTHER)
    for run in (RUN, EXAMPLE_RUN):
        test = orjson.loads(_same_report(stores, run, "--format", "json"))["tests"][0]["test"]
        for output_format in ("lcov", "cobertura"):
            assert _same_report(stores, run, "--format", output_format, "--test", test)
        _same(stores[run], "cover", "report", "--run", run, "--format", "json")
        _same(stores[run], "cover", "report", "--run", run, "--test", test)
    _same(stores[RUN], "stats")
    _same(stores[RUN], "stats", "--run", RUN)


def test_a_bundle_exported_from_either_store_is_the_same(stores, tmp_path):
    manifests, pages = [], []
    for name, db in zip(("sqlite", "postgres"), stores[RUN], strict=True):
        _invoke("export", "--db", str(db), "--run", RUN, "--artifacts", str(tmp_path / name))
        manifest = orjson.loads((tmp_path / name / "manifest.json").read_bytes())
        manifests.append({file: entry for file, entry in manifest["files"].items() if file not in UNLIKE})
        pages.append(_without_times((tmp_path / name / "report.html").read_bytes()))
    assert manifests[0] == manifests[1] and len(manifests[0]) == 5
    assert pages[0] == pages[1]
    # The bundles' stores hold the same rows (the files differ in SQLite's page layout).
    _same((tmp_path / "sqlite/auditcov.db", tmp_path / "postgres/auditcov.db"), "stats")


def _api_paths(base: str, runs: tuple[str, ...]) -> list[str]:
    """Every query of the API, with each run's tests, endpoints and code files, and things that do not exist."""
    paths = ["/v1/runs", "/v1/stats", f"/v1/diff?base={runs[-1]}&head={runs[0]}", f"/v1/diff?base={runs[0]}&head=nope"]
    paths += ["/v1/runs/nope/tests", "/openapi.json"]
    for run in runs:
        prefix = f"/v1/runs/{run}"
        paths += [f"{prefix}/tests", f"{prefix}/summary", f"{prefix}/untested", f"{prefix}/agents"]
        paths += [f"{prefix}/tests?conformance=true", f"{prefix}/tests?sig=apps", f"{prefix}/tests?q=should"]
        paths += [f"{prefix}/tests/nope", f"{prefix}/endpoints/nope", f"{prefix}/coverage?format=lcov"]
        tests = orjson.loads(_get(f"{base}{prefix}/tests")[1])["tests"]
        operations: set[str] = set()
        for test in tests:
            if not test["test"]:  # coverage.py's empty context (lines run outside any test) is listed too
                continue
            paths.append(f"{prefix}/tests/{quote(test['test'], safe='')}")
            status, answer = _get(f"{base}{paths[-1]}")
            assert status == 200, (paths[-1], answer)
            operations |= _operations(orjson.loads(answer))
        untested = _operations(orjson.loads(_get(f"{base}{prefix}/untested")[1]))
        assert operations and untested
        chosen = sorted(operations)[:: 1 if run != EXAMPLE_RUN else 5] + sorted(untested)[::20]
        paths += [f"{prefix}/endpoints/{operation}" for operation in chosen]
        one = orjson.loads(_get(f"{base}{prefix}/tests/{quote(tests[0]['test'], safe='')}")[1])
        for file in sorted((one.get("code") or {}).get("files", {}))[:5]:
            paths.append(f"{prefix}/code?{urlencode({'file': file})}")
            paths.append(f"{prefix}/code?{urlencode({'file': file, 'line': 1})}")
    return paths


def _operations(document: dict) -> set[str]:
    """The operationIds a test's or the untested list's answer names."""
    return {row["endpoint"] for row in document["endpoints"]}


@pytest.mark.parametrize("runs", [(RUN, OTHER), (EXAMPLE_RUN,)], ids=["generated", "example"])
def test_every_query_of_the_api_is_the_same(stores, tmp_path, runs):
    sinks = [Sink(db, cwd=tmp_path) for db in stores[runs[0]]]
    try:
        paths = _api_paths(sinks[0].url, runs)
        assert len(paths) > 100
        for path in paths:
            answers = [_get(f"{sink.url}{path}") for sink in sinks]
            assert answers[0][0] == answers[1][0], path
            assert _comparable(path, answers[0][1]) == _comparable(path, answers[1][1]), path
        page = [_get(f"{sink.url}/")[1] for sink in sinks]
        assert _without_times(page[0]) == _without_times(page[1])
    finally:
        for sink in sinks:
            assert sink.stop() == 0


def _comparable(path: str, body: bytes) -> object:
    """An answer without what each store's own clock wrote (see the module docstring)."""
    if path == "/openapi.json":
        return orjson.loads(body)
    if path == "/v1/runs":
        runs = orjson.loads(body)
        for run in runs["runs"]:
            run.pop("created", None)
        return runs
    if path.endswith("/agents"):  # each sink's own health checks of the recorded run's (long gone) agents
        agents = orjson.loads(body)
        for agent in agents["agents"]:
            agent.pop("health"), agent.pop("gone")
        return agents
    return _without_times(body)


def _without_times(body: bytes | str) -> bytes:
    """The page's and the html report's `generated` (the moment each was made) left out."""
    return re.sub(rb'"generated":"[^"]*"', b"", body if isinstance(body, bytes) else body.encode())


def _partitions(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        query = "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'events'::regclass ORDER BY 1"
        return [row[0] for row in conn.execute(query)]


def test_the_postgres_store_holds_each_run_in_a_partition(stores):
    _, postgres = stores[RUN]
    assert len(_partitions(postgres)) == 2


def test_a_run_dropped_after_its_archive_is_written_comes_back_from_it(postgres_server, tmp_path):
    for db in (tmp_path / "auditcov.db", postgres_server.new_database()):
        _invoke("merge", str(EXAMPLE), "--db", str(db))
        before = _invoke("report", "--db", str(db), "--run", EXAMPLE_RUN, "--format", "json")
        archive = tmp_path / f"archive-{len(list(tmp_path.iterdir()))}"
        out = _invoke("drop", "--db", str(db), "--run", EXAMPLE_RUN, "--archive", str(archive))
        assert f"dropped run '{EXAMPLE_RUN}' from {db}: 22898 events, 88 tests," in out
        assert "1 cover_layouts" in out  # what no snapshot uses any more goes too
        assert orjson.loads(_invoke("stats", "--db", str(db))) == dict.fromkeys(
            ("events", "duplicates", "quarantined", "runs", "tests", "conformance_tests", "namespaces", "markers"), 0
        )
        if isinstance(db, str):
            assert _partitions(db) == []
        result = CliRunner().invoke(cli, ["drop", "--db", str(db), "--run", EXAMPLE_RUN])
        assert result.exit_code == 1 and f"no run '{EXAMPLE_RUN}' in the store" in result.output
        _invoke("merge", str(archive), "--db", str(db))
        assert _invoke("report", "--db", str(db), "--run", EXAMPLE_RUN, "--format", "json") == before


def test_import_and_remap_store_the_same(postgres_server, tmp_path):
    """Every audit fixture imported (bad files and items included), then mapped by `remap`: the same rows and
    the same report in both stores, and importing again adds nothing to either."""
    audit = Path(__file__).parent / "fixtures/audit"
    pair = (tmp_path / "imported.db", postgres_server.new_database())
    outputs = []
    for db in pair:
        for _ in range(2):
            result = CliRunner().invoke(cli, ["import", "--db", str(db), "--run", "files", str(audit)])
            assert result.exit_code == 1, result.output  # some fixtures are not audit data, and say so
            outputs.append(result.output.replace(str(db), "STORE"))
        _invoke("remap", "--db", str(db), "--openapi", str(SPEC))
    assert outputs[0] == outputs[2], outputs
    assert outputs[1] == outputs[3], outputs
    assert "0 events stored" in outputs[1]
    assert orjson.loads(_same(pair, "stats"))["quarantined"] > 0
    _same(pair, "report", "--run", "files", "--format", "json")
    _same(pair, "report", "--run", "files", "--format", "text", "--untested")


def test_a_password_in_the_url_is_never_shown(postgres_server, tmp_path):
    url = postgres_server.new_database().replace("auditcov@", "auditcov:hunter2@")
    sink = Sink(url, cwd=tmp_path)
    try:
        assert "(store postgresql://auditcov:***@" in sink.banner and "hunter2" not in sink.banner
    finally:
        assert sink.stop() == 0
    result = CliRunner().invoke(
        cli, ["import", "--db", url, "--run", "p", str(Path(__file__).parent / "fixtures/audit/falco")]
    )
    assert result.exit_code == 0 and "auditcov:***@" in result.output and "hunter2" not in result.output
    dropped = _invoke("drop", "--db", url, "--run", "p")
    assert "hunter2" not in dropped and "auditcov:***@" in dropped


def test_remap_finds_events_by_id_through_an_index(stores):
    """`remap` reads and updates events by id, a chunk at a time: SQLite's rowid; on PostgreSQL an index, without
    which each chunk was a scan of the run (40,000 events: 237 s instead of 1.2 s)."""
    import psycopg

    _, postgres = stores[RUN]
    with psycopg.connect(postgres) as conn:
        # This store is small enough for a scan to be cheaper; whether an index path exists is the question.
        conn.execute("SET enable_seqscan = off")
        plans = [
            "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}"))
            for statement in (
                "UPDATE events SET operation_id = NULL, unmatched_reason = NULL WHERE id = 12",
                "SELECT id FROM events WHERE id > 12 ORDER BY id LIMIT 5000",
            )
        ]
    for plan in plans:
        assert "Index" in plan and "Seq Scan" not in plan, plan
