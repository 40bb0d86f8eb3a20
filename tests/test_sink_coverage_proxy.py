"""The sink as coverage proxy (issue #9), with real programs: a real sink on loopback, tests/goprograms/agentdemo
built with `auditcov cover build` and registered by its agent, a Kubernetes-style coverage build
(tests/goprograms/kubecover), and agents that hang or die.

The oracle for per-test deltas: each test run alone against a fresh agentdemo, its counters read by
`go tool covdata textfmt`, minus those of a fresh run that did nothing, block by block, without the agent's own
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from gotool import GO_ENV, GOPROGRAMS
from sink_support import event, event_list
from test_cover_agent_go import DEMO, _cover_build, go_reads, running, snapshot

from auditcov.merge.cover.goagent import decode_agent_coverage, is_agent_file
from auditcov.merge.cover.gotext import parse_text
from auditcov.merge.cover.model import Block
from auditcov.merge.cover.pertest import PerTestCoverage, per_test_coverage
from auditcov.merge.events import format_time, now_us
from auditcov.merge.store import open_store_readonly
from auditcov.sink.app import SETTINGS
from auditcov.sink.server import RunningSink, start_sink
from auditcov.sink.settings import ConfiguredAgent, Settings, SettingsError, load_settings

JSON = {"Content-Type": "application/json"}
#: Each test calls its own handlers.
TESTS = {
    "[sig-demo] hello greets by name": ["/hello?name=ann", "/hello"],
    "[sig-demo] sum adds": ["/sum?n=6", "/sum?n=3"],
    "[sig-demo] words counts [Conformance]": ["/words?text=a+b+A"],
}
E2E_AGENT = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- "
AUDITCOV = Path(sys.executable).parent / "auditcov"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("agentdemo") / "agentdemo"
    result = _cover_build("-o", binary, "-C", DEMO, ".")
    assert result.exit_code == 0, result.output
    return binary


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> str:
    """The sink's store: a SQLite file, or a PostgreSQL database (the same coverage proxy runs on either)."""
    return str(tmp_path / "sink.db") if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@contextlib.asynccontextmanager
async def sink_running(tmp_path: Path, db: str | None = None, **settings) -> AsyncIterator[RunningSink]:
    sink = await start_sink(Settings(db=db or str(tmp_path / "sink.db"), listen="127.0.0.1:0", **settings))
    try:
        yield sink
    finally:
        await sink.stop()


async def ask(method: str, url: str, **kwargs) -> tuple[int, object]:
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if response.content_type == "application/json" else body


async def registered(sink: RunningSink, run: str, process: str, *, meta: bool = True) -> dict:
    """Wait until `process` is a live agent of `run` (and the sink has its meta-data, for a Go agent)."""
    async with asyncio.timeout(20):
        while True:
            status, answer = await ask("GET", f"{sink.url}/v1/runs/{run}/agents")
            assert status == 200, answer
            agents = {agent["process"]: agent for agent in answer["agents"]}
            if process in agents and agents[process]["health"] != "gone" and (not meta or _has_meta(sink)):
                return agents[process]
            await asyncio.sleep(0.05)


def _has_meta(sink: RunningSink) -> bool:
    return bool(_rows(sink, "SELECT COUNT(*) FROM cover_meta")[0][0])


def _store(sink: RunningSink):
    return open_store_readonly(sink.runner.app[SETTINGS].db)


def _rows(sink: RunningSink, sql: str, *args) -> list[tuple]:
    db = _store(sink)
    try:
        return db.conn.execute(sql, args).fetchall()
    finally:
        db.conn.close()


def _results(sink: RunningSink, run: str) -> dict[str, PerTestCoverage]:
    db = _store(sink)
    try:
        return {result.test: result for result in per_test_coverage(db, run)}
    finally:
        db.conn.close()


async def marker(sink: RunningSink, run: str, test: str, kind: str) -> None:
    status, answer = await ask(
        "POST", f"{sink.url}/v1/runs/{run}/markers", json={"test": test, "event": kind}, headers=JSON
    )
    assert status == 200, answer


async def audit_event(sink: RunningSink, run: str, test: str, audit_id: str, stage: str, received_us: int) -> dict:
    """One event as an apiserver in blocking mode sends it: alone, when the stage happens."""
    item = event(
        audit_id,
        stage=stage,
        userAgent=E2E_AGENT + test,
        requestReceivedTimestamp=format_time(received_us),
        stageTimestamp=format_time(now_us()),
    )
    status, answer = await ask("POST", f"{sink.url}/v1/audit/{run}", data=event_list([item]), headers=JSON)
    assert status == 200, answer
    return answer


