"""The sink's query API: JSON answers about the runs in the store, behind the query token, described at
`GET /openapi.json` (sink/apidoc.py).

    GET /v1/runs                                   runs with their counts and time span
    GET /v1/runs/{run}/tests[?conformance=&sig=&q=]  the run's tests, each with its endpoint and line counts
    GET /v1/runs/{run}/tests/{test}                one test (its name URL-encoded): endpoints and code lines
    GET /v1/runs/{run}/endpoints/{operationId}     the tests that hit one endpoint, directly and indirectly
    GET /v1/runs/{run}/code?file=PATH[&line=N]     the tests that ran a file, or one of its lines
    GET /v1/runs/{run}/summary                     coverage by level, group and category; conformance-eligible
    GET /v1/runs/{run}/untested                    eligible endpoints no conformance test hit
    GET /v1/diff?base=RUN&head=RUN                 endpoints and lines gained and lost

Every run route takes `successful_only=true` (only hits answered 1xx-3xx count as tested). The answers are
merge/reports/queries.py's (and diff.py's), which the HTML page shares. Reads run on one thread of their own,
off the event loop, on one long-lived read-only connection: its `PRAGMA data_version` tells the per-run cache
(`queries.RunCache`) when anything was committed. Unknown runs, tests, endpoints and files are 404s saying which.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import orjson
import sqlite_utils
from aiohttp import web

from auditcov.merge.reports import queries
from auditcov.merge.reports.diff import diff_runs
from auditcov.merge.store import is_database_error, open_store_readonly
from auditcov.sink.apidoc import api_document
from auditcov.sink.app import QUERY_TOKEN, SETTINGS, _authorize, _json


class QueryReader:
    """The query routes' store access: one thread, one read-only connection (opened on first use), one cache."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cache = queries.RunCache()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="auditcov-queries")
        self._db: sqlite_utils.Database | None = None

    async def run(self, read: Callable[[sqlite_utils.Database], dict | bytes]) -> dict | bytes:
        """`read(db)` on the query thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, read)

    def _call(self, read: Callable[[sqlite_utils.Database], dict | bytes]) -> dict | bytes:
        if self._db is None:
            self._db = open_store_readonly(self.path)
        try:
            return read(self._db)
        except Exception as exc:
            if is_database_error(exc):
                self._db.conn.close()  # reopened by the next query
                self._db = None
            raise

    def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.conn.close()

        self._executor.submit(shut).result()
        self._executor.shutdown()


QUERIES = web.AppKey("queries", QueryReader)
Handler = Callable[[web.Request], Awaitable[web.Response]]


def setup_query_routes(app: web.Application) -> None:
    """Add the query routes and `/openapi.json` (called by `init_app`)."""
    app[QUERIES] = QueryReader(app[SETTINGS].db)
    app.cleanup_ctx.append(_reader_ctx)
    add = app.router.add_get
    add("/openapi.json", openapi_json, name="openapi")
    add("/v1/runs", list_runs, name="runs")
    add("/v1/runs/{run}/tests", list_tests, name="run_tests")
    add("/v1/runs/{run}/tests/{test:.+}", one_test, name="run_test")
    add("/v1/runs/{run}/endpoints/{operationId}", one_endpoint, name="run_endpoint")
    add("/v1/runs/{run}/code", code_of_file, name="run_code")
    add("/v1/runs/{run}/summary", run_summary, name="run_summary")
    add("/v1/runs/{run}/untested", run_untested, name="run_untested")
    add("/v1/diff", diff, name="diff")


async def _reader_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await asyncio.get_running_loop().run_in_executor(None, app[QUERIES].close)


def _flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if value.lower() not in ("true", "false"):
        raise web.HTTPBadRequest(text=f"{name} must be true or false, not {value[:32]!r}")
    return value.lower() == "true"


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise web.HTTPBadRequest(text=f"the query parameter {name} is required")
    return value


def _query_route(handler: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
    """A query route: the query token first, before the parameters are read."""

    @functools.wraps(handler)
    async def authorized(request: web.Request) -> web.Response:
        _authorize(request, request.app[QUERY_TOKEN])
        return await handler(request)

    return authorized


async def _answer(request: web.Request, read: Callable[[sqlite_utils.Database], dict | bytes]) -> web.Response:
    """The answer `read` gives on the query thread: a dict, or JSON bytes already (NotFoundError: a 404)."""
    answer = await request.app[QUERIES].run(read)
    if isinstance(answer, bytes):
        return web.Response(body=answer, content_type="application/json")
    return _json(answer)


async def _run_answer(request: web.Request, key: tuple, answer: Callable[[queries.RunData], dict]) -> web.Response:
    """Answer from the run in the path's cached `RunData`; the answer itself is kept with it under `key`."""
    run = request.match_info["run"]
    successful_only = bool(_flag(request, "successful_only"))
    cache = request.app[QUERIES].cache

    def read(db: sqlite_utils.Database) -> bytes:
        data = cache.get(db, run, successful_only=successful_only)
        # Kept serialized: a diff or a big test's answer takes longer to encode than to look up.
        return data.remember(key, lambda: orjson.dumps(answer(data)))

    return await _answer(request, read)


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json: the OpenAPI 3 document of every route (open: it holds no data)."""
    return web.Response(body=_DOCUMENT, content_type="application/json")


@_query_route
async def list_runs(request: web.Request) -> web.Response:
    cache = request.app[QUERIES].cache
    return await _answer(request, cache.runs)


@_query_route
async def list_tests(request: web.Request) -> web.Response:
    conformance = _flag(request, "conformance")
    sig, q = request.query.get("sig") or None, request.query.get("q") or None
    key = ("tests", conformance, sig, q)
    return await _run_answer(request, key, lambda data: queries.tests(data, conformance=conformance, sig=sig, q=q))


@_query_route
async def one_test(request: web.Request) -> web.Response:
    test = request.match_info["test"]
    return await _run_answer(request, ("test", test), lambda data: queries.test_detail(data, test))


@_query_route
async def one_endpoint(request: web.Request) -> web.Response:
    operation_id = request.match_info["operationId"]
    return await _run_answer(
        request, ("endpoint", operation_id), lambda data: queries.endpoint_detail(data, operation_id)
    )


@_query_route
async def code_of_file(request: web.Request) -> web.Response:
    file = _required(request, "file")
    line_text = request.query.get("line")
    line = None
    if line_text:
        if not line_text.isdigit() or int(line_text) < 1:
            raise web.HTTPBadRequest(text=f"line must be a line number (1 or more), not {line_text[:32]!r}")
        line = int(line_text)
    return await _run_answer(request, ("code", file, line), lambda data: queries.code(data, file, line))


@_query_route
async def run_summary(request: web.Request) -> web.Response:
    return await _run_answer(request, ("summary",), queries.summary)


@_query_route
async def run_untested(request: web.Request) -> web.Response:
    return await _run_answer(request, ("untested",), queries.untested)


@_query_route
async def diff(request: web.Request) -> web.Response:
    base, head = _required(request, "base"), _required(request, "head")
    cache = request.app[QUERIES].cache

    def read(db: sqlite_utils.Database) -> dict:
        old, new = cache.get(db, base), cache.get(db, head)
        return new.remember(("diff", base, old.generation), lambda: orjson.dumps(diff_runs(old, new)))

    return await _answer(request, read)


_DOCUMENT = orjson.dumps(api_document())
