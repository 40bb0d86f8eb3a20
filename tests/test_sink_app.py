"""The sink over HTTP on loopback (a real aiohttp server, a real SQLite file): answers, idempotency, errors."""

from __future__ import annotations

import asyncio
import sqlite3

import orjson
import pytest
from sink_support import CONTROLLER_AGENT, FIXTURES, e2e_event, event, event_list

from auditcov.merge.store import open_store_readonly
from auditcov.sink.app import init_app
from auditcov.sink.settings import Settings

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(db=str(tmp_path / "sink.db"), body_limit=64 * 1024)


@pytest.fixture
async def client(aiohttp_client, settings):
    return await aiohttp_client(init_app(settings))


def rows(settings: Settings, sql: str) -> list[tuple]:
    db = open_store_readonly(settings.db)
    try:
        return db.conn.execute(sql).fetchall()
    finally:
        db.conn.close()


async def post(client, path: str, body: bytes, headers: dict | None = None):
    response = await client.post(path, data=body, headers=headers or JSON)
    return response.status, await response.json()


async def test_same_batch_posted_twice_is_stored_once(client, settings):
    body = event_list([event("a"), event("b"), event("c")])
    # client-go appends ?timeout=30s: the route is the path alone.
    assert await post(client, "/v1/audit/e2e-1?timeout=30s", body) == (
        200,
        {"accepted": 3, "duplicates": 0, "quarantined": 0},
    )
    assert await post(client, "/v1/audit/e2e-1?timeout=30s", body) == (
        200,
        {"accepted": 0, "duplicates": 3, "quarantined": 0},
    )
    assert rows(settings, "SELECT run, count(*) FROM events GROUP BY run") == [("e2e-1", 3)]
    response = await client.get("/v1/stats", params={"run": "e2e-1"})
    stats = await response.json()
    assert (stats["events"], stats["duplicates"], stats["quarantined"], stats["runs"], stats["tests"]) == (
        3,
        3,
        0,
        1,
        1,
    )


async def test_mixed_good_and_bad_batch_stores_the_good_and_quarantines_the_bad(client, settings):
    items = [event("good-1"), {"auditID": "x"}, event("bad", stage=7), event("good-2"), "junk"]
    assert await post(client, "/v1/audit", event_list(items)) == (
        200,
        {"accepted": 2, "duplicates": 0, "quarantined": 3},
    )
    assert rows(settings, "SELECT run, audit_id FROM events ORDER BY audit_id") == [
        ("default", "good-1"),
        ("default", "good-2"),
    ]
    # Each reason names the item and where it begins in the body.
    assert rows(settings, "SELECT reason FROM quarantine ORDER BY id") == [
        ("item 2 (byte 928): stage is missing",),
        ("item 3 (byte 944): stage must be a string, not int",),
        ("item 5 (byte 2632): an event must be a JSON object, not str",),
    ]


async def test_every_body_shape_is_accepted(client):
    demo = (FIXTURES / "audit/audit2rbac/demo.log").read_bytes()
    assert (await post(client, "/v1/audit/lines", demo, {"Content-Type": "application/x-ndjson"}))[1]["accepted"] == 37
    assert (await post(client, "/v1/audit/one", orjson.dumps(e2e_event())))[1]["accepted"] == 1
    assert (await post(client, "/v1/audit/array", orjson.dumps([event("a"), event("b")])))[1]["accepted"] == 2
    beta = event_list([event("c")], "audit.k8s.io/v1beta1")
    assert (await post(client, "/v1/audit/beta", beta))[1]["accepted"] == 1
    falco = (FIXTURES / "audit/falco/create_configmap.json").read_bytes()
    assert (await post(client, "/v1/audit/falco", falco))[1]["accepted"] == 1


