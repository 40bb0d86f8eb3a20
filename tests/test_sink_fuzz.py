"""The whole decode path under random input (hypothesis): real fixture events mutated at random, and raw bytes,
POSTed over HTTP to a real sink (a thread of its own) with a real store.

Every body gets a 2xx or a 4xx, never a 5xx or a crash; in a 200 every item is counted once (accepted,
duplicate or quarantined), every item that is a valid event is stored and every other one quarantined; the same
body twice stores nothing twice. The example counts keep the suite fast; run more by hand with
`AUDITCOV_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/test_sink_fuzz.py`.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import os
import threading

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_decode import fixture_events

from auditcov.merge.errors import BadEventError
from auditcov.merge.events import event_from_json
from auditcov.merge.store import open_store_readonly
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

EXAMPLES = int(os.environ.get("AUDITCOV_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
EVENTS = fixture_events()
RUNS = itertools.count()


class ThreadedSink:
    """A sink on its own event loop in a thread, for synchronous (hypothesis) tests; a keep-alive client."""

    def __init__(self, settings: Settings):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.sink = asyncio.run_coroutine_threadsafe(start_sink(settings), self.loop).result(30)
        host, port = self.sink.url.removeprefix("http://").rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def post(self, run: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
        self.connection.request("POST", f"/v1/audit/{run}", body=body, headers={"Content-Type": content_type})
        response = self.connection.getresponse()
        return response.status, orjson.loads(response.read())

    def close(self) -> None:
        self.connection.close()
        asyncio.run_coroutine_threadsafe(self.sink.stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    running = ThreadedSink(Settings(db=str(db), listen="127.0.0.1:0"))
    running.db = str(db)
    yield running
    running.close()


def stored(db: str, run: str) -> tuple[set[str], int]:
    store = open_store_readonly(db)
    try:
        ids = {
            row[0] for row in store.conn.execute("SELECT audit_id || '/' || stage FROM events WHERE run = ?", (run,))
        }
        quarantined = store.conn.execute("SELECT count(*) FROM quarantine WHERE run = ?", (run,)).fetchone()[0]
        return ids, quarantined
    finally:
        store.conn.close()


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_fields = st.sampled_from(
    ["auditID", "stage", "verb", "requestURI", "userAgent", "user", "sourceIPs", "objectRef", "responseStatus",
     "annotations", "requestReceivedTimestamp", "stageTimestamp", "timestamp", "requestObject", "kind"]
)  # fmt: skip


@st.composite
def mutated_events(draw) -> dict:
    """A real fixture event, a few of its fields replaced by any JSON value, deleted, or nested deep."""
    item = dict(draw(st.sampled_from(EVENTS)))
    item["auditID"] = f"fuzz-{draw(st.integers(0, 10**9))}"
    for field in draw(st.lists(_fields, max_size=3)):
        action = draw(st.sampled_from(["replace", "delete", "nest"]))
        if action == "replace":
            item[field] = draw(_json_values)
        elif action == "delete":
            item.pop(field, None)
        else:
            value: object = item.get(field)
            for _ in range(draw(st.integers(1, 300))):
                value = [value]
            item[field] = value
    return item


def _encode(item: dict) -> bytes | None:
    try:
        return orjson.dumps(item)
    except orjson.JSONEncodeError:  # nested past orjson's 255 levels: the standard library writes it
        import json

        return json.dumps(item).encode()


#: Members of an event that auditcov never decodes (kept raw, or not read at all): any value is fine there.
_UNREAD = ("requestObject", "kind", "apiVersion", "metadata", "level", "responseObject", "impersonatedUser")


def _valid(item: dict) -> bool:
    """The oracle: the item-by-item check of decoded JSON (`event_from_json`), which re-encodes the item, so the
    members it never reads are set aside first (re-encoding stops at 255 levels)."""
    try:
        event_from_json({key: None if key in _UNREAD else value for key, value in item.items()})
    except BadEventError:
        return False
    return True


@FUZZ
@given(st.lists(mutated_events(), min_size=1, max_size=6), st.sampled_from(["EventList", "array", "lines"]))
def test_mutated_fixture_events(sink, items, shape):
    run = f"fuzz-{next(RUNS)}"
    encoded = [_encode(item) for item in items]
    if shape == "EventList":
        body = b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(encoded) + b"]}"
    elif shape == "array":
        body = b"[" + b",".join(encoded) + b"]"
    else:
        body = b"\n".join(encoded)
    status, answer = sink.post(run, body, "application/json" if shape != "lines" else "application/x-ndjson")
    if shape == "lines" and len(items) == 1:
        assert status in (200, 400), answer  # one line is a single document: an object that is no event shape
        if status == 400:
            return
    assert status == 200, answer
    assert answer["accepted"] + answer["duplicates"] + answer["quarantined"] == len(items)
    ids, quarantined = stored(sink.db, run)
    valid = {(item["auditID"], item["stage"]) for item in items if _valid(item)}
    assert {f"{audit_id}/{stage}" for audit_id, stage in valid} == ids
    assert answer["quarantined"] == sum(not _valid(item) for item in items)
    again_status, again = sink.post(run, body, "application/json" if shape != "lines" else "application/x-ndjson")
    assert (again_status, again["accepted"]) == (200, 0)
    assert stored(sink.db, run) == (ids, quarantined)


@st.composite
def broken_bodies(draw) -> bytes:
    """Raw bytes: random, or a real EventList with bytes flipped, inserted (invalid UTF-8, brackets) or cut."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    items = [orjson.dumps({**item, "auditID": f"raw-{n}"}) for n, item in enumerate(draw(st.lists(
        st.sampled_from(EVENTS), min_size=1, max_size=4)))]  # fmt: skip
    body = bytearray(b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[' + b",".join(items) + b"]}")
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["flip", "insert", "cut", "deep"]))
        if action == "flip" and at < len(body):
            body[at] = draw(st.integers(0, 255))
        elif action == "insert":
            body[at:at] = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"[", b"]", b"{", b"}", b",",
                                                b'"', b"\\", b"\\ud800", b"\n"]))  # fmt: skip
        elif action == "cut":
            del body[at:]
        else:
            body[at:at] = b"[" * 2000 + b"]" * 2000
    return bytes(body)


@FUZZ
@given(broken_bodies())
def test_raw_bytes(sink, body):
    run = f"raw-{next(RUNS)}"
    status, answer = sink.post(run, body)
    assert 200 <= status < 500, answer
    if status != 200:
        assert "error" in answer
        return
    ids, quarantined = stored(sink.db, run)
    assert len(ids) == answer["accepted"]
    assert quarantined <= answer["quarantined"]  # the same bad item twice in one body is kept once
    again_status, again = sink.post(run, body)
    assert (again_status, again["accepted"], again["duplicates"]) == (200, 0, answer["accepted"] + answer["duplicates"])
    assert stored(sink.db, run) == (ids, quarantined)
