"""The coverage.py agent: run a Python program under coverage.py with the agent API beside it (issue #9).

`run_program(argv, config)` does what `coverage run` does (a module with `-m`, or a script path, with its exit
status passed through), plus what the wire contract in README.md ("Python agent") asks:

- an HTTP API on a loopback address or a unix socket (`AgentConfig.listen`): `GET /v1/health`,
  `POST /v1/context` `{"context": NAME}` -> `Coverage.switch_context` (an empty name = between tests),
  `GET /v1/data` -> the coverage.py data file after a save, `POST /v1/clear` -> erase what was collected.
  Errors are JSON `{"error": "..."}`; with a token file every request but health needs `Authorization: Bearer`;
- with a sink, registration (`POST {sink}/v1/runs/{run}/agents`, kind `python`) retried in the background until
  the sink answers 2xx, and at exit the data file sent to `POST {sink}/v1/runs/{run}/agents/{process}/data`
  (then `DELETE` of the registration). SIGTERM is turned into an exit, so the data is sent then too.

It runs inside the service under test, so it uses the standard library and coverage only, and never blocks or
crashes its host: a listen failure or a sink that is down is logged (prefix `auditcov-agent: `) and the program
runs on. Its own threads start before coverage does and this file is omitted, so the agent's code is never in
the service's lines.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import ipaddress
import json
import os
import shutil
import signal
import socket
import socketserver
import ssl
import stat
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import coverage
from coverage.exceptions import CoverageException, _ExceptionDuringRun
from coverage.execfile import PyRunner

from auditcov.merge.errors import AuditcovError
from auditcov.merge.tokens import TokenFileError, read_token

#: The media type of a coverage.py data file on the wire (GET /v1/data, the upload at exit).
DATA_TYPE = "application/vnd.coverage+sqlite"
KIND = "python"
DEFAULT_LISTEN = "127.0.0.1:0"
BODY_LIMIT = 64 * 1024
#: Registration retries: 0.5 s doubling to 10 s, for ever (the contract's backoff).
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0
#: The upload at exit: a few tries when the sink refuses the connection, one when it hangs, so a sink that is
#: down delays the exit by seconds, not for ever.
UPLOAD_TRIES, UPLOAD_TIMEOUT_S = 3, 10.0
REQUEST_TIMEOUT_S = 5.0


class AgentError(AuditcovError):
    """The agent's configuration is unusable (an address it will not listen on, a program it cannot run)."""


def log(message: str) -> None:
    print(f"auditcov-agent: {message}", file=sys.stderr, flush=True)


@dataclass
class AgentConfig:
    """What the agent does; `from_env` reads the contract's environment variables."""

    process: str
    listen: str | None = DEFAULT_LISTEN  # None: no agent API (the program still runs under coverage)
    run: str = "default"
    sink: str | None = None
    sink_ca: str | None = None
    sink_cert: str | None = None  # a client certificate and its key, for a sink that requires them (mTLS)
    sink_key: str | None = None
    sink_token_file: str | None = None
    agent_token_file: str | None = None
    allow_remote: bool = False
    sources: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, process: str) -> AgentConfig:
        """The configuration the AUDITCOV_* variables give; `process` is the default process name."""
        return cls(
            process=environ.get("AUDITCOV_PROCESS") or process,
            listen=environ.get("AUDITCOV_AGENT") or DEFAULT_LISTEN,
            run=environ.get("AUDITCOV_RUN") or "default",
            sink=environ.get("AUDITCOV_SINK") or None,
            sink_ca=environ.get("AUDITCOV_SINK_CA") or None,
            sink_cert=environ.get("AUDITCOV_SINK_CERT") or None,
            sink_key=environ.get("AUDITCOV_SINK_KEY") or None,
            sink_token_file=environ.get("AUDITCOV_TOKEN_FILE") or None,
            agent_token_file=environ.get("AUDITCOV_AGENT_TOKEN_FILE") or None,
            allow_remote=environ.get("AUDITCOV_AGENT_ALLOW_REMOTE") == "1",
        )


def parse_listen(listen: str, *, allow_remote: bool = False) -> tuple[str, str | tuple[str, int]]:
    """`(family, address)` for a listen address: `("unix", path)` or `("inet"|"inet6", (host, port))`."""
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path:
            raise AgentError(f"agent address {listen!r}: a unix socket needs a path (unix:/path/to.sock)")
        return "unix", path
    host, sep, port_text = listen.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise AgentError(f"agent address {listen!r} is not HOST:PORT, [IPV6]:PORT or unix:/path")
    bracketed = host.startswith("[") and host.endswith("]")
    host = host[1:-1] if bracketed else host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AgentError(f"agent address {listen!r}: the host must be an IP address, not {host!r}") from None
    if ip.version == 6 and not bracketed:
        raise AgentError(f"agent address {listen!r}: write an IPv6 host in brackets, e.g. [::1]:PORT")
    if not ip.is_loopback and not allow_remote:
        raise AgentError(
            f"agent address {listen!r} is not a loopback address; the agent exposes process internals, so set "
            "AUDITCOV_AGENT_ALLOW_REMOTE=1 to listen there anyway"
        )
    return ("inet6" if ip.version == 6 else "inet"), (host, int(port_text))