def _delta(before: dict[Block, int], after: dict[Block, int]) -> dict[Block, int]:
    changed = {block: count - before.get(block, 0) for block, count in after.items() if not is_agent_file(block.file)}
    return {block: count for block, count in changed.items() if count}


@pytest.fixture(scope="module")
def alone(demo, tmp_path_factory) -> dict[str, dict[Block, int]]:
    """The oracle: each test's requests alone against a fresh agentdemo (agent on, no sink), minus a fresh run that
    did nothing, by `go tool covdata textfmt`."""
    tmp = tmp_path_factory.mktemp("alone")

    async def one(paths: list[str], name: str) -> dict[Block, int]:
        async with running(demo, {"AUDITCOV_AGENT": "127.0.0.1:0"}) as program:
            address = await program.agent_address()
            for path in paths:
                await program.get(path)
            meta, counters = await snapshot(address)
            return go_reads(meta, counters, program.process.pid, tmp / name).counts

    async def all_of_them() -> dict[str, dict[Block, int]]:
        nothing = await one([], "nothing")
        return {test: _delta(nothing, await one(paths, f"test-{n}")) for n, (test, paths) in enumerate(TESTS.items())}

    return asyncio.run(all_of_them())


def _agent_env(sink: RunningSink, run: str) -> dict[str, str]:
    return {"AUDITCOV_AGENT": "127.0.0.1:0", "AUDITCOV_SINK": sink.url, "AUDITCOV_RUN": run}


@pytest.mark.go
async def test_markers_give_each_test_exactly_its_lines(demo, alone, tmp_path, store):
    async with sink_running(tmp_path, store) as sink, running(demo, _agent_env(sink, "r")) as program:
        agent = await registered(sink, "r", "agentdemo")
        assert agent["kind"] == "go" and agent["pid"] == program.process.pid and agent["address"].startswith("http")
        for test, paths in TESTS.items():
            await marker(sink, "r", test, "start")
            for path in paths:
                await program.get(path)
            await marker(sink, "r", test, "end")
        results = _results(sink, "r")  # raw or decoded: the report reads either
        _, answer = await ask("GET", f"{sink.url}/v1/runs/r/agents")
        listed = answer["agents"][0]
        assert listed["health"] == "ok" and listed["last_snapshot"]["missing"] is None
    assert list(results) == list(TESTS)
    for test in TESTS:
        assert alone[test], test
        assert results[test].profile.counts == alone[test], test
        assert not results[test].incomplete and not results[test].coarse and not results[test].problems
    assert _rows(sink, "SELECT COUNT(*), COUNT(missing) FROM cover_snapshots") == [(2 * len(TESTS), 0)]


