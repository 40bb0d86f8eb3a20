"""The Go coverage agent (merge/cover/goagent) in a real program built by `auditcov cover build`.

tests/goprograms/agentdemo, a small stdlib HTTP server, is built once with the agent and run with
AUDITCOV_AGENT on loopback or a unix socket. What its /v1/meta and /v1/counters answer, written out as a
GOCOVERDIR, is read by `go tool covdata textfmt`: that is the oracle for `decode_agent_coverage`. Registration is
checked with real aiohttp servers on loopback (plain HTTP and TLS with trustme) that record what the agent sends.
`cover build` itself: flags passed through (-coverpkg, a user's -overlay), a command of the module cache (modules
served from a file:// GOPROXY folder into a GOMODCACHE of the test's own), its errors, and the agent source
shipped in the wheel. Every build goes through the -toolexec wrapper: without it, none would succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import aiohttp
import pytest
import trustme
from aiohttp import web
from click.testing import CliRunner
from gotool import GO_ENV, GOPROGRAMS, run

from auditcov.merge.cover.covdata import parse_meta
from auditcov.merge.cover.goagent import AGENT_FILE, agent_source, decode_agent_coverage, is_agent_file
from auditcov.merge.cover.gotext import parse_text
from auditcov.merge.cover.model import Profile
from auditcov.sink.cli import cli

DEMO = GOPROGRAMS / "agentdemo"
REPO = Path(__file__).parent.parent
AGENT_SOURCE = REPO / "merge/cover/goagent" / AGENT_FILE
#: The Go settings of tests/gotool.py, for `auditcov cover build` run in this process.
GO_VARIABLES = {name: GO_ENV[name] for name in ("GOFLAGS", "GOPROXY", "GOTOOLCHAIN")}
BUILT = "{binary}: example.com/agentdemo with the auditcov coverage agent\n"


def _tree(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under `folder` with its modification time and contents."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _cover_build(*args: str | Path, env: dict[str, str] | None = None):
    return CliRunner(env={**GO_VARIABLES, **(env or {})}).invoke(cli, ["cover", "build", *map(str, args)])


class Demo(NamedTuple):
    binary: Path
    #: tests/goprograms/agentdemo as it was before the build.
    tree_before: dict[str, tuple[int, bytes]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    """agentdemo built once with the agent, with -C (so go runs in its module) and -o."""
    before = _tree(DEMO)
    binary = tmp_path_factory.mktemp("agentdemo") / "agentdemo"
    result = _cover_build("-o", binary, "-C", DEMO, ".")
    assert result.exit_code == 0, result.output
    assert result.output == BUILT.format(binary=binary)
    return Demo(binary, before)


class Program:
    """A started server that prints "NAME: serving on URL" first (agentdemo does): its process, that URL, and its
    stderr lines as they arrive."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process, self.url = process, url
        self.log: list[str] = []
        self._more = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.log.append(line.decode().rstrip("\n"))
            self._more.set()

    async def wait_for_log(self, pattern: str, timeout: float = 20.0) -> re.Match:
        """The first stderr line matching `pattern`, waiting for it if it has not come yet."""
        async with asyncio.timeout(timeout):
            while True:
                self._more.clear()
                for line in self.log:
                    if match := re.search(pattern, line):
                        return match
                await self._more.wait()

    async def agent_address(self) -> str:
        return (await self.wait_for_log(r"^auditcov-agent: listening on (\S+)$"))[1]

    async def get(self, path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as response:
            assert response.status == 200, await response.text()
            return await response.read()


@contextlib.asynccontextmanager
async def running(binary: Path, env: dict[str, str]) -> AsyncIterator[Program]:
    """Start `binary` with only PATH, a GOCOVERDIR for its exit and `env`; stop it afterwards."""
    with tempfile.TemporaryDirectory() as exit_coverage:
        process = await asyncio.create_subprocess_exec(
            binary,
            env={"PATH": os.environ["PATH"], "GOCOVERDIR": exit_coverage, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            first = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            match = re.fullmatch(r"\w+: serving on (http://\S+)\n", first)
            assert match, f"{binary} printed {first!r}"
            yield Program(process, match[1])
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


class Answer(NamedTuple):
    status: int
    content_type: str
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


async def ask_agent(address: str, path: str, *, method: str = "GET", token: str | None = None) -> Answer:
    """One request to an agent at its advertised address (`http://HOST:PORT` or `unix:/path`)."""
    connector, base = None, address
    if address.startswith("unix:"):
        connector, base = aiohttp.UnixConnector(path=address.removeprefix("unix:")), "http://agent"
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, base + path, headers=headers) as response,
    ):
        return Answer(response.status, response.content_type, await response.read())


async def snapshot(address: str, token: str | None = None) -> tuple[bytes, bytes]:
    """The agent's meta-data and counter bytes."""
    meta, counters = await ask_agent(address, "/v1/meta", token=token), await ask_agent(address, "/v1/counters")
    assert (meta.status, meta.content_type, meta.body[:4]) == (200, "application/octet-stream", b"\0cvm")
    assert (counters.status, counters.content_type, counters.body[:4]) == (200, "application/octet-stream", b"\0cwm")
    return meta.body, counters.body


def go_reads(meta: bytes, counters: bytes, pid: int, directory: Path) -> Profile:
    """What `go tool covdata textfmt` makes of the bytes, written as a GOCOVERDIR with Go's own file names."""
    meta_hash = parse_meta(meta, where="meta").hash.hex()
    directory.mkdir()
    (directory / f"covmeta.{meta_hash}").write_bytes(meta)
    (directory / f"covcounters.{meta_hash}.{pid}.{time.time_ns()}").write_bytes(counters)
    run("go", "tool", "covdata", "textfmt", "-i", directory, "-o", directory / "profile.txt")
    return parse_text((directory / "profile.txt").read_text())


def assert_agrees_with_go(ours: Profile, go: Profile) -> None:
    """Block for block, statements and counts, apart from the agent's own file, which Go keeps and we leave out."""
    assert ours.mode == go.mode == "atomic"
    expected = {block: (go.statements[block], count) for block, count in go.counts.items()}
    assert {block: (ours.statements[block], count) for block, count in ours.counts.items()} == {
        block: value for block, value in expected.items() if not is_agent_file(block.file)
    }


def line_of(path: Path, text: str) -> int:
    """The number of the one line of `path` that contains `text`."""
    (number,) = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def counts_on_line(profile: Profile, file: str, line: int) -> list[int]:
    """The counts of the blocks of `file` that hold `line`."""
    return [
        count
        for block, count in profile.counts.items()
        if block.file == file and block.start_line <= line <= block.end_line
    ]


MAIN_GO, CALC_GO, TEXT_GO = (f"example.com/agentdemo/{name}" for name in ("main.go", "calc/calc.go", "text/text.go"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.go
def test_cover_build_changes_nothing_in_the_package(demo):
    assert _tree(DEMO) == demo.tree_before
    assert not (DEMO / AGENT_FILE).exists() and not (DEMO / "go.sum").exists()


@pytest.mark.go
@pytest.mark.parametrize("where", ["tcp", "unix"])
async def test_meta_and_counters_decode_as_go_reads_them(demo, tmp_path, where):
    with tempfile.TemporaryDirectory(prefix="ac-") as short:  # a unix socket path has ~100 bytes at most
        listen = "127.0.0.1:0" if where == "tcp" else f"unix:{short}/agent.sock"
        async with running(demo.binary, {"AUDITCOV_AGENT": listen}) as program:
            address = await program.agent_address()
            if where == "tcp":
                assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*", address)
            else:
                assert address == listen
                assert Path(short, "agent.sock").stat().st_mode & 0o777 == 0o600
            assert next(line for line in program.log if line.startswith("auditcov-agent: ")).endswith(address)
            health = await ask_agent(address, "/v1/health")
            assert (health.status, health.content_type) == (200, "application/json")
            assert health.json() == {"process": "agentdemo", "pid": program.process.pid, "kind": "go", "mode": "atomic"}
            assert await program.get("/sum?n=5") == b"15 odd\n"
            assert await program.get("/sum?n=5") == b"15 odd\n"
            assert await program.get("/hello") == b"hello, world\n"
            meta, counters = await snapshot(address)
    ours = decode_agent_coverage(meta, counters, where="agentdemo")
    go = go_reads(meta, counters, program.process.pid, tmp_path / "covdata")
    assert_agrees_with_go(ours, go)
    # The exclusion is real: Go sees the agent's blocks (the agent ran), the profile has none.
    assert any(is_agent_file(block.file) and count for block, count in go.counts.items())
    assert set(ours.packages) == {MAIN_GO, CALC_GO, TEXT_GO}
    # The work of each request is where it should be: 5 iterations twice, words never.
    assert counts_on_line(ours, CALC_GO, line_of(DEMO / "calc/calc.go", "total += i")) == [10]
    assert counts_on_line(ours, MAIN_GO, line_of(DEMO / "main.go", 'name = "world"')) == [1]
    assert counts_on_line(ours, TEXT_GO, line_of(DEMO / "text/text.go", "seen[strings.ToLower")) == [0]


@pytest.mark.go
async def test_clear_resets_the_counters(demo):
    async with running(demo.binary, {"AUDITCOV_AGENT": "[::1]:0"}) as program:
        address = await program.agent_address()
        assert address.startswith("http://[::1]:")
        await program.get("/sum?n=3")
        cleared = await ask_agent(address, "/v1/clear", method="POST")
        assert (cleared.status, cleared.json()) == (200, {"cleared": True})
        after_clear = decode_agent_coverage(*await snapshot(address), where="agentdemo")
        await program.get("/words?text=a+b+A")
        after_words = decode_agent_coverage(*await snapshot(address), where="agentdemo")
    assert after_clear.statements and not any(after_clear.counts.values())
    # Three words, so the loop body ran three times.
    assert counts_on_line(after_words, TEXT_GO, line_of(DEMO / "text/text.go", "seen[strings.ToLower")) == [3]
    assert counts_on_line(after_words, CALC_GO, line_of(DEMO / "calc/calc.go", "total += i")) == [0]


@pytest.mark.go
async def test_the_token_is_required_except_for_health(demo, tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    env = {"AUDITCOV_AGENT": "127.0.0.1:0", "AUDITCOV_AGENT_TOKEN_FILE": str(tmp_path / "token")}
    async with running(demo.binary, env) as program:
        address = await program.agent_address()
        assert (await ask_agent(address, "/v1/health")).status == 200
        for path, method in [("/v1/meta", "GET"), ("/v1/counters", "GET"), ("/v1/clear", "POST")]:
            for token in (None, "wrong", "s3cre", "s3cret2"):
                refused = await ask_agent(address, path, method=method, token=token)
                assert (refused.status, refused.json()) == (401, {"error": "missing or wrong bearer token"})
        counters = await ask_agent(address, "/v1/counters", token="s3cret")
        assert (counters.status, counters.body[:4]) == (200, b"\0cwm")
        assert (await ask_agent(address, "/v1/clear", method="POST", token="s3cret")).status == 200


@pytest.mark.go
async def test_unknown_paths_and_wrong_methods_are_json_errors(demo):
    async with running(demo.binary, {"AUDITCOV_AGENT": "127.0.0.1:0"}) as program:
        address = await program.agent_address()
        missing = await ask_agent(address, "/v1/profile")
        assert (missing.status, missing.content_type, missing.json()) == (
            404,
            "application/json",
            {"error": "no such path: /v1/profile"},
        )
        wrong = await ask_agent(address, "/v1/clear")
        assert (wrong.status, wrong.json()) == (405, {"error": "/v1/clear takes POST, not GET"})
        assert (await ask_agent(address, "/v1/counters", method="POST")).status == 405


@pytest.mark.go
@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"AUDITCOV_AGENT": "0.0.0.0:0"}, r'AUDITCOV_AGENT="0\.0\.0\.0:0" is not a loopback .*_ALLOW_REMOTE=1'),
        ({"AUDITCOV_AGENT": ":0"}, r'AUDITCOV_AGENT=":0" is not a loopback address'),
        ({"AUDITCOV_AGENT": "localhost"}, r'AUDITCOV_AGENT="localhost": want 127\.0\.0\.1:PORT, \[::1\]:PORT or'),
        ({"AUDITCOV_AGENT": "127.0.0.1:{busy}"}, r"listen tcp 127\.0\.0\.1:\d+: bind: address already in use"),
        (
            {"AUDITCOV_AGENT": "127.0.0.1:0", "AUDITCOV_AGENT_TOKEN_FILE": "/nonexistent/token"},
            r"AUDITCOV_AGENT_TOKEN_FILE: open /nonexistent/token: no such file or directory",
        ),
    ],
    ids=["all-interfaces", "no-host", "no-port", "port-in-use", "no-token-file"],
)
async def test_an_agent_that_cannot_start_leaves_its_host_running(demo, env, reason):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**env, "AUDITCOV_AGENT": env["AUDITCOV_AGENT"].format(busy=busy.getsockname()[1])}
        async with running(demo.binary, env) as program:
            await program.wait_for_log(r"^auditcov-agent: not started: " + reason)
            assert await program.get("/hello?name=host") == b"hello, host\n"
            assert not [line for line in program.log if "listening on" in line]


