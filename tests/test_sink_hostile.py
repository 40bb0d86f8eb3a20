"""The sink under hostile and broken input, stalled clients and failing stores (issue #11): a real server on
loopback (`start_sink`), real SQLite files, a real second process holding the store's lock, a real full disk (a
tmpfs of the test's own). Every bad item is quarantined beside the good ones; every fault gets an answer the
apiserver retries (5xx), never a 2xx for what was not stored; the sink stays up."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
from sink_support import FIXTURES, event, event_list

from auditcov.merge.store import open_store_readonly
from auditcov.sink.connections import connection_limit
from auditcov.sink.ingest import without_bodies
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

JSON = {"Content-Type": "application/json"}
GOOD = orjson.dumps(event("good-1")), orjson.dumps(event("good-2"))


def body_of(*items: bytes) -> bytes:
    """An EventList of items given as their bytes (which may be anything)."""
    return b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":[' + b",".join(items) + b"]}"


def with_member(name: str, value: bytes, audit_id: str = "bad") -> bytes:
    return orjson.dumps(event(audit_id))[:-1] + f',"{name}":'.encode() + value + b"}"


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def rows(db: str, sql: str) -> list[tuple]:
    store = open_store_readonly(db)
    try:
        return store.conn.execute(sql).fetchall()
    finally:
        store.conn.close()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(db=str(tmp_path / "hostile.db"), listen="127.0.0.1:0")


@pytest.fixture
async def sink(settings):
    running = await start_sink(settings)
    yield running
    await running.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as client:
        yield client


async def post(session, url: str, body: bytes) -> tuple[int, dict, dict]:
    async with session.post(f"{url}/v1/audit/r", data=body, headers=JSON) as response:
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("requestObject", nested(1000)),  # the apiserver's Go encoder allows 10,000 levels
        ("requestObject", nested(10_000)),
        ("requestObject", b'{"a":' * 1500 + b"1" + b"}" * 1500),
        ("annotations", b'{"a":' + nested(250) + b"}"),
        ("annotations", b'{"a":' + nested(260) + b"}"),
        ("annotations", b'{"a":' + nested(1000) + b"}"),
        ("annotations", b'{"a":' + nested(1100) + b"}"),
    ],
    ids=["request-1000", "request-10000", "request-objects-1500", "annotation-250", "annotation-260",
         "annotation-1000", "annotation-1100"],
)  # fmt: skip
async def test_a_deeply_nested_item_is_quarantined_and_the_rest_stored(sink, session, settings, name, value):
    bad = with_member(name, value)
    status, answer, _ = await post(session, sink.url, body_of(GOOD[0], bad, GOOD[1]))
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "quarantined": 1})
    assert rows(settings.db, "SELECT audit_id FROM events ORDER BY audit_id") == [("good-1",), ("good-2",)]
    [(reason, digest)] = rows(settings.db, "SELECT reason, digest FROM quarantine")
    assert reason.startswith("item 2 (byte ")
    assert "nested deeper" in reason or "annotations[...] must be a string" in reason
    assert digest == hashlib.sha256(bad).hexdigest()


async def test_a_deep_body_that_decodes_is_stored(sink, session, settings):
    # 250 levels is well within what the decoder reads: a valid event, stored (its body is not kept).
    status, answer, _ = await post(session, sink.url, body_of(with_member("requestObject", nested(250), "deep")))
    assert (status, answer["accepted"]) == (200, 1)


async def test_invalid_utf8_in_one_item_quarantines_it_byte_for_byte(sink, session, settings):
    bad = orjson.dumps(event("latin"))
    bad = bad.replace(b'"verb":"', b'"verb":"caf\xe9 \xff', 1)
    body = body_of(GOOD[0], bad, GOOD[1])
    status, answer, _ = await post(session, sink.url, body)
    assert (status, answer) == (200, {"accepted": 2, "duplicates": 0, "quarantined": 1})
    [(reason, raw, encoding, digest)] = rows(settings.db, "SELECT reason, raw, raw_encoding, digest FROM quarantine")
    in_item, in_body = bad.index(b"\xe9"), body.index(b"\xe9")
    assert reason == f"item 2 is not valid UTF-8: byte {in_item} of the item (byte {in_body} of the body) is e9"
    assert (encoding, base64.b64decode(raw), digest) == ("base64", bad, hashlib.sha256(bad).hexdigest())
    # The same body again stores nothing twice.
    assert (await post(session, sink.url, body))[1] == {"accepted": 0, "duplicates": 2, "quarantined": 1}
    assert rows(settings.db, "SELECT count(*) FROM quarantine") == [(1,)]


async def test_invalid_utf8_in_a_skipped_value_and_in_json_lines(sink, session, settings):
    # msgspec does not check the UTF-8 of values it skips; the fast path must not take such a body.
    in_body = with_member("requestObject", b'{"data":"\xc3\x28"}', "in-body")
    lines = GOOD[0] + b"\n" + orjson.dumps(event("line-2"))[:-1] + b',"x":"\xff"}\n' + GOOD[1] + b"\n"
    status, answer, _ = await post(session, sink.url, body_of(in_body, GOOD[0]))
    assert (status, answer["accepted"], answer["quarantined"]) == (200, 1, 1)
    async with session.post(
        f"{sink.url}/v1/audit/lines", data=lines, headers={"Content-Type": "application/x-ndjson"}
    ) as response:
        assert (response.status, (await response.json())["quarantined"]) == (200, 1)
    reasons = [reason for (reason,) in rows(settings.db, "SELECT reason FROM quarantine ORDER BY id")]
    assert reasons[0].startswith("item 1 is not valid UTF-8")
    assert reasons[1].startswith("line 2 is not valid UTF-8")


async def test_broken_items_beside_good_ones(sink, session, settings):
    body = body_of(GOOD[0], b'{"auditID": "x", }', b"[1, 2", b"]", GOOD[1])  # a trailing comma, a split array
    status, answer, _ = await post(session, sink.url, body)
    assert status == 200
    assert answer["accepted"] == 2
    status, answer, _ = await post(session, sink.url, body_of(GOOD[0]) + b"}")
    assert status == 400
    assert "not JSON" in answer["error"]


SECRET = "hunter2-do-not-store"


async def test_without_keep_bodies_no_body_reaches_the_store_or_the_log(sink, session, settings, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    secret = {"kind": "Secret", "data": {"password": SECRET}}
    items = [
        orjson.dumps(event("valid", requestObject=secret, responseObject=secret)),
        orjson.dumps(event("bad-stage", stage="Finished", requestObject=secret)),  # quarantined
        orjson.dumps(event("latin", responseObject=secret)).replace(b'"verb":"', b'"verb":"\xff', 1),
        with_member("requestObject", b'{"p":"' + SECRET.encode() + b'","d":' + nested(2000) + b"}", "deep"),
        orjson.dumps(event("escaped"))[:-1] + b',"request\\u004fbject":{"p":"' + SECRET.encode() + b'"},"x":[1,,2]}',
    ]
    status, answer, _ = await post(session, sink.url, body_of(*items))
    assert (status, answer["accepted"], answer["quarantined"]) == (200, 1, 4)
    lines = b'{"auditID":"t","requestObject":{"p":"' + SECRET.encode() + b'"\n' + GOOD[0]
    async with session.post(f"{sink.url}/v1/audit/r", data=lines, headers=JSON) as response:
        assert (await response.json())["quarantined"] == 1
    await sink.stop()  # checkpoints: everything is in the database file
    for path in Path(settings.db).parent.glob("hostile.db*"):
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    raws = rows(settings.db, "SELECT raw_encoding, raw, reason FROM quarantine")
    assert all("keep_bodies is off" in reason for _, _, reason in raws)
    assert all(
        SECRET.encode() not in (base64.b64decode(raw) if enc == "base64" else raw.encode()) for enc, raw, _ in raws
    )


@pytest.mark.parametrize(
    ("item", "kept"),
    [
        (b'{"a": "\\u0041", "requestObject": {"p": 1}}', b'{"a": "\\u0041"}'),
        (b'["\\u0041"', b'["\\u0041"'),  # broken, with an escape but no body: kept whole
        (b'{"x": 1, "responseObject": [1', b'{"x": 1, '),  # broken: cut where the body begins
        (b'"requestObject"', b""),
    ],
)
def test_without_bodies(item, kept):
    assert without_bodies(item)[0] == kept


async def test_nothing_stalled_stays_open(tmp_path, session):
    settings = Settings(
        db=str(tmp_path / "t.db"), listen="127.0.0.1:0", header_timeout=0.5, body_timeout=0.5, idle_timeout=1.0
    )
    sink = await start_sink(settings)
    try:
        host, port = sink.url.removeprefix("http://").rsplit(":", 1)
        head = b"POST /v1/audit/r HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
        cases = {
            "nothing at all": b"",
            "partial headers": head,
            "partial body": head + b"\r\n" + b'{"kind":"EventList","items":[',
        }
        started = time.monotonic()
        streams = {name: await asyncio.open_connection(host, int(port)) for name in cases}
        for name, (_, writer) in streams.items():
            writer.write(cases[name])
        answers = {name: await asyncio.wait_for(reader.read(), 10) for name, (reader, _) in streams.items()}
        assert time.monotonic() - started < 5
        assert answers["nothing at all"] == answers["partial headers"] == b""  # closed
        assert answers["partial body"].startswith(b"HTTP/1.1 408 ")
        # A keep-alive connection left idle is closed after idle_timeout.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: s\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"ok\n")
        for _, writer in streams.values():
            writer.close()
    finally:
        await sink.stop()


async def test_a_slow_but_live_32_mib_body_succeeds(tmp_path, session):
    settings = Settings(db=str(tmp_path / "slow.db"), listen="127.0.0.1:0", header_timeout=0.5, body_timeout=1.0)
    sink = await start_sink(settings)
    events = [event(f"slow-{n}") for n in range(8)]
    body = event_list(events)
    body = body[:-2] + b" " * (32 * 1024 * 1024 - len(body) - 1) + body[-2:] + b"\n"  # padded with whitespace
    assert len(body) == 32 * 1024 * 1024

    async def slowly():
        # 16 MiB/s in 64 KiB steps, 2 s in all: longer than both timeouts, never silent for long.
        for at in range(0, len(body), 64 * 1024):
            yield body[at : at + 64 * 1024]
            await asyncio.sleep(0.004)

    try:
        started = time.monotonic()
        async with session.post(f"{sink.url}/v1/audit/slow", data=slowly(), headers=JSON) as response:
            assert (response.status, (await response.json())["accepted"]) == (200, 8)
        assert time.monotonic() - started > settings.body_timeout
    finally:
        await sink.stop()


async def test_hundreds_of_stalled_clients_never_keep_healthz_out(tmp_path, session):
    settings = Settings(db=str(tmp_path / "many.db"), listen="127.0.0.1:0", max_connections=100, header_timeout=60)
    sink = await start_sink(settings)
    host, port = sink.url.removeprefix("http://").rsplit(":", 1)
    stalled = []
    try:
        for number in range(300):
            _, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /v1/audit HTTP/1.1\r\nHost: s\r\n" if number % 2 else b"")
            stalled.append(writer)
            if number % 50 == 49:
                async with session.get(f"{sink.url}/healthz") as response:
                    assert response.status == 200
        async with session.post(f"{sink.url}/v1/audit/r", data=body_of(GOOD[0]), headers=JSON) as response:
            assert response.status == 200
    finally:
        for writer in stalled:
            writer.close()
        await sink.stop()


def test_the_connection_limit_stays_under_the_descriptor_limit():
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert connection_limit(1000) == 256 - 64
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert connection_limit(10) == 10


async def test_a_client_dropping_mid_body_is_one_log_line(sink, caplog):
    caplog.set_level(logging.INFO)
    host, port = sink.url.removeprefix("http://").rsplit(":", 1)
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        b"POST /v1/audit/r HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()
    await asyncio.sleep(0.3)
    dropped = [record for record in caplog.records if "ended before its body did" in record.getMessage()]
    assert len(dropped) == 1
    assert dropped[0].exc_info is None
    assert "POST /v1/audit/r from 127.0.0.1 ended before its body did (1 of 500 bytes received)" in dropped[0].message
    assert "Traceback" not in caplog.text


async def test_the_start_log_names_the_catalogue_in_batch_mode(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    settings = Settings(
        db=str(tmp_path / "c.db"), listen="127.0.0.1:0", openapi=str(FIXTURES / "openapi/swagger-v1.12.0.json.gz")
    )
    sink = await start_sink(settings)
    await sink.stop()
    assert any("endpoint catalogue from" in r.message and "operations" in r.message for r in caplog.records)
    caplog.clear()
    sink = await start_sink(Settings(db=str(tmp_path / "none.db"), listen="127.0.0.1:0"))
    await sink.stop()
    assert any("no endpoint catalogue" in r.message for r in caplog.records)


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (key, value) VALUES ('locker', 'x')")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


async def test_a_store_locked_by_another_process_answers_503_then_takes_the_batch(tmp_path, session):
    settings = Settings(db=str(tmp_path / "locked.db"), listen="127.0.0.1:0", lock_timeout=0.3)
    sink = await start_sink(settings)
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, settings.db], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert locker.stdout.readline() == "locked\n"
        body = body_of(*GOOD)
        status, answer, headers = await post(session, sink.url, body)
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert "SQLITE_BUSY" in answer["error"]
        async with session.get(f"{sink.url}/readyz") as response:
            assert response.status == 503
        async with session.get(f"{sink.url}/healthz") as response:
            assert response.status == 200
        locker.communicate("\n", timeout=10)
        assert (await post(session, sink.url, body))[:2] == (200, {"accepted": 2, "duplicates": 0, "quarantined": 0})
        async with session.get(f"{sink.url}/readyz") as response:
            assert response.status == 200
    finally:
        locker.kill()
        await sink.stop()
    assert rows(settings.db, "SELECT count(*) FROM events") == [(2,)]


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB filesystem of the test's own (tmpfs: needs root; skipped without)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_answers_503_writes_nothing_half_and_takes_the_batch_once_freed(small_disk, session):
    settings = Settings(db=str(small_disk / "full.db"), listen="127.0.0.1:0")
    sink = await start_sink(settings)
    try:
        assert (await post(session, sink.url, body_of(GOOD[0])))[0] == 200
        filler = small_disk / "filler"
        descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk to the last block
            while os.write(descriptor, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(descriptor)
        big = event_list([event(f"big-{n}", annotations={"pad": "x" * 2000}) for n in range(400)])
        status, answer, headers = await post(session, sink.url, big)
        assert (status, headers.get("Retry-After")) == (503, "5")
        assert "SQLITE_FULL" in answer["error"]
        async with session.get(f"{sink.url}/readyz") as response:
            assert response.status == 503
            assert "full" in (await response.json())["error"]
        async with session.get(f"{sink.url}/healthz") as response:
            assert response.status == 200
        assert rows(settings.db, "SELECT count(*) FROM events") == [(1,)]  # nothing of the batch
        filler.unlink()
        status, answer, _ = await post(session, sink.url, big)
        assert (status, answer["accepted"]) == (200, 400)
        async with session.get(f"{sink.url}/readyz") as response:
            assert response.status == 200
    finally:
        await sink.stop()
    assert rows(settings.db, "SELECT count(*) FROM events") == [(401,)]


async def test_a_batch_whose_transaction_fails_otherwise_gets_a_5xx_and_the_sink_serves_on(sink, session, settings):
    from auditcov.sink.app import WRITER

    # A real failure inside SQLite, in the middle of a batch: a trigger refusing one event.
    conn = __import__("sqlite3").connect(settings.db)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.audit_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
    )
    conn.commit()
    conn.close()
    status, answer, _ = await post(session, sink.url, event_list([event("ok-1"), event("poison"), event("ok-2")]))
    assert status == 500
    assert "refused by the test" in answer["error"]
    assert rows(settings.db, "SELECT count(*) FROM events") == [(0,)]
    # A job that would end the writer thread: its caller gets an error, the thread goes on.
    writer = sink.runner.app[WRITER]

    def fatal() -> None:
        raise SystemExit("a job that ends threads")

    with pytest.raises(RuntimeError, match="SystemExit"):
        await writer.submit(fatal)
    assert writer.alive
    assert (await post(session, sink.url, event_list([event("ok-1"), event("ok-2")])))[0] == 200
    async with session.get(f"{sink.url}/readyz") as response:
        assert response.status == 200


def test_auditcov_import_quarantines_items_nested_too_deep_to_write_again(tmp_path):
    # orjson writes at most 255 levels: an item deeper than that, read from a file, used to crash the import
    # when its quarantine row was written. Now it is quarantined like any bad item, beside the good one.
    deep = orjson.loads(nested(300))
    lines = [
        event("good-1"),
        {**event("deep-body"), "requestObject": deep},
        {**event("deep-note"), "annotations": {"a": deep}},
    ]
    audit_log = tmp_path / "deep.log"
    audit_log.write_text("".join(json.dumps(line) + "\n" for line in lines))  # orjson cannot write them either
    store = tmp_path / "store.db"
    done = subprocess.run(
        [Path(sys.executable).with_name("auditcov"), "import", f"--db={store}", "--run=deep", audit_log],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "1 events stored, 0 duplicates, 2 quarantined" in done.stdout
    db = open_store_readonly(store)
    reasons = [row[0] for row in db.conn.execute("SELECT reason FROM quarantine ORDER BY reason")]
    cut = " (stored without its requestObject/responseObject: keep_bodies is off)"
    reason = "the event cannot be written as JSON: Recursion limit reached"
    assert reasons == [f"{audit_log}:2: {reason}{cut}", f"{audit_log}:3: {reason}"]
