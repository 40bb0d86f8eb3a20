"""The sink's coverage agents: who they are, whether they answer, and their snapshots at test boundaries.

`Agents` keeps the agents of each run (registered with `POST /v1/runs/{run}/agents`, or listed in the
settings' `agents`; the store's `cover_agents` table mirrors it, and an agent that is gone is marked, never
deleted). At a boundary (`boundary`) every live agent of the run is asked at once, each with `agent_timeout`:

- go: `GET /v1/counters`; the bytes are stored raw (merge/cover/snapshots.py `write_raw_snapshot`) and decoded
  later by a background task, off the ingest path. The program's meta-data is fetched once per agent (in the
  background after it registers, or when a counter file names meta-data the store does not have yet);
- python: `POST /v1/context` with the test that starts ("" between tests); the row records the boundary, the
  lines arrive per context (`POST .../agents/{process}/data`, or fetched by `GET .../coverage`);
- profile: the Go text profile at `address` is read (once whole: merge/cover/livefile.py) and stored raw.

An agent that fails or does not answer in time gets a missing snapshot with the reason: the tests that boundary
bounds are reported incomplete. Every snapshot row goes through the store's writer, in one job per boundary.
A health check asks each live agent every `HEALTH_INTERVAL_S`; after `HEALTH_FAILURES` failures in a row it is
marked gone (and no longer asked at boundaries) until it registers again.

Agent tokens (an agent's own bearer token) are kept in memory only: after a restart of the sink, an agent with
a token is refused (401, a missing snapshot saying so) until it registers again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from auditcov.merge.cover import snapshots
from auditcov.merge.cover.livefile import read_settled
from auditcov.merge.cover.model import CoverageError
from auditcov.merge.errors import AuditcovError
from auditcov.merge.events import format_time, now_us
from auditcov.merge.store import ensure_run, open_store_readonly
from auditcov.merge.tokens import read_token
from auditcov.sink.ingest import PreparedBatch, check_run_name
from auditcov.sink.settings import AGENT_KINDS, Settings
from auditcov.sink.writer import Writer

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 1.0
HEALTH_FAILURES = 3
HEALTH_TIMEOUT_S = 1.0
#: Meta-data of a kube-apiserver build is a few MB: fetched in the background, with time to spare.
META_TIMEOUT_S = 30.0
#: Raw snapshots are decoded only once no boundary has come for this long: decoding holds the GIL for tens of
#: milliseconds a snapshot at kube-apiserver size, which a boundary in progress would wait for.
DECODE_DELAY_S = 0.5
#: The first event of a new test is a boundary only if it reached the sink this soon after the apiserver
#: received the request: in blocking webhook mode it arrives at once, in batch mode seconds later, when the
#: counters no longer stand for the moment the event names.
EVENT_BOUNDARY_MAX_AGE_US = 1_000_000
_TEST_COLUMN, _RECEIVED_COLUMN = 18, 15  # in ingest.EVENT_COLUMNS
_PROCESS_NAME = re.compile(r"[^\x00-\x1f/]{1,256}")
_HTTP_ADDRESS = re.compile(r"https?://(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}/?")


class AgentError(AuditcovError):
    """A registration that names no usable agent; the message says which field is wrong."""


@dataclass(slots=True)
class Agent:
    """One agent of one run, as registered, with what the sink last learnt of it."""

    run: str
    process: str
    kind: str
    address: str
    pid: int | None
    token: str
    registered_us: int
    gone_us: int | None = None
    gone_reason: str | None = None
    health: str = "not checked yet"
    failures: int = 0  # failed health checks in a row
    last_snapshot_us: int | None = None
    last_missing: str | None = None

    @property
    def live(self) -> bool:
        return self.gone_us is None

    def describe(self) -> dict:
        """The agent as `GET /v1/runs/{run}/agents` shows it."""
        return {
            "process": self.process,
            "kind": self.kind,
            "address": self.address,
            "pid": self.pid,
            "registered": format_time(self.registered_us),
            "health": "gone" if not self.live else self.health,
            "gone": None if self.live else {"time": format_time(self.gone_us), "reason": self.gone_reason},
            "last_snapshot": None
            if self.last_snapshot_us is None
            else {"time": format_time(self.last_snapshot_us), "missing": self.last_missing},
        }


def check_agent(run: str, document: object) -> dict:
    """A registration body checked: `{"process", "kind", "address", "pid"?, "token"?}`; raises `AgentError`."""
    check_run_name(run)
    if not isinstance(document, dict):
        raise AgentError('a registration is an object: {"process": NAME, "kind": "go", "address": URL, "pid": N}')
    process, kind, address = document.get("process"), document.get("kind"), document.get("address")
    pid, token = document.get("pid"), document.get("token") or ""
    if not isinstance(process, str) or not _PROCESS_NAME.fullmatch(process):
        raise AgentError(f"process must be 1-256 characters without '/' or control characters, not {process!r:.80}")
    if kind not in AGENT_KINDS:
        raise AgentError(f"kind must be one of {', '.join(AGENT_KINDS)}, not {kind!r:.40}")
    if not isinstance(address, str) or not address:
        raise AgentError("address must be a non-empty string")
    if kind != "profile" and not (_HTTP_ADDRESS.fullmatch(address) or address.startswith("unix:/")):
        raise AgentError(f"address must be http(s)://HOST:PORT or unix:/path, not {address!r:.120}")
    if pid is not None and (not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0):
        raise AgentError(f"pid must be a positive integer, not {pid!r:.40}")
    if not isinstance(token, str):
        raise AgentError("token must be a string")
    return {"process": process, "kind": kind, "address": address.rstrip("/"), "pid": pid, "token": token}


class AgentUnanswered(Exception):
    """An agent did not give what was asked; the message is the missing snapshot's reason."""