class Measurement:
    """The coverage.py session of this process; every method is safe to call from the agent's thread."""

    def __init__(self, sources: list[str]):
        self.directory = tempfile.mkdtemp(prefix="auditcov-agent-")
        # The user's configuration (.coveragerc, pyproject.toml) applies, as under `coverage run`, with two
        # changes: this file is omitted, and the core is one that records dynamic contexts (sys.monitoring's,
        # the default on newer Pythons, does not).
        self.coverage = coverage.Coverage(data_file=os.path.join(self.directory, ".coverage"), source=sources or None)
        self.coverage.set_option("run:omit", [*(self.coverage.get_option("run:omit") or []), __file__])
        self.coverage.set_option("run:core", "ctrace")
        self.context = ""
        # One lock for everything that touches the data file: a flush, a read of its bytes, an erase.
        self._lock = threading.Lock()

    def switch(self, context: str) -> str:
        """Start the dynamic context `context`; returns the previous one."""
        with self._lock:
            self.coverage.switch_context(context)
            previous, self.context = self.context, context
        return previous

    def data_file(self) -> bytes | None:
        """The data file's bytes with everything collected so far; None while nothing measured has run."""
        with self._lock:
            data = self.coverage.get_data()
            path = Path(data.data_filename())
            return path.read_bytes() if path.is_file() else None

    def clear(self) -> None:
        """Forget what was collected; the current context goes on."""
        with self._lock:
            data = self.coverage.get_data()  # moves what the tracers hold into the data, so it goes too
            data.erase()
            data.set_context(self.context)

    def stop(self) -> Path | None:
        """Stop measuring and save; the data file's path, None when nothing measured ran."""
        with self._lock:
            self.coverage.stop()
            self.coverage.save()
            path = Path(self.coverage.get_data().data_filename())
        return path if path.is_file() else None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _AgentServer
    server_version = "auditcov-agent"
    timeout = REQUEST_TIMEOUT_S  # one request at a time: a client that stalls must not hold the agent

    def log_message(self, format: str, *args: object) -> None:
        pass  # the service owns stderr; the agent logs only its own events

    def address_string(self) -> str:
        return str(self.client_address[0] if isinstance(self.client_address, tuple) else "unix")

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, document: object, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(document).encode(), "application/json", headers)

    def _error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        self._json(status, {"error": message}, headers)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        route = self.server.routes.get(path)
        if route is None:
            self._error(404, f"no such path {path}; the agent serves {', '.join(sorted(self.server.routes))}")
            return
        allowed, handler = route
        if method != allowed:
            self._error(405, f"{method} is not allowed on {path}; use {allowed}", {"Allow": allowed})
            return
        if path != "/v1/health" and not self.server.authorized(self.headers.get("Authorization", "")):
            self._error(
                401,
                "a valid bearer token is required (Authorization: Bearer <the token in AUDITCOV_AGENT_TOKEN_FILE>)",
                {"WWW-Authenticate": 'Bearer realm="auditcov-agent"'},
            )
            return
        try:
            handler(self)
        except CoverageException as exc:
            self._error(500, f"coverage.py failed: {exc}")
        except OSError as exc:
            self._error(500, f"the data file could not be read: {exc}")
        except Exception as exc:  # the agent answers, whatever went wrong, and the host runs on
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    def _read_json(self) -> object:
        """The request's JSON body; answers the error and returns None when there is no usable one."""
        content_type = self.headers.get_content_type()
        if content_type != "application/json":
            self._error(415, f"content type {content_type!r} is not application/json")
            return None
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._error(411, "a Content-Length is required")
            return None
        if int(length) > BODY_LIMIT:
            self._error(413, f"the body is {length} bytes; the limit is {BODY_LIMIT}")
            return None
        try:
            return json.loads(self.rfile.read(int(length)))
        except (ValueError, UnicodeDecodeError) as exc:
            self._error(400, f"the body is not JSON: {exc}")
            return None

    def health(self) -> None:
        server = self.server
        self._json(
            200, {"process": server.process, "pid": os.getpid(), "kind": KIND, "context": server.measurement.context}
        )

    def switch_context(self) -> None:
        body = self._read_json()
        if body is None:
            return
        context = body.get("context") if isinstance(body, dict) else None
        if not isinstance(context, str):
            self._error(400, 'the body must be {"context": "<test name>"} ("" between tests)')
            return
        previous = self.server.measurement.switch(context)
        self._json(200, {"context": context, "previous": previous})

    def data(self) -> None:
        data = self.server.measurement.data_file()
        if data is None:
            self._error(409, "no coverage data yet: none of the measured code has run (is --source right?)")
            return
        self._send(200, data, DATA_TYPE)

    def clear(self) -> None:
        self.server.measurement.clear()
        self._json(200, {"cleared": True})