@pytest.mark.go
async def test_a_unix_socket_in_use_is_left_alone_and_a_stale_one_replaced(demo):
    with tempfile.TemporaryDirectory(prefix="ac-") as short:
        path = f"{short}/agent.sock"
        with socket.socket(socket.AF_UNIX) as live:
            live.bind(path)
            live.listen()
            async with running(demo.binary, {"AUDITCOV_AGENT": f"unix:{path}"}) as program:
                await program.wait_for_log(rf"^auditcov-agent: not started: listen unix {path}: bind: address already")
        # Closed, the socket file stays behind, with nobody answering on it.
        assert Path(path).is_socket()
        async with running(demo.binary, {"AUDITCOV_AGENT": f"unix:{path}"}) as program:
            assert await program.agent_address() == f"unix:{path}"
            assert (await ask_agent(f"unix:{path}", "/v1/health")).status == 200


@contextlib.asynccontextmanager
async def sink(port: int, answers: list[int], ssl_context: ssl.SSLContext | None = None):
    """A real aiohttp server on the port that records each registration and answers with `answers` in turn."""
    received: list[tuple[str, str | None, object]] = []

    async def register(request: web.Request) -> web.Response:
        received.append((request.match_info["run"], request.headers.get("Authorization"), await request.json()))
        status = answers[min(len(received), len(answers)) - 1]
        return web.json_response({"error": "starting up"} if status >= 300 else {"registered": True}, status=status)

    app = web.Application()
    app.router.add_post("/v1/runs/{run}/agents", register)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context).start()
    try:
        yield received
    finally:
        await runner.cleanup()


