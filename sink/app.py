"""The sink's HTTP application: routes, authentication, body limits and the mapping of errors to answers.

Routes (see README.md):
    POST /v1/audit, /v1/audit/{run}   audit events (EventList, Event, JSON array or JSON lines); the query
                                      (client-go's `?timeout=30s`) is ignored. 200 with the counts, only after
                                      the batch is committed.
    POST /v1/runs/{run}/markers       a test boundary: {"test": NAME, "event": "start"|"end", "time": RFC3339}
    /v1/runs/{run}/agents, snapshots, coverage, clear: coverage agents and their snapshots at test boundaries
                                      (sink/coverage_routes.py)
    GET  /v1/stats[?run=R]            what the store holds (query token)
    GET  /v1/runs, /v1/runs/{run}/..., /v1/diff  the query API (sink/queries.py; query token)
    GET  /openapi.json                the OpenAPI 3 document of every route (sink/apidoc.py)
    GET  /healthz, /readyz, /metrics  liveness, store writability, Prometheus metrics
    GET  /                            the HTML report of a run (sink/reportpage.py; query token)

Every error is answered as JSON `{"error": "..."}` saying what was wrong. When the sink is stopping, requests
in progress finish (their bodies may still be arriving) while new ones get 503 and are retried by the sender.
The store is written only by the writer thread (`sink.writer`), never on the event loop.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
from aiohttp import ClientPayloadError, web

from auditcov.merge.decode import check_body, decode_event_list
from auditcov.merge.errors import AuditcovError, NotFoundError
from auditcov.merge.events import format_time, now_us, parse_time
from auditcov.merge.stats import store_stats
from auditcov.merge.store import is_database_error, is_postgres_url, open_store, open_store_readonly, unavailable_reason
from auditcov.merge.tokens import read_token
from auditcov.sink.agents import AGENTS
from auditcov.sink.checkpointer import Checkpointer
from auditcov.sink.ingest import Ingestor, Matcher, check_run_name
from auditcov.sink.metrics import CONTENT_TYPE, Metrics
from auditcov.sink.settings import Settings
from auditcov.sink.writer import StoreUnavailableError, Writer

log = logging.getLogger(__name__)

#: Content types an ingest body may have: JSON, or JSON lines under their usual names.
INGEST_TYPES = frozenset(
    {
        "application/json",
        "application/x-ndjson",
        "application/jsonl",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
MARKER_BODY_LIMIT = 64 * 1024
READY_TIMEOUT_S = 5.0
#: What a 503 for a store that cannot take writes asks the sender to wait, in seconds; /readyz says not ready for
#: as long after such a failure (unless a batch commits first), then asks the store again.
RETRY_AFTER_S = 5

SETTINGS = web.AppKey("settings", Settings)
WRITER = web.AppKey("writer", Writer)
#: The writers event batches go to: WRITER, and on PostgreSQL more, each with a connection of its own.
BATCH_WRITERS = web.AppKey("batch_writers", list)
#: How many writers take event batches on PostgreSQL. One writer's transactions run one after the other, and each
#: waits for the server several times (the COPY, the other inserts, the commit): a second one overlaps those waits
#: with its own (bench/ingest.py: one sink 0.74 of SQLite's rate with one writer; see README). SQLite takes one
#: writer at a time whatever the number.
POSTGRES_BATCH_WRITERS = 2
INGESTOR = web.AppKey("ingestor", Ingestor)
METRICS = web.AppKey("metrics", Metrics)
INGEST_TOKEN = web.AppKey("ingest_token", str)
QUERY_TOKEN = web.AppKey("query_token", str)


class Drain:
    """Requests in progress, so a stop can wait for them (aiohttp's own shutdown drops bodies still arriving)."""

    def __init__(self) -> None:
        self.in_progress = 0
        self.stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_progress += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_progress -= 1
        if not self.in_progress:
            self._idle.set()

    async def wait(self, timeout: float) -> bool:
        """Refuse new requests from now on; wait until those in progress are answered. False on timeout."""
        self.stopping = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


DRAIN = web.AppKey("drain", Drain)


def init_app(settings: Settings, *, matcher: Matcher | None = None) -> web.Application:
    """The sink as an aiohttp application: the store is opened now, its writer runs while the app runs."""
    app = web.Application(middlewares=[drain_middleware, error_middleware], client_max_size=settings.body_limit)
    app[DRAIN] = Drain()
    app[SETTINGS] = settings
    db = open_store(settings.db, synchronous=settings.synchronous)
    # A large page cache keeps the events' unique index in memory while millions of rows go in. The WAL is copied
    # back by `Checkpointer` beside the writer; the writer's own checkpoint is a backstop that wraps the WAL round
    # every 40,000 pages (160 MB). Each batch's SAVEPOINT journals the pages it changes: in memory, not in a
    # temporary file (that doubled the bytes written).
    db.conn.execute("PRAGMA cache_size = -262144")
    db.conn.execute("PRAGMA wal_autocheckpoint = 40000")
    db.conn.execute("PRAGMA temp_store = MEMORY")
    db.conn.execute(f"PRAGMA busy_timeout = {round(settings.lock_timeout * 1000)}")
    app[WRITER] = Writer(db)
    extra = POSTGRES_BATCH_WRITERS - 1 if is_postgres_url(settings.db) else 0
    app[BATCH_WRITERS] = [app[WRITER], *(Writer(open_store(settings.db)) for _ in range(extra))]
    app[INGESTOR] = Ingestor(db, keep_bodies=settings.keep_bodies, matcher=matcher)
    app[METRICS] = Metrics()
    app[INGEST_TOKEN] = read_token(settings.ingest_token_file, "ingest_token_file")
    app[QUERY_TOKEN] = read_token(settings.query_token_file, "query_token_file")
    app.cleanup_ctx.append(_writer_ctx)
    app.router.add_post("/v1/audit", ingest, name="ingest")
    app.router.add_post("/v1/audit/{run}", ingest, name="ingest_run")
    app.router.add_post("/v1/runs/{run}/markers", add_marker, name="markers")
    app.router.add_get("/v1/stats", stats, name="stats")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")
    app.router.add_get("/metrics", metrics, name="metrics")
    # The other route modules read this module's app keys, so they are imported here, not at the top.
    from auditcov.sink.coverage_routes import setup_coverage
    from auditcov.sink.queries import setup_query_routes
    from auditcov.sink.reportpage import setup_report_page

    for setup in (setup_coverage, setup_query_routes, setup_report_page):
        setup(app)
    return app


async def _writer_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    # PostgreSQL checkpoints its own WAL.
    checkpointer = None if is_postgres_url(settings.db) else Checkpointer(settings.db, synchronous=settings.synchronous)
    writers = app[BATCH_WRITERS]
    for writer in writers:
        writer.start()
    if checkpointer is not None:
        checkpointer.start()
    yield
    # Handlers have finished by now (graceful shutdown waits for them): commit what they queued, then stop. The
    # writer's connection closes last, so it checkpoints what is left and removes the WAL.
    if checkpointer is not None:
        await asyncio.get_running_loop().run_in_executor(None, checkpointer.close)
    for writer in writers:
        await writer.close()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps({"error": message}), content_type="application/json", headers=headers
    )


