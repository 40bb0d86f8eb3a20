"""The Python coverage agent (`auditcov cover run`, merge/cover/pyagent.py) around a real service.

tests/pyservice is a small stdlib HTTP service; every test here runs it as a real subprocess, under the agent or
under plain `coverage run`, and talks to both over loopback HTTP.

What "exact per-test lines" is checked against. The reference for a test is the service run alone under plain
`coverage run` (a fresh process) serving only that test's requests, minus the lines of a fresh run that serves
no request at all (start-up and shut-down). That difference is what the test's requests made the service run.
The agent's context for the test must be exactly that. It could differ in two honest ways, and the service is
written so that neither happens, which is what makes the comparison exact: a line run both at start-up and by a
request (it is in the agent's context but subtracted from the reference), and state carried from one test to
the next (a cache filled, a module imported lazily by whichever test comes first).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from sink_support import Sink

from auditcov.merge.cover.model import CoverageError
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.pycoverage import read_contexts
from auditcov.merge.cover.snapshots import load_python_lines
from auditcov.merge.store import open_store, open_store_readonly
from auditcov.sink.pydata import store_python_data
from auditcov.sink.writer import Writer

SERVICE_DIR = Path(__file__).parent / "pyservice"
SOURCE = SERVICE_DIR / "pyservice"
AUDITCOV = [str(Path(sys.executable).with_name("auditcov"))]
AGENT_FILE = "pyagent.py"

#: The three tests: the requests each sends. They share the dispatch and reply lines of server.py and each has
#: lines of its own in work.py; test_primes also takes the not-found branch.
TESTS = {
    "test_square": [("GET", "/square?side=3", None), ("GET", "/square?side=4", None)],
    "test_circle_and_words": [("GET", "/circle?r=2", None), ("POST", "/words", b"One two, two. THREE three three")],
    "test_primes": [("GET", "/primes?n=30", None), ("GET", "/nothing-here", None)],
}

Lines = dict[str, set[int]]


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One HTTP request to 127.0.0.1:`port`: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _wait_for(predicate, what: str, process: subprocess.Popen, stderr: Path, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"the service exited ({process.returncode}) before {what}: {stderr.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout} s: {stderr.read_text()}")


class Service:
    """tests/pyservice running as a subprocess (under the agent or plain coverage run)."""

    def __init__(self, command: list[str], workdir: Path, env: dict[str, str] | None = None, agent: bool = True):
        self.workdir = workdir
        self.port_file = workdir / "port"
        self.stderr_path = workdir / "stderr.txt"
        self.port_file.unlink(missing_ok=True)
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [*command, "--port-file", str(self.port_file)],
                cwd=SERVICE_DIR,
                env={**os.environ, **(env or {})},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                # A shell running the suite in the background ignores SIGINT, and its children inherit that; the
                # reference runs are stopped by SIGINT (coverage run saves on KeyboardInterrupt).
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )
        self.port = int(_wait_for(self._port, "a port file", self.process, self.stderr_path))
        self.agent_port = (
            _wait_for(self._agent_port, "the agent's address", self.process, self.stderr_path) if agent else None
        )

    @classmethod
    def under_agent(cls, workdir: Path, *options: str, env: dict[str, str] | None = None) -> Service:
        return cls(
            [*AUDITCOV, "cover", "run", "--source", str(SOURCE), *options, "--", "python", "-m", "pyservice"],
            workdir,
            env,
        )

    def _port(self) -> str | None:
        return self.port_file.read_text() if self.port_file.is_file() and self.port_file.read_text() else None

    def _agent_port(self) -> int | None:
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("auditcov-agent: listening on http://127.0.0.1:"):
                return int(line.rpartition(":")[2])
        return None

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def send(self, requests) -> None:
        for method, path, body in requests:
            status, _, _ = _request(self.port, method, path, body)
            assert status in (200, 404), (method, path, status)

    def agent(self, method: str, path: str, document: object = None, headers: dict | None = None):
        body = None if document is None else json.dumps(document).encode()
        sent = {"Content-Type": "application/json"} if body is not None else {}
        return _request(self.agent_port, method, path, body, {**sent, **(headers or {})})

    def switch(self, context: str) -> None:
        status, _, body = self.agent("POST", "/v1/context", {"context": context})
        assert status == 200, body

    def data(self, path: Path) -> list:
        status, headers, body = self.agent("GET", "/v1/data")
        assert status == 200, body
        assert headers["Content-Type"] == "application/vnd.coverage+sqlite"
        path.write_bytes(body)
        return read_contexts(path)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=60)


def _lines(lines: dict[str, list[int]]) -> Lines:
    return {file: set(numbers) for file, numbers in lines.items()}


def _minus(lines: Lines, baseline: Lines) -> Lines:
    left = {file: numbers - baseline.get(file, set()) for file, numbers in lines.items()}
    return {file: numbers for file, numbers in left.items() if numbers}


@pytest.fixture(scope="module")
def expected(tmp_path_factory) -> dict[str, Lines]:
    """Each test's reference lines (see the module docstring): alone under plain `coverage run`, minus a run that
    serves nothing. SIGINT stops them: coverage run saves on KeyboardInterrupt."""

    def alone(requests) -> Lines:
        workdir = tmp_path_factory.mktemp("alone")
        data_file = workdir / ".coverage"
        command = [sys.executable, "-m", "coverage", "run", f"--data-file={data_file}", f"--source={SOURCE}"]
        service = Service([*command, "-m", "pyservice"], workdir, agent=False)
        service.send(requests)
        assert service.stop(signal.SIGINT) != 0
        (context,) = read_contexts(data_file)  # no contexts: everything is in the empty one
        assert context.context == ""
        return _lines(context.lines)

    baseline = alone([])
    references = {test: _minus(alone(requests), baseline) for test, requests in TESTS.items()}
    work = str(SOURCE / "work.py")
    assert all(work in lines for lines in references.values())  # each test does work of its own
    return references


@dataclass
class LiveRun:
    """The three tests run against one service under the agent, their contexts switched over its API."""

    health: dict
    data: bytes
    status: int
    stderr: str


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LiveRun:
    workdir = tmp_path_factory.mktemp("live")
    service = Service.under_agent(workdir)
    health = json.loads(service.agent("GET", "/v1/health")[2])
    health["pid_matches"] = health.pop("pid") == service.process.pid
    for test, requests in TESTS.items():
        service.switch(test)
        service.send(requests)
        service.switch("")
    status, headers, data = service.agent("GET", "/v1/data")
    assert status == 200 and headers["Content-Type"] == "application/vnd.coverage+sqlite", data
    return LiveRun(health, data, service.stop(signal.SIGTERM), service.stderr)


def test_contexts_switched_over_the_api_give_each_test_exactly_its_lines(live, expected, tmp_path):
    assert live.health == {"process": "pyservice", "pid_matches": True, "kind": "python", "context": ""}
    (tmp_path / "live.coverage").write_bytes(live.data)
    contexts = {item.context: _lines(item.lines) for item in read_contexts(tmp_path / "live.coverage")}
    assert set(contexts) == {"", *TESTS}
    for test in TESTS:
        assert contexts[test] == expected[test], test
    # Lines that run again in a later test are that test's too, not only the first one's.
    server = str(SOURCE / "server.py")
    shared = set.intersection(*(contexts[test][server] for test in TESTS))
    assert shared and shared == set.intersection(*(expected[test][server] for test in TESTS))
    # The agent is measurement machinery: none of its lines are in the data.
    assert not any(file.endswith(AGENT_FILE) for lines in contexts.values() for file in lines)
    assert live.status == 128 + signal.SIGTERM
    assert "coverage data saved in" in live.stderr


async def test_the_sink_stores_an_uploaded_data_file_as_per_test_lines(live, expected, tmp_path):
    writer = Writer(open_store(tmp_path / "store.db"))
    writer.start()
    try:
        stored = await store_python_data(writer, run="r1", process="pyservice", data=live.data)
        assert stored.as_dict() == {"contexts": 4, "rows": stored.rows} and stored.rows >= 4
        # The same process sending its (cumulative) data again replaces its rows: nothing counts twice.
        assert await store_python_data(writer, run="r1", process="pyservice", data=live.data) == stored
        with pytest.raises(
            CoverageError, match=re.escape("the coverage.py data of process 'pyservice' in run 'r1': not a")
        ):
            await store_python_data(writer, run="r1", process="pyservice", data=b"mode: set\n")
        with pytest.raises(CoverageError, match=re.escape("not a readable coverage.py data file")):
            await store_python_data(writer, run="r1", process="pyservice", data=b"SQLite format 3\x00" + bytes(100))
    finally:
        await writer.close()
    db = open_store_readonly(tmp_path / "store.db")
    results = {result.test: result for result in per_test_coverage(db, "r1")}
    for test in TESTS:
        assert results[test].lines() == expected[test], test
        assert not results[test].problems


def test_clear_forgets_what_was_collected_and_the_agent_is_never_measured(tmp_path):
    # No --source: coverage.py measures every file outside the standard library and site-packages, so the
    # agent's own module (in this editable checkout) would show if its code were traced.
    service = Service(
        [*AUDITCOV, "cover", "run", "--process", "svc", "--", sys.executable, "-m", "pyservice"], tmp_path
    )
    service.switch("first")
    service.send(TESTS["test_square"])
    status, _, body = service.agent("POST", "/v1/clear")
    assert (status, json.loads(body)) == (200, {"cleared": True})
    status, _, body = service.agent("GET", "/v1/data")
    assert status == 409 and "no coverage data yet" in json.loads(body)["error"]
    service.switch("second")
    service.send(TESTS["test_primes"])
    contexts = {item.context: _lines(item.lines) for item in service.data(tmp_path / "live.coverage")}
    assert set(contexts) == {"second"}
    assert str(SOURCE / "work.py") in contexts["second"]
    assert not any(file.endswith(AGENT_FILE) for file in contexts["second"])
    status, _, body = service.agent("GET", "/v1/health")
    assert json.loads(body)["process"] == "svc" and json.loads(body)["context"] == "second"
    assert service.stop(signal.SIGTERM) == 128 + signal.SIGTERM


def test_bad_requests_get_json_errors_and_a_token_guards_all_but_health(tmp_path):
    token_file = tmp_path / "agent-token"
    token_file.write_text("s3cret\n")
    service = Service.under_agent(tmp_path, env={"AUDITCOV_AGENT_TOKEN_FILE": str(token_file)})
    good = {"Authorization": "Bearer s3cret"}

    def error(method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
        status, answer_headers, answer = _request(service.agent_port, method, path, body, {**good, **(headers or {})})
        assert answer_headers["Content-Type"] == "application/json"
        return status, json.loads(answer)["error"], answer_headers

    assert _request(service.agent_port, "GET", "/v1/health")[0] == 200  # health needs no token
    status, message, headers = error("GET", "/v1/data", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and "bearer token is required" in message and "WWW-Authenticate" in headers
    assert _request(service.agent_port, "POST", "/v1/clear")[0] == 401
    status, message, headers = error("GET", "/v1/context")
    assert (status, headers["Allow"]) == (405, "POST") and message == "GET is not allowed on /v1/context; use POST"
    status, message, _ = error("GET", "/v1/counters")
    assert status == 404 and "no such path /v1/counters" in message and "/v1/data" in message
    as_json = {"Content-Type": "application/json"}
    status, message, _ = error("POST", "/v1/context", body=b"context=x", headers={"Content-Type": "text/plain"})
    assert status == 415 and "'text/plain' is not application/json" in message
    status, message, _ = error("POST", "/v1/context", body=b"{context", headers=as_json)
    assert status == 400 and message.startswith("the body is not JSON")
    for wrong in (b"[]", b'{"context": 3}', b'{"test": "x"}'):
        status, message, _ = error("POST", "/v1/context", body=wrong, headers=as_json)
        assert status == 400 and message == 'the body must be {"context": "<test name>"} ("" between tests)'
    status, message, _ = error("POST", "/v1/context", body=b" " * (64 * 1024 + 1), headers=as_json)
    assert status == 413 and "the limit is 65536" in message
    # The service kept serving through all of it.
    service.send(TESTS["test_square"])
    assert service.stop() == 128 + signal.SIGTERM


def _run_cover(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*AUDITCOV, "cover", "run", *args],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_script_runs_with_its_arguments_and_exit_status(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import sys\nimport helper\nprint('args', sys.argv[1:], helper.VALUE)\nsys.exit(int(sys.argv[1]))\n"
    )
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    # The user's coverage.py configuration applies, as under `coverage run` (the agent adds its own omit).
    (tmp_path / ".coveragerc").write_text("[run]\nomit = */helper.py\n")
    done = _run_cover(tmp_path, "--", "job.py", "3", "--flag")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "args ['3', '--flag'] 1\n"
    assert "auditcov-agent: listening on http://127.0.0.1:" in done.stderr
    saved = Path(done.stderr.split("coverage data saved in ")[1].strip())
    (context,) = read_contexts(saved)
    assert context.lines == {str(script): [1, 2, 3, 4]}
    failing = tmp_path / "fails.py"
    failing.write_text("raise RuntimeError('boom')\n")
    done = _run_cover(tmp_path, "--", "python", "fails.py")
    assert done.returncode == 1 and "RuntimeError: boom" in done.stderr


def test_unusable_programs_and_addresses_are_refused_before_anything_runs(tmp_path):
    done = _run_cover(tmp_path, "--agent", "10.1.2.3:9000", "--", "-m", "json.tool")
    assert done.returncode == 1
    assert "agent address '10.1.2.3:9000' is not a loopback address" in done.stderr
    assert "AUDITCOV_AGENT_ALLOW_REMOTE=1" in done.stderr
    done = _run_cover(tmp_path, "--", "python", "-m", "json.tool", env={"AUDITCOV_AGENT": "localhost"})
    assert done.returncode == 1 and "agent address 'localhost' is not HOST:PORT" in done.stderr
    done = _run_cover(tmp_path, "--", "python", "-u", "x.py")
    assert done.returncode == 1 and "interpreter option '-u' is not supported" in done.stderr
    done = _run_cover(tmp_path, "--", "python", "-m", "no_such_module_here")
    assert done.returncode == 1 and "No module named" in done.stderr and "no_such_module_here" in done.stderr
    done = _run_cover(tmp_path)
    assert done.returncode == 2 and "Missing argument 'PROGRAM...'" in done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sink_that_is_down_or_hangs_neither_blocks_nor_crashes_the_service(expected, tmp_path):
    # A sink that accepts connections and never answers: registration waits on a background thread.
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    sink = f"http://127.0.0.1:{hanging.getsockname()[1]}"
    service = Service.under_agent(tmp_path, "--sink", sink, "--run", "r1")
    service.switch("test_square")
    service.send(TESTS["test_square"])
    service.switch("")
    # Now the sink is gone altogether: the upload at exit is refused, the data is kept and its place said.
    hanging.close()
    assert service.stop() == 128 + signal.SIGTERM
    assert f"could not send the coverage data to {sink}: the sink did not answer" in service.stderr
    kept = Path(service.stderr.split("it is kept in ")[1].split(" ")[0])
    contexts = {item.context: _lines(item.lines) for item in read_contexts(kept)}
    assert contexts["test_square"] == expected["test_square"]
    assert f"auditcov cover import --run r1 {kept}" in service.stderr


def _sink(sink: Sink, method: str, path: str, document: object = None, token: str = "") -> tuple[int, dict]:
    body = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(sink.url + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _agents(sink: Sink, run: str) -> dict[str, dict]:
    status, document = _sink(sink, "GET", f"/v1/runs/{run}/agents")
    assert status == 200, document
    return {agent["process"]: agent for agent in document["agents"]}


def _report(db: Path, run: str) -> dict[str, dict]:
    done = subprocess.run(
        [*AUDITCOV, "cover", "report", "--db", str(db), "--run", run, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return {entry["test"]: entry for entry in json.loads(done.stdout)["tests"]}


def _spans(files: dict[str, list[list[int]]]) -> Lines:
    return {file: {n for first, last in spans for n in range(first, last + 1)} for file, spans in files.items()}


def test_a_real_sink_switches_the_context_at_markers_and_stores_each_tests_exact_lines(expected, tmp_path):
    # Tokens on both sides: the sink's ingest token (registration, markers, the upload) and the agent's own (the
    # sink's context switches); a call without the right one would leave a test incomplete or its lines unsent.
    (tmp_path / "ingest-token").write_text("ingest-secret\n")
    (tmp_path / "agent-token").write_text("agent-secret\n")
    tokens = {
        "AUDITCOV_TOKEN_FILE": str(tmp_path / "ingest-token"),
        "AUDITCOV_AGENT_TOKEN_FILE": str(tmp_path / "agent-token"),
    }
    db = tmp_path / "store.db"
    sink = Sink(db, "--ingest-token-file", str(tmp_path / "ingest-token"))
    try:
        service = Service.under_agent(tmp_path, "--sink", sink.url, "--run", "py", env=tokens)
        agent = _wait_for(
            lambda: _agents(sink, "py").get("pyservice"), "registration", service.process, service.stderr_path
        )
        assert (agent["kind"], agent["address"]) == ("python", f"http://127.0.0.1:{service.agent_port}")
        for test, requests in TESTS.items():
            for event in ("start", "end"):
                marker = {"test": test, "event": event}
                assert _sink(sink, "POST", "/v1/runs/py/markers", marker, token="ingest-secret")[0] == 200
                if event == "start":
                    service.send(requests)
        # The data reaches the store when the service is stopped with SIGTERM, then the agent says goodbye.
        assert service.stop(signal.SIGTERM) == 128 + signal.SIGTERM
        assert "auditcov-agent: coverage data sent to" in service.stderr, service.stderr
        gone = _agents(sink, "py")["pyservice"]
        assert gone["health"] == "gone" and gone["gone"]["reason"] == "said goodbye"
        assert gone["last_snapshot"]["missing"] is None
    finally:
        assert sink.stop() == 0
    tests = _report(db, "py")
    for test in TESTS:
        entry = tests[test]
        assert _spans(entry["files"]) == expected[test], test
        assert entry["window"]["from"] == "markers"
        assert not entry["incomplete"] and not entry["problems"], entry["problems"]


def test_the_data_reaches_the_store_when_the_program_exits_by_itself(tmp_path):
    db = tmp_path / "store.db"
    script = tmp_path / "job.py"
    script.write_text("total = 0\nfor number in range(3):\n    total += number\n")
    sink = Sink(db)
    try:
        done = _run_cover(tmp_path, "--sink", sink.url, "--run", "job", "--", "python", "job.py")
        assert done.returncode == 0, done.stderr
        assert "auditcov-agent: coverage data sent to" in done.stderr
    finally:
        assert sink.stop() == 0
    store = open_store_readonly(db)
    try:
        # Outside any test: the empty context, stored as it is for an imported .coverage file.
        assert load_python_lines(store, "job") == {"": {str(script): {1, 2, 3}}}
    finally:
        store.conn.close()


def test_registration_is_retried_until_the_sink_comes_up(tmp_path):
    port = _free_port()
    sink_url = f"http://127.0.0.1:{port}"
    service = Service.under_agent(tmp_path, "--sink", sink_url, "--run", "late")
    service.send(TESTS["test_square"])  # nothing listens on the sink's port yet: the service serves all the same
    _wait_for(
        lambda: "registering with" in service.stderr, "a failed registration", service.process, service.stderr_path
    )
    assert f"registering with {sink_url}: the sink did not answer: [Errno 111] Connection refused" in service.stderr
    sink = Sink(tmp_path / "store.db", "--listen", f"127.0.0.1:{port}")
    try:
        agent = _wait_for(
            lambda: _agents(sink, "late").get("pyservice"), "registration", service.process, service.stderr_path
        )
        assert agent["kind"] == "python"
        assert service.stderr.count("registering with") == 1  # said once, not once per retry
        assert service.stop() == 128 + signal.SIGTERM
        assert "auditcov-agent: coverage data sent to" in service.stderr
    finally:
        assert sink.stop() == 0


def test_an_agent_on_a_unix_socket(tmp_path):
    path = tmp_path / "agent.sock"
    command = [*AUDITCOV, "cover", "run", "--agent", f"unix:{path}", "--source", str(SOURCE), "--"]
    service = Service([*command, "python", "-m", "pyservice"], tmp_path, agent=False)
    _wait_for(
        lambda: f"auditcov-agent: listening on unix:{path}" in service.stderr,
        "the agent",
        service.process,
        service.stderr_path,
    )

    def over_socket(method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("localhost", timeout=10)
        connection.sock = socket.socket(socket.AF_UNIX)
        connection.sock.connect(str(path))
        connection.request(method, target, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        try:
            return response.status, response.read()
        finally:
            connection.close()

    status, body = over_socket("GET", "/v1/health")
    assert status == 200 and json.loads(body)["kind"] == "python"
    assert over_socket("POST", "/v1/context", b'{"context": "test_square"}')[0] == 200
    service.send(TESTS["test_square"])
    status, data = over_socket("GET", "/v1/data")
    assert status == 200 and data.startswith(b"SQLite format 3\x00")
    assert service.stop() == 128 + signal.SIGTERM
    assert not path.exists()  # the agent removes its socket at exit