@pytest.mark.go
async def test_registration_retries_until_the_sink_answers(demo, tmp_path):
    port = free_port()
    (tmp_path / "ingest").write_text("ingest-secret\n")
    (tmp_path / "agent").write_text("agent-secret")
    env = {
        "AUDITCOV_AGENT": "127.0.0.1:0",
        "AUDITCOV_SINK": f"http://127.0.0.1:{port}/",
        "AUDITCOV_RUN": "e2e-1",
        "AUDITCOV_PROCESS": "demo-api",
        "AUDITCOV_TOKEN_FILE": str(tmp_path / "ingest"),
        "AUDITCOV_AGENT_TOKEN_FILE": str(tmp_path / "agent"),
    }
    target = f"http://127.0.0.1:{port}/v1/runs/e2e-1/agents"
    async with running(demo.binary, env) as program:
        address = await program.agent_address()
        await program.wait_for_log(rf"^auditcov-agent: registering with {target}: .*connection refused \(retrying\)$")
        # Nothing listens on the sink's port, and the host and the agent serve all the same.
        assert await program.get("/hello?name=down") == b"hello, down\n"
        assert (await ask_agent(address, "/v1/counters", token="agent-secret")).status == 200
        async with sink(port, answers=[503, 201]) as received:
            await program.wait_for_log(rf"^auditcov-agent: registered with {target} as demo-api$")
        await program.wait_for_log(
            rf"^auditcov-agent: registering with {target}: 503 Service Unavailable: .*starting up"
        )
    expected = {
        "process": "demo-api",
        "kind": "go",
        "address": address,
        "pid": program.process.pid,
        "token": "agent-secret",
    }
    assert received == [("e2e-1", "Bearer ingest-secret", expected)] * 2