ROUTES = {
    "/v1/health": ("GET", _Handler.health),
    "/v1/context": ("POST", _Handler.switch_context),
    "/v1/data": ("GET", _Handler.data),
    "/v1/clear": ("POST", _Handler.clear),
}


class _AgentServer(socketserver.TCPServer):
    """One request at a time, on one thread started before coverage: the agent's code is never traced."""

    allow_reuse_address = True

    def __init__(self, family: str, address, measurement: Measurement, process: str, token: str):
        self.address_family = {"unix": socket.AF_UNIX, "inet": socket.AF_INET, "inet6": socket.AF_INET6}[family]
        self.measurement, self.process, self.token = measurement, process, token
        self.routes = ROUTES
        super().__init__(address, _Handler)

    def authorized(self, header: str) -> bool:
        if not self.token:
            return True
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def url(self) -> str:
        if self.address_family == socket.AF_UNIX:
            return f"unix:{self.server_address}"
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if self.address_family == socket.AF_INET6 else f"http://{host}:{port}"


def start_server(config: AgentConfig, measurement: Measurement) -> _AgentServer | None:
    """Listen and serve on a daemon thread; None (logged) when the agent cannot listen."""
    try:
        family, address = parse_listen(config.listen, allow_remote=config.allow_remote)
        token = read_token(config.agent_token_file, "AUDITCOV_AGENT_TOKEN_FILE")
        if family == "unix" and os.path.exists(address) and stat.S_ISSOCK(os.stat(address).st_mode):
            os.unlink(address)  # a socket left by an earlier run of the same service (never another file)
        server = _AgentServer(family, address, measurement, config.process, token)
    except (AgentError, TokenFileError, OSError) as exc:
        log(f"not listening, the program runs without the agent: {exc}")
        return None
    threading.Thread(target=server.serve_forever, name="auditcov-agent", daemon=True).start()
    log(f"listening on {server.url()}")
    return server