async def test_errors_415_413_405_400(client, settings):
    body = event_list([event("a")])
    status, answer = await post(client, "/v1/audit", body, {"Content-Type": "text/plain"})
    assert status == 415
    assert "text/plain" in answer["error"]
    status, answer = await post(client, "/v1/audit", b"[" + b"1," * 40000 + b"1]")
    assert status == 413
    assert "limit is 65536" in answer["error"]
    response = await client.get("/v1/audit")
    assert response.status == 405
    assert response.headers["Allow"] == "POST"
    assert "GET is not allowed" in (await response.json())["error"]
    assert (await client.put("/v1/audit/r", data=body, headers=JSON)).status == 405
    status, answer = await post(client, "/v1/audit", b'{"kind": "Pod"}')
    assert (status, answer) == (400, {"error": "kind 'Pod' is not EventList or Event"})
    status, answer = await post(client, "/v1/audit", b"")
    assert (status, answer) == (400, {"error": "the body is empty"})
    status, answer = await post(client, "/v1/audit/..", body)
    assert status in (400, 404)
    status, answer = await post(client, "/v1/audit/bad%20name", body)
    assert status == 400
    assert "run name" in answer["error"]
    assert rows(settings, "SELECT count(*) FROM events") == [(0,)]


async def test_413_for_a_streamed_body_without_length_before_reading_it_all(client):
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(1000):  # 8 MB if it were all read; the limit is 64 KB
            sent += 8192
            yield b" " * 8192
            await asyncio.sleep(0)

    response = await client.post("/v1/audit", data=chunks(), headers=JSON)
    assert response.status == 413
    assert sent < 8 * 1024 * 1024


async def test_bearer_tokens_for_ingest_and_queries(aiohttp_client, tmp_path):
    (tmp_path / "ingest").write_text("ingest-secret\n")
    (tmp_path / "query").write_text("query-secret")
    settings = Settings(
        db=str(tmp_path / "t.db"),
        ingest_token_file=str(tmp_path / "ingest"),
        query_token_file=str(tmp_path / "query"),
    )
    client = await aiohttp_client(init_app(settings))
    body = event_list([event("a")])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer query-secret"}):
        status, answer = await post(client, "/v1/audit", body, {**JSON, **headers})
        assert status == 401
        assert "bearer token" in answer["error"]
    status, answer = await post(client, "/v1/audit", body, {**JSON, "Authorization": "Bearer ingest-secret"})
    assert (status, answer["accepted"]) == (200, 1)
    marker = orjson.dumps({"test": "t", "event": "start"})
    assert (await client.post("/v1/runs/r/markers", data=marker, headers=JSON)).status == 401
    assert (await client.get("/v1/stats", headers={"Authorization": "Bearer ingest-secret"})).status == 401
    response = await client.get("/v1/stats", headers={"Authorization": "Bearer query-secret"})
    assert (await response.json())["events"] == 1
    assert (await client.get("/healthz")).status == 200


async def test_the_real_e2e_user_agent_is_attributed_to_its_test(client, settings):
    line = (FIXTURES / "audit/apisnoop/e2e-event-grep-output.txt").read_text()
    _, _, json_text = line.partition(".log:")  # grep output: `<file>:` then the event
    await post(client, "/v1/audit/ci", json_text.encode())
    assert rows(settings, "SELECT client, attributed_test, attribution FROM attributed_events") == [
        (
            "e2e.test",
            "[sig-storage] Secrets should be consumable from pods in volume [NodeConformance] [Conformance]",
            "direct",
        )
    ]
    assert rows(settings, "SELECT conformance FROM tests") == [(1,)]


async def test_namespace_ownership_over_http(client, settings):
    test = e2e_event()["userAgent"].partition(" -- ")[2]
    create = event(
        "create",
        verb="create",
        objectRef={"resource": "namespaces", "namespace": None, "name": "secrets-9999"},
        responseStatus={"code": 201},
    )
    scheduler = event(
        "bind",
        userAgent="kube-scheduler/v1.36.0 (linux/amd64) kubernetes/abc/scheduler",
        objectRef={"namespace": "secrets-9999", "resource": "pods", "subresource": "binding"},
    )
    controller = event("sa", userAgent=CONTROLLER_AGENT, objectRef={"namespace": "secrets-9999"})
    await post(client, "/v1/audit/ns", event_list([scheduler]))
    await post(client, "/v1/audit/ns", event_list([create, controller]))
    assert rows(
        settings, "SELECT audit_id, client, attributed_test, attribution FROM attributed_events ORDER BY id"
    ) == [
        ("bind", "kube-scheduler", test, "namespace"),
        ("create", "e2e.test", test, "direct"),
        ("sa", "kube-controller-manager", test, "namespace"),
    ]