@pytest.mark.go
async def test_registration_over_tls_with_the_sink_ca(demo, tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ac-") as short:
        socket_path = f"{short}/agent.sock"
        env = {
            "AUDITCOV_AGENT": f"unix:{socket_path}",
            "AUDITCOV_SINK": f"https://127.0.0.1:{port}",
            "AUDITCOV_SINK_CA": str(tmp_path / "ca.pem"),
        }
        async with (
            sink(port, answers=[200], ssl_context=server_context) as received,
            running(demo.binary, env) as program,
        ):
            await program.wait_for_log(
                r"^auditcov-agent: registered with https://\S+/v1/runs/default/agents as agentdemo$"
            )
    # No agent token: no "token" key; no ingest token: no Authorization header.
    body = {"process": "agentdemo", "kind": "go", "address": f"unix:{socket_path}", "pid": program.process.pid}
    assert received == [("default", None, body)]


@pytest.mark.go
async def test_registration_over_mtls_with_a_client_certificate(demo, tmp_path):
    # A sink with client_ca (as make e2e's): the agent presents AUDITCOV_SINK_CERT/AUDITCOV_SINK_KEY.
    ca = trustme.CA()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client = ca.issue_cert("agent.auditcov-test")
    client.cert_chain_pems[0].write_to_path(tmp_path / "agent.pem")
    client.private_key_pem.write_to_path(tmp_path / "agent-key.pem")
    port = free_port()
    env = {
        "AUDITCOV_AGENT": "127.0.0.1:0",
        "AUDITCOV_SINK": f"https://127.0.0.1:{port}",
        "AUDITCOV_SINK_CA": str(tmp_path / "ca.pem"),
        "AUDITCOV_SINK_CERT": str(tmp_path / "agent.pem"),
        "AUDITCOV_SINK_KEY": str(tmp_path / "agent-key.pem"),
    }
    async with sink(port, answers=[200], ssl_context=server_context) as received, running(demo.binary, env) as program:
        await program.wait_for_log(r"^auditcov-agent: registered with https://\S+/v1/runs/default/agents as agentdemo$")
    assert [run for run, _, _ in received] == ["default"]


@pytest.mark.go
def test_coverpkg_and_a_users_overlay_pass_through(tmp_path, monkeypatch):
    before = _tree(DEMO)
    (tmp_path / "extra.go").write_text(
        'package main\n\nimport "os"\n\nfunc init() { os.Stderr.WriteString("extra\\n") }\n'
    )
    overlay = tmp_path / "overlay.json"
    overlay.write_text(json.dumps({"Replace": {str(DEMO / "extra.go"): str(tmp_path / "extra.go")}}))
    monkeypatch.chdir(tmp_path)
    result = _cover_build("-C", DEMO, ".", "--", "-coverpkg=example.com/agentdemo/calc", f"-overlay={overlay}")
    assert result.exit_code == 0, result.output
    # Without -o the binary is the command's name in the current directory, not in the package.
    assert result.output == BUILT.format(binary=tmp_path / "agentdemo")
    assert _tree(DEMO) == before

    async def serve() -> tuple[list[str], tuple[bytes, bytes], int]:
        async with running(tmp_path / "agentdemo", {"AUDITCOV_AGENT": "127.0.0.1:0"}) as program:
            address = await program.agent_address()
            await program.get("/sum?n=4")
            return program.log, await snapshot(address), program.process.pid

    log, (meta, counters), pid = asyncio.run(serve())
    assert "extra" in log
    ours = decode_agent_coverage(meta, counters, where="agentdemo")
    # calc as asked, main because the build adds it (Go's coverage runtime starts from main), not text; the
    # overlay's extra.go is in main, measured like the rest (the -toolexec wrapper gives the cover tool its file).
    assert {block.file for block in ours.counts} == {CALC_GO, MAIN_GO, "example.com/agentdemo/extra.go"}
    assert_agrees_with_go(ours, go_reads(meta, counters, pid, tmp_path / "covdata"))
    assert counts_on_line(ours, CALC_GO, line_of(DEMO / "calc/calc.go", "total += i")) == [4]


TOOL_MAIN = """package main

import (
	"fmt"
	"net"
	"net/http"

	"example.com/lib"
)

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Printf("tool: serving on http://%s\\n", listener.Addr())
	http.Serve(listener, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, lib.Double(21))
	}))
}
"""
LIB = "package lib\n\n// Double is twice n.\nfunc Double(n int) int {\n\treturn 2 * n\n}\n"


def _publish(proxy: Path, module: str, files: dict[str, str]) -> None:
    """Module `module` v1.0.0 in a GOPROXY folder (the file:// protocol of `go help goproxy`): list, info, mod, zip."""
    versions = proxy / module / "@v"
    versions.mkdir(parents=True)
    (versions / "list").write_text("v1.0.0\n")
    (versions / "v1.0.0.info").write_text('{"Version": "v1.0.0", "Time": "2026-01-01T00:00:00Z"}')
    (versions / "v1.0.0.mod").write_text(files["go.mod"])
    with zipfile.ZipFile(versions / "v1.0.0.zip", "w") as archive:
        for name, text in files.items():
            archive.writestr(f"{module}@v1.0.0/{name}", text)


@pytest.mark.go
def test_a_command_in_the_module_cache_is_built_as_a_copy_in_the_main_module(tmp_path):
    """Go refuses an overlay beneath GOMODCACHE (kube-apiserver built from a wrapper module is such a command)."""
    proxy = tmp_path / "proxy"
    _publish(proxy, "example.com/lib", {"go.mod": "module example.com/lib\n\ngo 1.22\n", "lib.go": LIB})
    tool_mod = "module example.com/tool\n\ngo 1.22\n\nrequire example.com/lib v1.0.0\n"
    _publish(proxy, "example.com/tool", {"go.mod": tool_mod, "cmd/tool/main.go": TOOL_MAIN})
    wrap = tmp_path / "wrap"
    wrap.mkdir()
    # Like hack/e2e/kube: the wrapper requires the command's module only, not the modules its main imports.
    (wrap / "go.mod").write_text("module example.com/wrap\n\ngo 1.22\n\nrequire example.com/tool v1.0.0\n")
    env = {
        "GOPROXY": f"file://{proxy}",
        "GOSUMDB": "off",
        "GOMODCACHE": str(tmp_path / "modcache"),
        "GOFLAGS": "-buildvcs=false -mod=mod -modcacherw",
    }
    run("go", "build", "-o", os.devnull, "example.com/tool/cmd/tool", cwd=wrap, env=env)  # fills go.sum
    before = _tree(wrap)
    binary = tmp_path / "tool"
    args = ["-C", wrap, "-o", binary, "example.com/tool/cmd/tool", "--", "-coverpkg=example.com/lib"]
    result = _cover_build(*args, env=env)
    assert result.exit_code == 0, result.output
    built_as = "example.com/wrap/auditcov-cover-build/tool"
    assert result.output.splitlines() == [
        f"{binary}: example.com/tool/cmd/tool with the auditcov coverage agent",
        f"(its folder is in the module cache, where go build -overlay adds no file: built as {built_as}, so its own"
        " files have that path in coverage)",
    ]
    assert _tree(wrap) == before

    async def serve() -> tuple[bytes, bytes, int]:
        async with running(binary, {"AUDITCOV_AGENT": "127.0.0.1:0"}) as program:
            address = await program.agent_address()
            assert await program.get("/") == b"42\n"
            return *await snapshot(address), program.process.pid

    meta, counters, pid = asyncio.run(serve())
    ours = decode_agent_coverage(meta, counters, where="tool")
    assert_agrees_with_go(ours, go_reads(meta, counters, pid, tmp_path / "covdata"))
    assert {block.file for block, count in ours.counts.items() if count} == {
        f"{built_as}/main.go",
        "example.com/lib/lib.go",
    }


@pytest.mark.go
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-C", DEMO, "./calc"], r"\./calc: example\.com/agentdemo/calc is package calc, not a main package"),
        (["-C", DEMO, "./nothing"], r"go list \./nothing \(in \S+agentdemo\) failed:\n.*nothing"),
        (["-C", DEMO, "./..."], r"\./\.\.\.: names 3 packages \(example\.com/agentdemo, example\.com/agentdemo/calc, "),
        ([".", "--", "-o", "x"], r"-o: give it to auditcov cover build itself \(before PKG\), not after --"),
        ([".", "--", "-covermode=count"], r"-covermode=count: the agent needs -covermode=atomic"),
        ([".", "--", "./other"], r"'\./other' after --: only go build flags go there"),
        ([".", "--", "-tags"], r"-tags: go build flag without its value"),
        ([".", "--", "-toolexec=strace"], r"-toolexec: cover build runs go with a -toolexec of its own"),
    ],
    ids=["not-main", "no-package", "several", "output-flag", "covermode", "not-a-flag", "no-value", "toolexec"],
)
def test_cover_build_errors_say_what_is_wrong(args, message):
    result = _cover_build(*args)
    assert result.exit_code == 1
    assert re.search(r"^Error: " + message, result.output, re.MULTILINE), result.output


