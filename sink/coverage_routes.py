"""The sink's coverage-proxy routes (issue #9), installed by `setup_coverage(app)`; sink/agents.py does the work.

Routes (see README.md):
    POST   /v1/runs/{run}/agents                    an agent registers: {"process", "kind", "address", "pid",
                                                    "token"?}; again for the same process replaces it
    GET    /v1/runs/{run}/agents                    the run's agents: kind, address, health, last snapshot
                                                    (query token)
    DELETE /v1/runs/{run}/agents/{process}          an agent says goodbye: marked gone, its snapshots stay
    POST   /v1/runs/{run}/agents/{process}/data     a Python agent's coverage.py data file (at its exit):
                                                    stored as per-test lines
    POST   /v1/runs/{run}/snapshots                 a boundary with no test (the end of a run): every agent
    GET    /v1/runs/{run}/coverage[?format=lcov][&test=NAME]
                                                    the run's coverage now, from the agents' live counters and
                                                    Python lines (a Go text profile, or lcov); with `test`, that
                                                    test's delta from the stored snapshots (query token)
    POST   /v1/runs/{run}/clear[?process=P]         clear the counters of the run's agents (or one)

Markers and the first event of a new test are boundaries too: sink/app.py calls `Agents.at_marker` and
`Agents.batch_boundaries` before answering them. POSTs need the ingest token, GETs the query token.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import orjson
from aiohttp import web

from auditcov.merge.cover import gotext, snapshots
from auditcov.merge.cover.goagent import decode_agent_coverage
from auditcov.merge.cover.livefile import read_settled
from auditcov.merge.cover.model import Profile
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.pycoverage import add_python_lines
from auditcov.merge.events import format_time, now_us
from auditcov.merge.reports.lcov import lcov_report
from auditcov.merge.store import open_store_readonly
from auditcov.sink.agents import AGENT_FAILURES, AGENTS, Agent, Agents, failure_reason
from auditcov.sink.app import INGEST_TOKEN, QUERY_TOKEN, SETTINGS, WRITER, _authorize, _json, read_body
from auditcov.sink.ingest import check_run_name
from auditcov.sink.pydata import DATA_TYPE, store_python_data

#: A coverage request is not a boundary: agents get this long to send their counters (a big build's are MBs).
FETCH_TIMEOUT_S = 30.0
REGISTRATION_LIMIT = 64 * 1024
FORMATS = ("text", "lcov")


def setup_coverage(app: web.Application) -> None:
    """Add the agent registry (`app[AGENTS]`), its background tasks and the routes in the module docstring."""
    app[AGENTS] = Agents(app[SETTINGS], app[WRITER])
    app.cleanup_ctx.append(_agents_ctx)
    app.router.add_post("/v1/runs/{run}/agents", register, name="agents_register")
    app.router.add_get("/v1/runs/{run}/agents", list_agents, name="agents_list")
    app.router.add_delete("/v1/runs/{run}/agents/{process}", goodbye, name="agents_goodbye")
    app.router.add_post("/v1/runs/{run}/agents/{process}/data", python_data, name="agents_data")
    app.router.add_post("/v1/runs/{run}/snapshots", snapshot, name="snapshots")
    app.router.add_get("/v1/runs/{run}/coverage", coverage, name="coverage")
    app.router.add_post("/v1/runs/{run}/clear", clear, name="clear")


async def _agents_ctx(app: web.Application) -> AsyncIterator[None]:
    # After the writer's context (appended before this one): the registry needs the writer running.
    await app[AGENTS].start()
    yield
    await app[AGENTS].close()


def _run(request: web.Request) -> str:
    return check_run_name(request.match_info["run"])


async def register(request: web.Request) -> web.Response:
    """POST /v1/runs/{run}/agents: add or replace an agent."""
    _authorize(request, request.app[INGEST_TOKEN])
    run = _run(request)
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=f"content type {request.content_type!r} is not application/json")
    try:
        document = orjson.loads(await read_body(request, REGISTRATION_LIMIT))
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the registration is not JSON: {exc}") from None
    agent = await request.app[AGENTS].register(run, document)
    return _json({"run": run, "process": agent.process, "registered": format_time(agent.registered_us)})


async def list_agents(request: web.Request) -> web.Response:
    """GET /v1/runs/{run}/agents: every agent the run has had, with health and the last snapshot stored."""
    _authorize(request, request.app[QUERY_TOKEN])
    run = _run(request)
    agents = request.app[AGENTS]
    path = request.app[SETTINGS].db

    def last_snapshots() -> dict[str, tuple[int, int | None, str | None]]:
        db = open_store_readonly(path)
        try:
            rows = db.conn.execute(
                "SELECT process, at_us, taken_us, missing FROM cover_snapshots AS s WHERE run = ? AND at_us = "
                "(SELECT MAX(at_us) FROM cover_snapshots WHERE run = s.run AND process = s.process)",
                (run,),
            )
            return {process: (at_us, taken_us, missing) for process, at_us, taken_us, missing in rows}
        finally:
            db.conn.close()

    last = await asyncio.get_running_loop().run_in_executor(None, last_snapshots)
    described = []
    for agent in agents.of_run(run):
        entry = agent.describe()
        if agent.process in last:
            at_us, taken_us, missing = last[agent.process]
            entry["last_snapshot"] = {
                "time": format_time(at_us),
                "taken": None if taken_us is None else format_time(taken_us),
                "missing": missing,
            }
        described.append(entry)
    return _json({"run": run, "agents": described})


def _agent(request: web.Request) -> Agent:
    run, process = _run(request), request.match_info["process"]
    agent = request.app[AGENTS].agents.get((run, process))
    if agent is None:
        raise web.HTTPNotFound(text=f"run {run!r} has no coverage agent {process!r}")
    return agent


async def goodbye(request: web.Request) -> web.Response:
    """DELETE /v1/runs/{run}/agents/{process}: the agent is gone (marked; its snapshots stay)."""
    _authorize(request, request.app[INGEST_TOKEN])
    agent = _agent(request)
    await request.app[AGENTS].mark_gone(agent.run, agent.process, "said goodbye")
    return _json({"run": agent.run, "process": agent.process, "gone": format_time(agent.gone_us)})


async def python_data(request: web.Request) -> web.Response:
    """POST /v1/runs/{run}/agents/{process}/data: a coverage.py data file, stored as per-test Python lines."""
    _authorize(request, request.app[INGEST_TOKEN])
    run, process = _run(request), request.match_info["process"]
    if request.content_type != DATA_TYPE:
        raise web.HTTPUnsupportedMediaType(text=f"content type {request.content_type!r} is not {DATA_TYPE}")
    data = await read_body(request, request.app[SETTINGS].body_limit)
    stored = await store_python_data(request.app[WRITER], run=run, process=process, data=data)
    return _json({"run": run, "process": process, **stored.as_dict()})


async def snapshot(request: web.Request) -> web.Response:
    """POST /v1/runs/{run}/snapshots: a boundary now, with no test (e.g. after the last test)."""
    _authorize(request, request.app[INGEST_TOKEN])
    run = _run(request)
    at_us = now_us()
    taken = await request.app[AGENTS].boundary(run, at_us)
    return _json(
        {
            "run": run,
            "time": format_time(at_us),
            "agents": [{"process": item.agent.process, "missing": item.missing} for item in taken],
        }
    )


async def coverage(request: web.Request) -> web.Response:
    """GET /v1/runs/{run}/coverage: the run's coverage from its agents now (or one test's delta), text or lcov."""
    app = request.app
    _authorize(request, app[QUERY_TOKEN])
    run = _run(request)
    output = request.query.get("format", "text")
    if output not in FORMATS:
        raise web.HTTPBadRequest(text=f"format must be one of {', '.join(FORMATS)}, not {output[:32]!r}")
    test = request.query.get("test")
    loop = asyncio.get_running_loop()
    headers: dict[str, str] = {}
    if test is not None:
        profile, problems = await loop.run_in_executor(None, _test_delta, app[SETTINGS].db, run, test)
        if problems:
            headers["Auditcov-Incomplete"] = "; ".join(problems)[:4000]
    else:
        profile, missing = await _live_profile(app, run)
        if missing:
            headers["Auditcov-Missing"] = "; ".join(f"{process}: {reason}" for process, reason in missing)[:4000]
    text = await loop.run_in_executor(None, _render, profile, output, test)
    return web.Response(text=text, content_type="text/plain", headers=headers)


def _render(profile: Profile, output: str, test: str | None) -> str:
    if output == "lcov":
        return lcov_report(profile, test)
    out = io.StringIO()
    gotext.write_text(profile, out)
    return out.getvalue()


def _test_delta(path: str, run: str, test: str) -> tuple[Profile, list[str]]:
    db = open_store_readonly(path)
    try:
        results = per_test_coverage(db, run, test=test)
    finally:
        db.conn.close()
    if not results:
        raise web.HTTPNotFound(text=f"run {run!r} has no test {test!r} (no window and no Python lines)")
    return results[0].profile, results[0].problems


async def _live_profile(app: web.Application, run: str) -> tuple[Profile, list[tuple[str, str]]]:
    """Every live agent's coverage now, merged, with the run's stored Python lines; and who gave nothing."""
    agents = app[AGENTS]
    live = agents.live_runs.get(run, [])
    fetched = await asyncio.gather(*(_fetch_coverage(app, agent) for agent in live), return_exceptions=True)
    profiles, missing = [], []
    for agent, result in zip(live, fetched, strict=True):
        if isinstance(result, AGENT_FAILURES):
            missing.append((agent.process, failure_reason(result, FETCH_TIMEOUT_S)))
        elif isinstance(result, BaseException):
            raise result
        elif result is not None:
            profiles.append(result)

    def merge() -> Profile:
        modes = {profile.mode for profile in profiles}
        merged = Profile(modes.pop() if len(modes) == 1 else "count")
        for profile in profiles:
            blocks = list(profile.statements)
            merged.add_all(blocks, list(profile.statements.values()), list(map(profile.counts.__getitem__, blocks)))
            merged.packages.update(profile.packages)
        db = open_store_readonly(app[SETTINGS].db)
        try:
            python = snapshots.load_python_lines(db, run)
        finally:
            db.conn.close()
        if python and merged.mode == "set":
            merged.mode = "count"
        for lines in python.values():
            add_python_lines(merged, lines)
        return merged

    return await asyncio.get_running_loop().run_in_executor(None, merge), missing


async def _fetch_coverage(app: web.Application, agent: Agent) -> Profile | None:
    """One agent's coverage now: a Go agent's counters decoded, a profile file read; a Python agent's data is
    stored (its lines join through the store) and gives None."""
    agents, loop = app[AGENTS], asyncio.get_running_loop()
    where = f"agent {agent.process!r} of run {agent.run!r}"
    async with asyncio.timeout(FETCH_TIMEOUT_S):
        if agent.kind == "profile":
            profile, _ = await loop.run_in_executor(None, read_settled, agent.address, gotext.parse_text)
            return profile
        if agent.kind == "python":
            data = await agents.call(agent, "GET", "/v1/data")
            await store_python_data(app[WRITER], run=agent.run, process=agent.process, data=data)
            return None
        counters, meta = await asyncio.gather(
            agents.call(agent, "GET", "/v1/counters"), agents.call(agent, "GET", "/v1/meta")
        )
    return await loop.run_in_executor(None, lambda: decode_agent_coverage(meta, counters, where=where))


async def clear(request: web.Request) -> web.Response:
    """POST /v1/runs/{run}/clear[?process=P]: clear the live agents' counters (`runtime/coverage.ClearCounters`,
    coverage.py's erase). Deltas across a clear are reported as counters that went down, not as coverage."""
    app = request.app
    _authorize(request, app[INGEST_TOKEN])
    run = _run(request)
    process = request.query.get("process")
    live = app[AGENTS].live_runs.get(run, [])
    if process is not None:
        live = [agent for agent in live if agent.process == process]
        if not live:
            raise web.HTTPNotFound(text=f"run {run!r} has no live coverage agent {process!r}")

    async def one(agent: Agent) -> str | None:
        if agent.kind == "profile":
            return "a profile file has no counters to clear (restart its process)"
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                await app[AGENTS].call(agent, "POST", "/v1/clear")
        except AGENT_FAILURES as exc:
            return failure_reason(exc, FETCH_TIMEOUT_S)
        return None

    reasons = await asyncio.gather(*(one(agent) for agent in live))
    failed = {agent.process: reason for agent, reason in zip(live, reasons, strict=True) if reason is not None}
    cleared = [agent.process for agent, reason in zip(live, reasons, strict=True) if reason is None]
    return _json({"run": run, "cleared": cleared, "failed": failed}, status=200 if not failed else 502)