@pytest.mark.go
async def test_events_in_blocking_mode_are_the_boundaries(demo, alone, tmp_path, store):
    """No markers: each test's first event opens it (snapshot before the answer), the next test's closes it."""
    async with sink_running(tmp_path, store) as sink, running(demo, _agent_env(sink, "r")) as program:
        await registered(sink, "r", "agentdemo")
        for test, paths in TESTS.items():
            for path in paths:
                audit_id, received_us = str(uuid.uuid4()), now_us()
                await audit_event(sink, "r", test, audit_id, "RequestReceived", received_us)
                await program.get(path)
                await audit_event(sink, "r", test, audit_id, "ResponseComplete", received_us)
        status, answer = await ask("POST", f"{sink.url}/v1/runs/r/snapshots")  # after the last test
        assert status == 200 and answer["agents"] == [{"process": "agentdemo", "missing": None}]
        results = _results(sink, "r")
        boundaries = _rows(sink, "SELECT COUNT(*) FROM cover_snapshots")
    assert boundaries == [(len(TESTS) + 1,)]  # one per new test, and the end: none for a test's later events
    for test in TESTS:
        assert results[test].window.source == "events"
        assert results[test].profile.counts == alone[test], test
        assert not results[test].incomplete


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An agent that accepts connections and never answers."""
    with contextlib.suppress(asyncio.CancelledError, ConnectionError):
        await asyncio.Event().wait()
    writer.close()


@pytest.mark.go
async def test_an_agent_that_hangs_or_dies_leaves_its_tests_incomplete_and_ingestion_going(
    demo, alone, tmp_path, store
):
    hung = await asyncio.start_server(_hang, "127.0.0.1", 0)
    hung_url = f"http://127.0.0.1:{hung.sockets[0].getsockname()[1]}"
    (first, first_paths), (second, _), _ = TESTS.items()
    try:
        async with sink_running(tmp_path, store) as sink, running(demo, _agent_env(sink, "r")) as program:
            await registered(sink, "r", "agentdemo")
            status, answer = await ask(
                "POST", f"{sink.url}/v1/runs/r/agents", json={"process": "hung", "kind": "go", "address": hung_url}
            )
            assert status == 200, answer
            await marker(sink, "r", first, "start")
            for path in first_paths:
                received_us = now_us()
                # Ingestion goes on beside the hung agent: every event is stored and answered.
                await audit_event(sink, "r", first, str(uuid.uuid4()), "ResponseComplete", received_us)
                await program.get(path)
            await marker(sink, "r", first, "end")
            program.process.send_signal(signal.SIGKILL)
            await program.process.wait()
            await marker(sink, "r", second, "start")
            await audit_event(sink, "r", second, str(uuid.uuid4()), "ResponseComplete", now_us())
            await marker(sink, "r", second, "end")
            results = _results(sink, "r")
            assert _rows(sink, "SELECT COUNT(*) FROM events WHERE run = 'r'") == [(len(first_paths) + 1,)]
            # Health checks mark both gone, with the reason; their snapshots stay.
            async with asyncio.timeout(20):
                while True:
                    status, answer = await ask("GET", f"{sink.url}/v1/runs/r/agents")
                    agents = {agent["process"]: agent for agent in answer["agents"]}
                    if all(agent["health"] == "gone" for agent in agents.values()):
                        break
                    await asyncio.sleep(0.2)
    finally:
        hung.close()
    assert agents["hung"]["gone"]["reason"].startswith("stopped answering (3 health checks): timed out after")
    assert agents["agentdemo"]["gone"]["reason"] == "stopped answering (3 health checks): connection refused"
    assert agents["agentdemo"]["last_snapshot"]["missing"] == "connection refused"
    timed_out = "timed out after 200 ms"
    # The first test: the live agent's delta is whole; the hung one's is missing at both edges.
    assert results[first].profile.counts == alone[first]
    assert results[first].incomplete and results[first].problems == [
        f"process 'hung': the snapshot at the test's start is missing: {timed_out}",
        f"process 'hung': the snapshot at the test's end is missing: {timed_out}",
    ]
    assert results[second].incomplete and not results[second].profile.counts
    assert results[second].problems == [
        "process 'agentdemo': the snapshot at the test's start is missing: connection refused",
        "process 'agentdemo': the snapshot at the test's end is missing: connection refused",
        f"process 'hung': the snapshot at the test's start is missing: {timed_out}",
        f"process 'hung': the snapshot at the test's end is missing: {timed_out}",
    ]


def _function_lines(source: Path, name: str) -> set[int]:
    """The lines of Go function `name` in `source`: its `func` line to its closing brace."""
    lines = source.read_text().splitlines()
    start = next(n for n, line in enumerate(lines, 1) if line.startswith(f"func {name}("))
    end = next(n for n, line in enumerate(lines, 1) if n > start and line == "}")
    return set(range(start, end + 1))


@pytest.mark.go
async def test_a_kubernetes_coverage_build_is_a_profile_source_with_coarse_deltas(tmp_path):
    """`go test -c -covermode count` with a TestMain rewriting KUBE_COVERAGE_FILE every second, listed in the
    settings as a `profile` agent: each test's delta is its handler's lines, labelled coarse."""
    binary, profile = tmp_path / "kubecover", tmp_path / "kube-coverage.out"
    subprocess.run(
        ["go", "test", "-c", "-covermode", "count", "-o", str(binary), "."],
        cwd=GOPROGRAMS / "kubecover",
        env=GO_ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    agents = ({"run": "r", "process": "kubecover", "kind": "profile", "address": str(profile)},)
    process = await asyncio.create_subprocess_exec(
        binary,
        env={"PATH": os.environ["PATH"], "KUBE_COVERAGE_FILE": str(profile), "KUBE_COVERAGE_FLUSH_INTERVAL": "1s"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    handlers = {"[sig-demo] hello greets by name": "hello", "[sig-demo] sum adds": "sum"}
    try:
        url = (await asyncio.wait_for(process.stdout.readline(), 20)).decode().split()[-1]
        async with asyncio.timeout(20):
            while not profile.exists():
                await asyncio.sleep(0.1)
        async with sink_running(tmp_path, agents=agents) as sink:
            for test in handlers:
                await marker(sink, "r", test, "start")
                for path in TESTS[test]:
                    await ask("GET", url + path)
                await asyncio.sleep(2.5)  # the file lags by its flush interval: coarse
                await marker(sink, "r", test, "end")
            results = _results(sink, "r")
            _, answer = await ask("GET", f"{sink.url}/v1/runs/r/agents")
            assert answer["agents"][0]["kind"] == "profile" and answer["agents"][0]["health"] == "ok"
    finally:
        process.kill()
        await process.wait()
    source = GOPROGRAMS / "kubecover" / "main.go"
    for test, handler in handlers.items():
        result = results[test]
        assert result.coarse and not result.incomplete, result.problems
        lines = result.lines()
        assert set(lines) == {"example.com/kubecover/main.go"}
        covered = lines["example.com/kubecover/main.go"]
        assert covered and covered <= _function_lines(source, handler), test


async def _auditcov(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(AUDITCOV, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    return process.returncode, out.decode(), err.decode()


@pytest.mark.go
async def test_cover_profile_and_clear_through_a_real_sink(demo, tmp_path):
    test = "[sig-demo] sum adds"
    async with sink_running(tmp_path) as sink, running(demo, _agent_env(sink, "r")) as program:
        address = (await registered(sink, "r", "agentdemo"))["address"]
        await marker(sink, "r", test, "start")
        await program.get("/sum?n=6")
        await marker(sink, "r", test, "end")
        output = tmp_path / "cover.out"
        code, out, err = await _auditcov("cover", "profile", "--sink", sink.url, "--run", "r", "-o", str(output))
        assert code == 0, err
        # The sink's merged profile is the agent's own counters now, as decoded directly.
        live = decode_agent_coverage(*await snapshot(address), where="agentdemo")
        profile = parse_text(output.read_text())
        assert profile.counts == live.counts and any(profile.counts.values())
        code, lcov, err = await _auditcov("cover", "profile", "--sink", sink.url, "--run", "r", "--format", "lcov")
        assert code == 0 and "SF:example.com/agentdemo/main.go\n" in lcov and "end_of_record" in lcov
        code, delta, err = await _auditcov("cover", "profile", "--sink", sink.url, "--run", "r", "--test", test)
        assert code == 0, err
        assert parse_text(delta).counts == _results(sink, "r")[test].profile.counts
        code, out, err = await _auditcov("cover", "clear", "--sink", sink.url, "--run", "r")
        assert (code, out) == (0, "cleared agentdemo\n")
        code, text, err = await _auditcov("cover", "profile", "--sink", sink.url, "--run", "r")
        assert code == 0 and not any(parse_text(text).counts.values())
        code, out, err = await _auditcov("cover", "clear", "--sink", sink.url, "--run", "r", "--process", "nobody")
        assert code == 1 and "no live coverage agent 'nobody'" in err
        status, answer = await ask("DELETE", f"{sink.url}/v1/runs/r/agents/agentdemo")
        assert status == 200
        status, answer = await ask("GET", f"{sink.url}/v1/runs/r/agents")
        assert answer["agents"][0]["gone"]["reason"] == "said goodbye"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"process": "p", "kind": "java", "address": "http://127.0.0.1:1"}, "kind must be one of go, python, profile"),
        ({"process": "", "kind": "go", "address": "http://127.0.0.1:1"}, "process must be 1-256 characters"),
        ({"process": "p", "kind": "go", "address": "127.0.0.1:1"}, "address must be http(s)://HOST:PORT or unix:/path"),
        ({"process": "p", "kind": "go", "address": "http://127.0.0.1:1", "pid": "x"}, "pid must be a positive"),
        ([1], "a registration is an object"),
    ],
)
async def test_bad_registrations_say_what_is_wrong(tmp_path, body, message):
    async with sink_running(tmp_path) as sink:
        status, answer = await ask("POST", f"{sink.url}/v1/runs/r/agents", json=body)
        assert status == 400 and message in answer["error"]
        status, answer = await ask("DELETE", f"{sink.url}/v1/runs/r/agents/p")
        assert status == 404 and answer["error"] == "run 'r' has no coverage agent 'p'"


@pytest.mark.go
async def test_a_late_event_is_no_boundary_but_a_marker_is(demo, tmp_path):
    """In batch mode events arrive seconds after the apiserver received them: their counters would stand for a
    later moment than the event names, so only markers cut."""
    async with sink_running(tmp_path) as sink, running(demo, _agent_env(sink, "r")) as program:
        await registered(sink, "r", "agentdemo")
        await audit_event(sink, "r", "late", str(uuid.uuid4()), "ResponseComplete", now_us() - 5_000_000)
        assert _rows(sink, "SELECT COUNT(*) FROM cover_snapshots") == [(0,)]
        await audit_event(sink, "r", "fresh", str(uuid.uuid4()), "RequestReceived", now_us())
        await marker(sink, "r", "late", "end")
        assert _rows(sink, "SELECT COUNT(*), COUNT(missing) FROM cover_snapshots") == [(2, 0)]
        # A test first named by a marker is no boundary again at its first event.
        await marker(sink, "r", "marked", "start")
        await audit_event(sink, "r", "marked", str(uuid.uuid4()), "RequestReceived", now_us())
        assert _rows(sink, "SELECT COUNT(*) FROM cover_snapshots") == [(3,)]
        assert program.process.returncode is None


def test_agents_in_the_config_file_are_checked(tmp_path):
    config = tmp_path / "sink.toml"
    config.write_text(
        'default_run = "e2e"\nagent_timeout = 1\n'
        'agents = [{process = "kube-apiserver", kind = "profile", address = "/tmp/k.cov"}]\n'
    )
    settings = load_settings(config, {})
    assert settings.agent_timeout == 1.0
    assert settings.agents == (ConfiguredAgent("e2e", "kube-apiserver", "profile", "/tmp/k.cov"),)
    flag = load_settings(None, {"agents": '[{"run": "r", "process": "p", "kind": "go", "address": "unix:/s"}]'})
    assert flag.agents == (ConfiguredAgent("r", "p", "go", "unix:/s"),)
    for text, message in (
        ('agents = [{process = "p", kind = "jvm", address = "x"}]', "agents entry 1: kind must be one of go"),
        ('agents = [{process = "p", kind = "go"}]', "agents entry 1: address must be a non-empty string"),
        ('agents = [{process = "p", kind = "go", address = "x", port = 1}]', "agents entry 1: unknown key 'port'"),
        ('agents = "p"', "agents must be list, not str"),
        ("agent_timeout = 0", "agent_timeout must be a number of seconds above 0"),
    ):
        config.write_text(text + "\n")
        with pytest.raises(SettingsError, match=message):
            load_settings(config, {})
    with pytest.raises(SettingsError, match="agents must be a JSON list of agents"):
        load_settings(None, {"agents": "[{"})


async def test_python_and_profile_agents_that_fail_make_their_tests_incomplete(tmp_path):
    """A Python agent whose port is closed and a profile file that does not exist: every boundary is missing with
    the reason, the tests they bound are incomplete, and the live coverage names both as left out."""
    with socket.socket() as probe:  # a port that refuses: bound, never listening
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
        agents = ({"run": "r", "process": "kubelike", "kind": "profile", "address": str(tmp_path / "none.out")},)
        async with sink_running(tmp_path, agents=agents) as sink:
            status, _ = await ask(
                "POST", f"{sink.url}/v1/runs/r/agents", json={"process": "py", "kind": "python", "address": closed}
            )
            assert status == 200
            await marker(sink, "r", "only", "start")
            await marker(sink, "r", "only", "end")
            results = _results(sink, "r")
            async with aiohttp.ClientSession() as session, session.get(f"{sink.url}/v1/runs/r/coverage") as response:
                assert response.status == 200
                left_out = response.headers["Auditcov-Missing"]
    assert "py: connection refused" in left_out and "kubelike: " in left_out
    result = results["only"]
    assert result.incomplete and len(result.problems) == 4
    assert "process 'py': the snapshot at the test's start is missing: connection refused" in result.problems
    assert any("process 'kubelike': the snapshot at the test's end is missing: " in p for p in result.problems)


@pytest.mark.go
async def test_an_agent_on_a_unix_socket(demo, tmp_path):
    socket_path = tmp_path / "agent.sock"
    async with sink_running(tmp_path) as sink:
        env = {**_agent_env(sink, "r"), "AUDITCOV_AGENT": f"unix:{socket_path}"}
        async with running(demo, env) as program:
            agent = await registered(sink, "r", "agentdemo")
            assert agent["address"] == f"unix:{socket_path}"
            test, paths = next(iter(TESTS.items()))
            await marker(sink, "r", test, "start")
            for path in paths:
                await program.get(path)
            await marker(sink, "r", test, "end")
            result = _results(sink, "r")[test]
    assert not result.incomplete and result.profile.counts