#: What asking an agent may raise (besides cancellation): each becomes a reason in words (`failure_reason`).
AGENT_FAILURES = (CoverageError, AgentUnanswered, OSError, aiohttp.ClientError, TimeoutError)


def failure_reason(exc: BaseException, timeout: float) -> str:
    """Why an agent gave nothing, in a few words for the report."""
    if isinstance(exc, AgentUnanswered):
        return str(exc)
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout * 1000:.0f} ms"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the agent closed the connection without answering"
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(slots=True)
class _Taken:
    """What one agent gave at one boundary: raw bytes, a bare boundary (python), or the reason it gave nothing."""

    agent: Agent
    raw: bytes | None = None
    missing: str | None = None


def _whole_profile(text: str) -> str:
    """A text profile read from a file that may be being rewritten: whole when it starts with its mode line and
    ends with a line's end (decoding checks every line later)."""
    if not text.startswith("mode: ") or not text.endswith("\n"):
        raise CoverageError("not a whole text profile (no mode line, or a cut-off last line)")
    return text


@dataclass
class Agents:
    """The registry, the boundary snapshots, health checks and the background decoder (module docstring)."""

    settings: Settings
    writer: Writer
    agents: dict[tuple[str, str], Agent] = field(default_factory=dict)
    #: Runs with at least one live agent: the ingest path's only question when none is registered.
    live_runs: dict[str, list[Agent]] = field(default_factory=dict)
    _seen_tests: dict[str, set[str]] = field(default_factory=dict)
    _metas: set[str] = field(default_factory=set)
    _fetching_meta: set[str] = field(default_factory=set)
    _sessions: dict[str, aiohttp.ClientSession] = field(default_factory=dict)
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _decode_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    _last_boundary: float = 0.0  # time.monotonic() of the last boundary
    _decoder_pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="auditcov-decoder")
    )

    # --- life cycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the store's agents and meta-data hashes, add the configured agents, start the background tasks."""
        rows, metas = await self.writer.submit(self._read_known)
        self._metas.update(metas)
        for run, process, kind, address, pid, registered_us, gone_us, gone_reason in rows:
            self.agents[run, process] = Agent(run, process, kind, address, pid, "", registered_us, gone_us, gone_reason)
        for entry in self.settings.agents:
            token = read_token(entry.token_file, f"agents {entry.run}/{entry.process} token_file")
            await self.register(entry.run, {**_entry_fields(entry), "token": token, "pid": None})
        self._index()
        for run in self.live_runs:
            await self._load_seen_tests(run)
        self._spawn(self._health_loop())
        self._spawn(self._decode_loop())
        self._decode_wanted.set()  # raw snapshots a killed sink left behind

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for session in self._sessions.values():
            await session.close()
        # A decoding in progress finishes first (off the event loop: at kube-apiserver size it takes a moment).
        await asyncio.get_running_loop().run_in_executor(None, self._decoder_pool.shutdown)

    def _spawn(self, coroutine: Awaitable) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _read_known(self) -> tuple[list[tuple], list[str]]:
        """(On the writer thread.) The store's agents, and the meta-data hashes it holds."""
        conn = self.writer.db.conn
        rows = conn.execute(
            "SELECT run, process, kind, address, pid, registered_us, gone_us, gone_reason FROM cover_agents"
        ).fetchall()
        return rows, [row[0] for row in conn.execute("SELECT hash FROM cover_meta")]

    def _index(self) -> None:
        live: dict[str, list[Agent]] = {}
        for agent in self.agents.values():
            if agent.live:
                live.setdefault(agent.run, []).append(agent)
        self.live_runs = live
        # Tests seen while a run has no agent are not followed: read them again when one registers.
        for run in set(self._seen_tests) - set(live):
            del self._seen_tests[run]

    # --- registry -----------------------------------------------------------------------------------------------

    async def register(self, run: str, document: object) -> Agent:
        """Add or replace an agent (and clear its gone mark); for a go agent, fetch its meta-data meanwhile."""
        fields = check_agent(run, document)
        agent = Agent(run, registered_us=now_us(), **fields)

        def job() -> None:
            conn = self.writer.db.conn
            ensure_run(conn, run, agent.registered_us)
            conn.execute(
                "INSERT OR REPLACE INTO cover_agents (run, process, kind, address, pid, registered_us) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (run, agent.process, agent.kind, agent.address, agent.pid, agent.registered_us),
            )

        await self.writer.submit(job)
        self.agents[run, agent.process] = agent
        self._index()
        await self._load_seen_tests(run)
        if agent.kind == "go":
            self._spawn(self._fetch_meta(agent))
        log.info("coverage agent %s/%s registered (%s at %s)", run, agent.process, agent.kind, agent.address)
        return agent

    async def mark_gone(self, run: str, process: str, reason: str) -> Agent:
        """Mark an agent gone (its snapshots stay); `KeyError` if the run has no such agent."""
        agent = self.agents[run, process]
        agent.gone_us, agent.gone_reason = now_us(), reason

        def job() -> None:
            self.writer.db.conn.execute(
                "UPDATE cover_agents SET gone_us = ?, gone_reason = ? WHERE run = ? AND process = ?",
                (agent.gone_us, reason, run, process),
            )

        await self.writer.submit(job)
        self._index()
        log.info("coverage agent %s/%s gone: %s", run, process, reason)
        return agent

    def of_run(self, run: str) -> list[Agent]:
        return sorted((a for a in self.agents.values() if a.run == run), key=lambda agent: agent.process)

    async def _load_seen_tests(self, run: str) -> None:
        if run in self._seen_tests:
            return
        conn = self.writer.db.conn
        names = await self.writer.submit(
            lambda: {row[0] for row in conn.execute("SELECT name FROM tests WHERE run = ?", (run,))}
        )
        self._seen_tests.setdefault(run, set()).update(names)

    # --- talking to agents --------------------------------------------------------------------------------------

    def _session(self, agent: Agent) -> aiohttp.ClientSession:
        key = agent.address if agent.address.startswith("unix:") else ""
        session = self._sessions.get(key)
        if session is None or session.closed:
            connector = aiohttp.UnixConnector(path=key[5:]) if key else aiohttp.TCPConnector(limit=0)
            session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
            self._sessions[key] = session
        return session

    async def call(self, agent: Agent, method: str, path: str, *, json: object = None) -> bytes:
        """One request to an agent; its body on 2xx, else `AgentUnanswered` saying what it answered."""
        base = "http://localhost" if agent.address.startswith("unix:") else agent.address
        headers = {"Authorization": f"Bearer {agent.token}"} if agent.token else {}
        body = None if json is None else orjson.dumps(json)
        if body is not None:
            headers["Content-Type"] = "application/json"
        async with self._session(agent).request(method, base + path, data=body, headers=headers) as response:
            data = await response.read()
            if not 200 <= response.status < 300:
                raise AgentUnanswered(f"the agent answered {response.status} to {method} {path}: {_error_text(data)}")
            return data

    async def _take(self, agent: Agent, context: str) -> _Taken:
        timeout = self.settings.agent_timeout
        try:
            async with asyncio.timeout(timeout):
                if agent.kind == "go":
                    raw = await self.call(agent, "GET", "/v1/counters")
                    meta = snapshots.counters_meta_hash(raw, where=f"agent {agent.process}")
                    if meta not in self._metas:
                        self._spawn(self._fetch_meta(agent))
                    return _Taken(agent, raw=raw)
                if agent.kind == "python":
                    await self.call(agent, "POST", "/v1/context", json={"context": context})
                    return _Taken(agent)
                return _Taken(agent, raw=await self._read_profile(agent))
        except AGENT_FAILURES as exc:
            return _Taken(agent, missing=failure_reason(exc, timeout))

    async def _read_profile(self, agent: Agent) -> bytes:
        def read() -> bytes:
            text, _ = read_settled(agent.address, _whole_profile, quiet=0.0, attempts=5, pause=0.01)
            return text.encode()

        return await asyncio.get_running_loop().run_in_executor(None, read)

    async def _fetch_meta(self, agent: Agent) -> None:
        key = f"{agent.run}/{agent.process}"
        if key in self._fetching_meta:
            return
        self._fetching_meta.add(key)
        try:
            async with asyncio.timeout(META_TIMEOUT_S):
                data = await self.call(agent, "GET", "/v1/meta")
            conn = self.writer.db.conn
            known = await self.writer.submit(lambda: snapshots.write_meta(conn, data, where=f"agent {key}"))
            self._metas.add(known)
            self._decode_wanted.set()
        except AGENT_FAILURES as exc:
            log.warning("coverage agent %s: cannot fetch its meta-data: %s", key, failure_reason(exc, META_TIMEOUT_S))
        finally:
            self._fetching_meta.discard(key)

    # --- boundaries ---------------------------------------------------------------------------------------------

    async def boundary(self, run: str, at_us: int, *, context: str = "") -> list[_Taken]:
        """Snapshot every live agent of `run` at once for the moment `at_us`, and store the results (one writer
        job); `context` is what a Python agent's dynamic context becomes. Returns what each agent gave."""
        agents = self.live_runs.get(run, [])
        if not agents:
            return []
        started = self._last_boundary = time.monotonic()
        taken = await asyncio.gather(*(self._take(agent, context) for agent in agents))
        taken_us = now_us()
        conn = self.writer.db.conn

        def job() -> None:
            for item in taken:
                agent, source = item.agent, f"{item.agent.kind} agent {item.agent.process} at {item.agent.address}"
                common = {"run": run, "process": agent.process, "at_us": at_us, "taken_us": taken_us}
                if item.missing is not None:
                    snapshots.write_missing_snapshot(conn, **common, reason=item.missing, source=source)
                elif item.raw is not None:
                    snapshots.write_raw_snapshot(conn, **common, raw=item.raw, source=source)
                else:
                    snapshots.write_boundary(conn, **common, source=source)

        await self.writer.submit(job)
        # What the boundary costs whoever waits for it (the apiserver in blocking mode, a test runner's marker).
        log.info(
            "coverage boundary of run %s at %s (%s): %d agents in %.1f ms, %d missing",
            run, format_time(at_us), context or "no test", len(taken), (time.monotonic() - started) * 1000,
            sum(item.missing is not None for item in taken),
        )  # fmt: skip
        for item in taken:
            item.agent.last_snapshot_us, item.agent.last_missing = at_us, item.missing
            if item.missing is None:
                item.agent.failures, item.agent.health = 0, "ok"  # it answered: as good as a health check
            else:
                log.warning("coverage agent %s/%s: snapshot missing: %s", run, item.agent.process, item.missing)
        if any(item.raw is not None for item in taken):
            self._decode_wanted.set()
        return list(taken)

    async def at_marker(self, run: str, test: str, event: str, at_us: int) -> None:
        """A marker is a boundary: snapshot the run's agents (a Python agent's context becomes the test that
        starts, or none after an end); the test's first event is then no boundary of its own."""
        if run in self.live_runs:
            self._seen_tests.setdefault(run, set()).add(test)
            await self._boundary_for_audit(run, at_us, context=test if event == "start" else "")

    async def _boundary_for_audit(self, run: str, at_us: int, *, context: str) -> None:
        """A boundary on the audit path (a marker, an event): whatever goes wrong with coverage is logged, never
        the answer the apiserver or the test runner gets."""
        try:
            await self.boundary(run, at_us, context=context)
        except Exception:
            log.exception("coverage boundary of run %s at %s failed", run, format_time(at_us))

    def batch_boundaries(self, run: str, batch: PreparedBatch) -> Awaitable[None] | None:
        """The boundaries a batch opens (the first event of each test new to the run), or None when it opens none.
        Called only for runs with live agents."""
        seen = self._seen_tests.setdefault(run, set())
        new = [test for test in batch.tests if test not in seen]
        if not new:
            return None
        seen.update(new)
        firsts: dict[str, int] = {}
        for row in batch.events:
            test, received_us = row[_TEST_COLUMN], row[_RECEIVED_COLUMN]
            if test in new and received_us is not None and received_us < firsts.get(test, received_us + 1):
                firsts[test] = received_us
        fresh = sorted(
            (at_us, test) for test, at_us in firsts.items() if batch.received_us - at_us <= EVENT_BOUNDARY_MAX_AGE_US
        )
        if not fresh:
            return None

        async def take() -> None:
            for at_us, test in fresh:
                await self._boundary_for_audit(run, at_us, context=test)

        return take()

    # --- health and decoding ------------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_INTERVAL_S)
            agents = [agent for agents in self.live_runs.values() for agent in agents]
            await asyncio.gather(*(self._check(agent) for agent in agents))

    async def _check(self, agent: Agent) -> None:
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_S):
                if agent.kind == "profile":
                    if not Path(agent.address).is_file():
                        raise AgentUnanswered(f"{agent.address} does not exist")
                else:
                    await self.call(agent, "GET", "/v1/health")
        except AGENT_FAILURES as exc:
            agent.failures += 1
            agent.health = f"failing: {failure_reason(exc, HEALTH_TIMEOUT_S)}"
            if (
                agent.failures >= HEALTH_FAILURES
                and agent.live
                and self.agents.get((agent.run, agent.process)) is agent
            ):
                await self.mark_gone(
                    agent.run, agent.process, f"stopped answering ({HEALTH_FAILURES} health checks): {agent.health[9:]}"
                )
            return
        agent.failures, agent.health = 0, "ok"

    async def _decode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        reader = await loop.run_in_executor(self._decoder_pool, open_store_readonly, self.settings.db)
        try:
            while True:
                await self._decode_wanted.wait()
                self._decode_wanted.clear()
                while (quiet := time.monotonic() - self._last_boundary) < DECODE_DELAY_S:
                    await asyncio.sleep(DECODE_DELAY_S - quiet)
                await self._decode_all(reader, loop)
        finally:
            await loop.run_in_executor(self._decoder_pool, reader.conn.close)

    async def _decode_all(self, reader, loop: asyncio.AbstractEventLoop) -> None:
        """Decode each pending snapshot on the decoder thread and store it through the writer, one job each."""
        conn = self.writer.db.conn
        for snapshot_id in await loop.run_in_executor(self._decoder_pool, snapshots.pending_snapshots, reader):
            if time.monotonic() - self._last_boundary < DECODE_DELAY_S:
                self._decode_wanted.set()  # boundaries again: the rest waits for the next quiet spell
                return
            try:
                decoded = await loop.run_in_executor(self._decoder_pool, snapshots.decode_snapshot, reader, snapshot_id)
            except snapshots.MetaPending:
                continue  # decoded once its meta-data arrives (which sets _decode_wanted)
            except CoverageError as exc:
                reason = str(exc)
                await self.writer.submit(lambda: snapshots.write_undecodable(conn, snapshot_id, reason))  # noqa: B023
                continue
            if decoded is not None:
                await self.writer.submit(lambda: snapshots.write_decoded(conn, decoded))  # noqa: B023


def _entry_fields(entry) -> dict:
    return {"process": entry.process, "kind": entry.kind, "address": entry.address}


def _error_text(data: bytes) -> str:
    """An agent's error body: its JSON `error`, else the first bytes as text."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document["error"][:300]
    return data[:200].decode("utf-8", "replace") or "(empty body)"


AGENTS = web.AppKey("agents", Agents)