class SinkClient:
    """Calls to the sink: registration (retried on a thread), the data upload and the goodbye at exit."""

    def __init__(self, config: AgentConfig):
        self.config = config
        self.base = config.sink.rstrip("/")
        self.context = None
        if config.sink_ca or config.sink_cert:
            self.context = ssl.create_default_context(cafile=config.sink_ca)
            if config.sink_cert:
                try:
                    self.context.load_cert_chain(config.sink_cert, config.sink_key)
                except (OSError, ssl.SSLError) as exc:
                    log(f"AUDITCOV_SINK_CERT/AUDITCOV_SINK_KEY: {exc}; calling the sink without a client certificate")
        try:
            self.token = read_token(config.sink_token_file, "AUDITCOV_TOKEN_FILE")
        except TokenFileError as exc:
            log(f"{exc}; calling the sink without a token")
            self.token = ""
        self.registered = threading.Event()
        self._stopping = threading.Event()
        self._agent_path = f"/v1/runs/{_quote(config.run)}/agents"

    def _call(self, method: str, path: str, body: bytes | None, content_type: str, timeout: float) -> int:
        """The sink's status code; raises OSError (URLError, timeouts) when it did not answer."""
        request = urllib.request.Request(self.base + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def register_in_background(self, address: str) -> None:
        document = {"process": self.config.process, "kind": KIND, "address": address, "pid": os.getpid()}
        if self.config.agent_token_file:
            with contextlib.suppress(TokenFileError):
                document["token"] = read_token(self.config.agent_token_file, "AUDITCOV_AGENT_TOKEN_FILE")
        body = json.dumps(document).encode()
        threading.Thread(target=self._register, args=(body,), name="auditcov-agent-register", daemon=True).start()

    def _register(self, body: bytes) -> None:
        delay, last_reason = RETRY_FIRST_S, None
        while not self._stopping.is_set():
            try:
                status = self._call("POST", self._agent_path, body, "application/json", REQUEST_TIMEOUT_S)
                reason = None if 200 <= status < 300 else f"the sink answered {status}"
            except (OSError, ValueError) as exc:
                reason = f"the sink did not answer: {getattr(exc, 'reason', exc)}"
            if reason is None:
                self.registered.set()
                log(f"registered with {self.base} as {self.config.process!r} in run {self.config.run!r}")
                return
            if reason != last_reason:  # once per reason, not once per retry
                log(f"registering with {self.base}: {reason}; retrying in the background")
                last_reason = reason
            self._stopping.wait(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    def upload(self, data: bytes) -> str | None:
        """Send the data file; None when the sink stored it, else why not."""
        self._stopping.set()
        path = f"{self._agent_path}/{_quote(self.config.process)}/data"
        reason = None
        for attempt in range(UPLOAD_TRIES):
            if attempt:
                time.sleep(RETRY_FIRST_S * attempt)
            try:
                status = self._call("POST", path, data, DATA_TYPE, UPLOAD_TIMEOUT_S)
            except (OSError, ValueError) as exc:
                cause = getattr(exc, "reason", exc)
                reason = f"the sink did not answer: {cause}"
                if isinstance(cause, TimeoutError):
                    break  # a sink that hangs once hangs again: the exit is not held up for it
                continue
            if 200 <= status < 300:
                return None
            reason = f"the sink answered {status}"
            if status < 500:
                break  # refused: trying again gets the same answer
        return reason

    def goodbye(self) -> None:
        """Tell the sink this process is gone (its snapshots and lines stay)."""
        with contextlib.suppress(OSError, ValueError):
            self._call("DELETE", f"{self._agent_path}/{_quote(self.config.process)}", None, "", REQUEST_TIMEOUT_S)


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def parse_program(argv: list[str]) -> tuple[list[str], bool]:
    """`(args, as_module)` for PROGRAM ARGS: `python -m module ...`, `python script.py ...`, `-m module ...` or
    `script.py ...` (what `coverage run` takes, with the interpreter's name allowed in front)."""
    args = list(argv)
    if args and Path(args[0]).name.startswith("python") and not args[0].endswith(".py"):
        args = args[1:]
    if not args:
        raise AgentError("no program to run: give `-- python -m MODULE ARGS` or `-- SCRIPT.py ARGS`")
    if args[0] == "-m":
        if len(args) < 2:
            raise AgentError("-m needs a module name: `-- python -m MODULE ARGS`")
        return args[1:], True
    if args[0].startswith("-"):
        raise AgentError(
            f"interpreter option {args[0]!r} is not supported: the program runs in this interpreter, "
            "so give `-- python -m MODULE ARGS` or `-- SCRIPT.py ARGS`"
        )
    return args, False


def program_name(args: list[str], *, as_module: bool) -> str:
    """The default process name: the module's name, or the script's without `.py`."""
    return args[0] if as_module else Path(args[0]).stem


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _terminate(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def run_program(argv: list[str], config: AgentConfig) -> int:
    """Run PROGRAM ARGS under coverage.py with the agent (see the module docstring); the program's exit status."""
    args, as_module = parse_program(argv)
    runner = PyRunner(args, as_module=as_module)
    runner.prepare()
    measurement = Measurement(config.sources)
    server = start_server(config, measurement) if config.listen else None
    sink = SinkClient(config) if config.sink else None
    if sink is not None and server is not None:
        sink.register_in_background(server.url())
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)  # so that a SIGTERM still sends the data
    os.environ["COVERAGE_RUN"] = "true"
    status = 0
    measurement.coverage.start()
    try:
        runner.run()
    except SystemExit as exc:
        status = _exit_status(exc)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except _ExceptionDuringRun as exc:
        traceback.print_exception(*exc.args)
        status = 1
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the upload short
        _finish(measurement, server, sink)
    return status


def _finish(measurement: Measurement, server: _AgentServer | None, sink: SinkClient | None) -> None:
    """Stop serving, save, send the data to the sink; keep the file (and say where) when it cannot go."""
    if server is not None:
        server.shutdown()
        server.server_close()
        if server.address_family == socket.AF_UNIX:
            with contextlib.suppress(OSError):
                os.unlink(server.server_address)
    path = measurement.stop()
    if path is None:
        log("nothing measured ran, so there is no coverage data (is --source right?)")
        shutil.rmtree(measurement.directory, ignore_errors=True)
        return
    if sink is None:
        log(f"coverage data saved in {path}")
        return
    reason = sink.upload(path.read_bytes())
    sink.goodbye()
    if reason is None:
        log(f"coverage data sent to {sink.base} (run {sink.config.run!r}, process {sink.config.process!r})")
        shutil.rmtree(measurement.directory, ignore_errors=True)
    else:
        log(
            f"could not send the coverage data to {sink.base}: {reason}; it is kept in {path} "
            f"(auditcov cover import --run {sink.config.run} {path})"
        )