async def test_markers_with_late_out_of_order_batches(client, settings):
    def untested(audit_id: str, moment: str) -> dict:
        return event(
            audit_id, userAgent="kubectl/v1.36.0", objectRef={"namespace": None}, requestReceivedTimestamp=moment
        )

    marks = [
        ("first", "start", "2026-11-25T10:00:00Z"),
        ("first", "end", "2026-11-25T10:00:10Z"),
        ("second", "start", "2026-11-25T10:00:10.5Z"),
    ]
    # A batch from the second test arrives before any marker, the first test's batch after all of them.
    await post(client, "/v1/audit/m", event_list([untested("late-2", "2026-11-25T10:00:12.000001Z")]))
    for test, kind, moment in marks:
        status, answer = await post(
            client, "/v1/runs/m/markers", orjson.dumps({"test": test, "event": kind, "time": moment})
        )
        assert status == 200
        assert answer["event"] == kind
    await post(client, "/v1/audit/m", event_list([untested("late-1", "2026-11-25T10:00:05.5Z")]))
    await post(client, "/v1/audit/m", event_list([untested("gap", "2026-11-25T10:00:10.25Z")]))
    assert rows(settings, "SELECT audit_id, attributed_test, attribution FROM attributed_events ORDER BY id") == [
        ("late-2", "second", "window"),
        ("late-1", "first", "window"),
        ("gap", None, None),
    ]
    status, answer = await post(client, "/v1/runs/m/markers", orjson.dumps({"test": "x", "event": "pause"}))
    assert status == 400
    assert "start" in answer["error"]
    status, answer = await post(
        client, "/v1/runs/m/markers", orjson.dumps({"test": "x", "event": "end", "time": "soon"})
    )
    assert (status, answer) == (400, {"error": "marker time must be an RFC 3339 time, not 'soon'"})
    status, answer = await post(client, "/v1/runs/m/markers", orjson.dumps({"test": "now", "event": "start"}))
    assert status == 200
    assert answer["time"].endswith("Z")
    # Spaces, tabs and line ends are cut from a test's name (as /openapi.json says), and nothing else.
    status, answer = await post(client, "/v1/runs/m/markers", orjson.dumps({"test": " \t\r\n", "event": "start"}))
    assert (status, answer) == (400, {"error": "marker test must be a string with something besides spaces in it"})
    status, answer = await post(client, "/v1/runs/m/markers", orjson.dumps({"test": " \x1c ", "event": "start"}))
    assert status == 200 and answer["test"] == "\x1c"


async def test_health_readiness_and_metrics(client):
    assert await (await client.get("/healthz")).text() == "ok\n"
    assert (await client.get("/readyz")).status == 200
    await post(client, "/v1/audit/met", event_list([event("a"), event("a"), {"x": 1}]))
    await post(client, "/v1/audit/met", b"nope", {"Content-Type": "text/plain"})
    text = await (await client.get("/metrics")).text()
    for sample in (
        'auditcov_events_received_total{run="met"} 3.0',
        'auditcov_events_stored_total{run="met"} 1.0',
        'auditcov_events_duplicate_total{run="met"} 1.0',
        'auditcov_events_quarantined_total{run="met"} 1.0',
        'auditcov_batches_total{code="200"} 1.0',
        'auditcov_batches_total{code="415"} 1.0',
        "auditcov_batch_seconds_count 1.0",
    ):
        assert sample in text
    assert "auditcov_body_bytes_total" in text


async def test_readyz_fails_when_the_store_is_not_writable(aiohttp_client, tmp_path):
    settings = Settings(db=str(tmp_path / "ro.db"))
    client = await aiohttp_client(init_app(settings))
    blocker = sqlite3.connect(settings.db)
    blocker.execute("PRAGMA busy_timeout = 0")
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the readiness timeout
    try:
        response = await client.get("/readyz")
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status == 503
    assert "not writable" in (await response.json())["error"]