@pytest.mark.go
def test_a_failing_build_shows_gos_errors(tmp_path):
    (tmp_path / "go.mod").write_text("module example.com/broken\n\ngo 1.22\n")
    (tmp_path / "main.go").write_text("package main\n\nfunc main() { undefinedThing() }\n")
    result = _cover_build("-o", tmp_path / "bin", "-C", tmp_path, ".")
    assert result.exit_code == 1
    assert result.output.startswith("Error: go build of . failed (exit status 1):\n")
    # Go's message: the file and line (the cover tool's //line directives drop the column), and the error.
    assert re.search(r"^\./main\.go:3(:\d+)?: undefined: undefinedThing$", result.output, re.MULTILINE)
    assert not (tmp_path / "bin").exists() and not (tmp_path / AGENT_FILE).exists()


def test_cover_build_without_go_says_so(tmp_path):
    result = _cover_build("-C", tmp_path, ".", env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    assert (
        result.output == "Error: go: not found on PATH; `auditcov cover build` needs a Go toolchain (1.20 or later)\n"
    )


@pytest.mark.go
def test_the_agent_is_gofmt_clean_and_builds_at_go_1_20(tmp_path):
    """The agent compiles at the host module's language version; runtime/coverage needs Go 1.20."""
    assert run("gofmt", "-l", AGENT_SOURCE) == ""
    (tmp_path / "go.mod").write_text("module example.com/old\n\ngo 1.20\n")
    (tmp_path / "main.go").write_text("package main\n\nfunc main() {}\n")
    (tmp_path / "overlay.json").write_text(json.dumps({"Replace": {str(tmp_path / AGENT_FILE): str(AGENT_SOURCE)}}))
    run("go", "vet", f"-overlay={tmp_path / 'overlay.json'}", ".", cwd=tmp_path)


@pytest.mark.slow
def test_the_agent_source_ships_in_the_wheel(tmp_path):
    """Built offline from a copy of the tree, installed into a folder, found there with importlib.resources."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source)
    for folder in ("sink", "merge"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    offline = ["--no-deps", "--no-index", "--no-build-isolation"]
    subprocess.run([*pip, "wheel", *offline, "--wheel-dir", tmp_path / "wheels", source], check=True)
    (wheel,) = (tmp_path / "wheels").glob("auditcov-*.whl")
    assert f"auditcov/merge/cover/goagent/{AGENT_FILE}" in zipfile.ZipFile(wheel).namelist()
    subprocess.run([*pip, "install", *offline, "--target", tmp_path / "site", wheel], check=True)
    # -S: no site-packages, so not the editable install of this tree; the agent's module needs only the stdlib.
    found = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys, auditcov.merge.cover.goagent as g; "
            "print(g.__file__); sys.stdout.flush(); sys.stdout.buffer.write(g.agent_source())",
        ],
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        check=True,
    ).stdout
    where, _, text = found.partition(b"\n")
    assert Path(where.decode()).is_relative_to(tmp_path / "site")
    assert text == AGENT_SOURCE.read_bytes() == agent_source()