@web.middleware
async def drain_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Count requests in progress; once stopping, answer new ones 503 (the apiserver retries them later)."""
    drain = request.app[DRAIN]
    if drain.stopping:
        return _error(503, "the sink is stopping; retry later", {"Connection": "close", "Retry-After": "10"})
    drain.enter()
    try:
        return await handler(request)
    finally:
        drain.leave()


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error as JSON saying what is wrong; library errors (bad input) are 400s, unknown things 404s."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = ("Allow", "WWW-Authenticate", "Connection", "Retry-After")
        headers = {key: value for key, value in exc.headers.items() if key in kept}
        message = exc.text or exc.reason
        if isinstance(exc, web.HTTPMethodNotAllowed):
            message = f"{exc.method} is not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"
        return _error(exc.status, message, headers)
    except NotFoundError as exc:
        return _error(404, str(exc))
    except AuditcovError as exc:
        return _error(400, str(exc))
    except StoreUnavailableError as exc:
        return _error(503, f"{exc}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if (reason := unavailable_reason(exc)) is not None:  # a query's store went away (PostgreSQL restarting)
            return _error(503, f"{reason}; retry later", {"Retry-After": str(RETRY_AFTER_S)})
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def _authorize(request: web.Request, token: str) -> None:
    if not token:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise web.HTTPUnauthorized(
            text="a valid bearer token is required (Authorization: Bearer <token>)",
            headers={"WWW-Authenticate": 'Bearer realm="auditcov"'},
        )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` (never read in whole)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise web.HTTPRequestEntityTooLarge(
            max_size=limit, actual_size=declared, text=f"the body is {declared} bytes; the limit is {limit}"
        )
    body = bytearray()
    # A sender may be slow, but not silent: each chunk must come within body_timeout of the last one.
    timeout = request.app[SETTINGS].body_timeout
    content = request.content
    try:
        while chunk := await asyncio.wait_for(content.readany(), timeout):
            body += chunk
            if len(body) > limit:
                raise web.HTTPRequestEntityTooLarge(
                    max_size=limit, actual_size=len(body), text=f"the body exceeds the limit of {limit} bytes"
                )
    except TimeoutError:
        log.info(
            "cut %s %s from %s: no body byte for %s s (%d of %s bytes received)",
            request.method, request.path, request.remote, timeout, len(body), declared or "unknown",
        )  # fmt: skip
        # Marked complete, the body is not waited for (aiohttp lingers 10 s reading what is left): the answer goes
        # out and the connection closes at once.
        content.feed_eof()
        raise web.HTTPRequestTimeout(
            text=f"no body byte arrived for {timeout} s ({len(body)} bytes received)", headers={"Connection": "close"}
        ) from None
    except (ConnectionError, ClientPayloadError) as exc:
        # The client went away (or broke the body's framing): one line, no traceback; nobody reads the answer.
        log.info(
            "%s %s from %s ended before its body did (%d of %s bytes received): %s",
            request.method, request.path, request.remote, len(body), declared or "unknown", exc or type(exc).__name__,
        )  # fmt: skip
        raise web.HTTPBadRequest(text=f"the body ended early: {exc}") from None
    return bytes(body)


def _json(document: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(document), content_type="application/json")


async def ingest(request: web.Request) -> web.Response:
    """POST /v1/audit[/{run}]: store a batch; 200 with the counts once committed."""
    app = request.app
    started = time.perf_counter()
    code = 500
    try:
        response = await _ingest(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    except AuditcovError:
        code = 400
        raise
    except StoreUnavailableError:
        code = 503
        raise
    finally:
        app[METRICS].batches.labels(str(code)).inc()
        if code == 200:
            app[METRICS].latency.observe(time.perf_counter() - started)


async def _ingest(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    _authorize(request, app[INGEST_TOKEN])
    run = check_run_name(request.match_info.get("run") or settings.default_run)
    if request.content_type not in INGEST_TYPES:
        raise web.HTTPUnsupportedMediaType(
            text=f"content type {request.content_type!r} is not one of {', '.join(sorted(INGEST_TYPES))}"
        )
    body = await read_body(request, settings.body_limit)
    app[METRICS].body_bytes.inc(len(body))
    # The apiserver's EventLists decode straight into events; any other body, or one with an invalid event, is
    # taken item by item so that each bad item is quarantined with its reason: off the event loop, since a
    # broken 32 MiB body takes seconds to scan.
    items = decode_event_list(body)
    if items is None:
        items = await asyncio.get_running_loop().run_in_executor(None, check_body, body)
    ingestor = app[INGESTOR]
    # Rows are prepared here, so the writer thread only runs SQLite (which releases the GIL): the next batch is
    # parsed while this one is written.
    batch = ingestor.prepare(run, items)
    writer = min(app[BATCH_WRITERS], key=lambda writer: writer.queued)
    write = writer.submit(lambda: ingestor.write(batch, writer.db))
    agents = app[AGENTS]
    # The first event of a test new to the run is a boundary: the agents are snapshotted before it is answered
    # (in blocking webhook mode the apiserver has not run the request yet). A run without agents pays nothing.
    if run in agents.live_runs and (boundaries := agents.batch_boundaries(run, batch)) is not None:
        result, _ = await asyncio.gather(write, boundaries)
    else:
        result = await write
    app[METRICS].count_batch(run, len(items), result)
    return _json(result.as_dict())


#: What is cut from either end of a marker's test name (the OpenAPI document states the same: sink/apidoc.py).
MARKER_BLANKS = " \t\r\n"


async def add_marker(request: web.Request) -> web.Response:
    """POST /v1/runs/{run}/markers: record that a test started or ended (at `time`, default now)."""
    app = request.app
    _authorize(request, app[INGEST_TOKEN])
    run = check_run_name(request.match_info["run"])
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=f"content type {request.content_type!r} is not application/json")
    try:
        marker = orjson.loads(await read_body(request, MARKER_BODY_LIMIT))
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the marker is not JSON: {exc}") from None
    if not isinstance(marker, dict):
        raise web.HTTPBadRequest(text='a marker is an object: {"test": NAME, "event": "start"|"end", "time": RFC3339}')
    test, event, moment = marker.get("test"), marker.get("event"), marker.get("time")
    if not isinstance(test, str) or not test.strip(MARKER_BLANKS):
        raise web.HTTPBadRequest(text="marker test must be a string with something besides spaces in it")
    if event not in ("start", "end"):
        raise web.HTTPBadRequest(text=f"marker event must be 'start' or 'end', not {str(event)[:32]!r}")
    if moment is None:
        at_us = now_us()
    else:
        try:
            at_us = parse_time(moment) if isinstance(moment, str) else None
        except ValueError:
            at_us = None
        if at_us is None:
            raise web.HTTPBadRequest(text=f"marker time must be an RFC 3339 time, not {str(moment)[:64]!r}")
    test = test.strip(MARKER_BLANKS)
    ingestor = app[INGESTOR]
    # A boundary too: the run's coverage agents are snapshotted before the marker is answered.
    await asyncio.gather(
        app[WRITER].submit(lambda: ingestor.record_marker(run, test, event, at_us)),
        app[AGENTS].at_marker(run, test, event, at_us),
    )
    return _json({"run": run, "test": test, "event": event, "time": format_time(at_us)})


async def stats(request: web.Request) -> web.Response:
    """GET /v1/stats[?run=R]: the store's counts, read on a connection of its own off the event loop."""
    app = request.app
    _authorize(request, app[QUERY_TOKEN])
    run = request.query.get("run") or None
    path = app[SETTINGS].db

    def read() -> dict:
        db = open_store_readonly(path)
        try:
            return store_stats(db, run)
        finally:
            db.conn.close()

    return _json(await asyncio.get_running_loop().run_in_executor(None, read))


async def healthz(request: web.Request) -> web.Response:
    """Alive while the store writer runs: without it no batch is ever stored again, and only a restart helps."""
    if not all(writer.alive for writer in request.app[BATCH_WRITERS]):
        return _error(503, "a store writer thread has stopped")
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store takes a write transaction (through the writer, as a batch would) and no batch failed
    for want of space or of the lock in the last RETRY_AFTER_S seconds (a transaction that writes nothing does not
    need space)."""
    writer = request.app[WRITER]
    try:
        if not writer.alive:
            raise RuntimeError("the store writer is not running")
        if writer.unavailable is not None and time.monotonic() - writer.unavailable_since < RETRY_AFTER_S:
            raise writer.unavailable
        await asyncio.wait_for(writer.submit(lambda: None), READY_TIMEOUT_S)
    except Exception as exc:
        if not isinstance(exc, TimeoutError | RuntimeError | StoreUnavailableError) and not is_database_error(exc):
            raise
        return _error(503, f"the store is not writable: {exc or type(exc).__name__}")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE})
