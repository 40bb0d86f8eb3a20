"""The ingest core on a real SQLite store: idempotency, quarantine, attribution (direct, namespace, window)."""

from __future__ import annotations

import orjson
import pytest
from sink_support import CONTROLLER_AGENT, e2e_event, event

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import AuditcovError
from auditcov.merge.events import parse_time
from auditcov.merge.stats import store_stats
from auditcov.merge.store import open_store
from auditcov.sink.ingest import Ingestor

TEST = e2e_event()["userAgent"].partition(" -- ")[2]
E2E_AGENT = e2e_event()["userAgent"]


@pytest.fixture
def ingestor(tmp_path):
    db = open_store(tmp_path / "store.db")
    yield Ingestor(db)
    db.conn.close()


def attributed(ingestor: Ingestor, run: str = "r") -> dict[str, tuple[str | None, str | None]]:
    rows = ingestor.db.conn.execute(
        "SELECT audit_id, attributed_test, attribution FROM attributed_events WHERE run = ?", (run,)
    )
    return {audit_id: (test, how) for audit_id, test, how in rows}


def test_the_real_e2e_event_is_stored_with_its_test(ingestor):
    result = ingestor.ingest("r", [e2e_event()])
    assert result.as_dict() == {"accepted": 1, "duplicates": 0, "quarantined": 0}
    row = ingestor.db.conn.execute("SELECT client, test, namespace, code, received_us, verb FROM events").fetchone()
    assert row == ("e2e.test", TEST, "secrets-4749", 200, parse_time("2019-07-02T08:15:24.892146Z"), "watch")
    tags, conformance = ingestor.db.conn.execute(
        "SELECT tags, conformance FROM tests WHERE name = ?", (TEST,)
    ).fetchone()
    assert orjson.loads(tags) == ["[sig-storage]", "[NodeConformance]", "[Conformance]"]
    assert conformance == 1
    assert attributed(ingestor) == {"b288774c-b9ef-45e1-9734-5b7d4063e89c": (TEST, "direct")}


def test_a_batch_stored_twice_is_stored_once_and_counted_as_duplicates(ingestor):
    batch = [event("a"), event("b"), event("b", stage="RequestReceived"), {"auditID": "bad"}]
    assert ingestor.ingest("r", batch).as_dict() == {"accepted": 3, "duplicates": 0, "quarantined": 1}
    assert ingestor.ingest("r", batch).as_dict() == {"accepted": 0, "duplicates": 3, "quarantined": 1}
    stats = store_stats(ingestor.db, "r")
    assert (stats["events"], stats["duplicates"], stats["quarantined"]) == (3, 3, 1)
    # The same auditID and stage in another run is another event.
    assert ingestor.ingest("other", batch[:1]).accepted == 1
    # Events with no time at all are deduplicated too.
    untimed = [event("untimed", requestReceivedTimestamp=None, stageTimestamp=None)]
    assert ingestor.ingest("r", untimed).accepted == 1
    assert ingestor.ingest("r", untimed).duplicates == 1


def test_two_requests_sharing_an_audit_id_are_told_apart_by_their_receive_time(ingestor):
    # A client may set the Audit-ID header itself, and the apiserver then uses it for every such request.
    first = event("client-chosen", requestReceivedTimestamp="2026-11-25T10:00:00.000001Z")
    second = event("client-chosen", requestReceivedTimestamp="2026-11-25T10:00:07.250000Z")
    assert ingestor.ingest("r", [first, second]).as_dict() == {"accepted": 2, "duplicates": 0, "quarantined": 0}
    # The same instant written with another offset is the same event.
    again = event("client-chosen", requestReceivedTimestamp="2026-11-25T11:00:07.25+01:00")
    assert ingestor.ingest("r", [second, again]).as_dict() == {"accepted": 0, "duplicates": 2, "quarantined": 0}


def test_a_large_batch_is_stored_in_order_with_its_duplicates_counted(ingestor):
    # Larger than the rows one INSERT statement takes, and not a multiple of it: every row goes in once, in order.
    earlier = [event(f"e{n}") for n in range(0, 700, 7)]
    assert ingestor.ingest("r", earlier).accepted == 100
    batch = [event(f"e{n}", verb="list") for n in range(700)] + [event("e3"), event("e699")]
    assert ingestor.ingest("r", batch).as_dict() == {"accepted": 600, "duplicates": 102, "quarantined": 0}
    rows = ingestor.db.conn.execute("SELECT audit_id, verb FROM events ORDER BY id").fetchall()
    assert rows[:100] == [(f"e{n}", "watch") for n in range(0, 700, 7)]
    assert rows[100:] == [(f"e{n}", "list") for n in range(700) if n % 7]
    assert store_stats(ingestor.db, "r")["duplicates"] == 102


def test_invalid_items_are_quarantined_raw_with_reasons_beside_the_good_ones(ingestor):
    batch = [
        event("good-1"),
        event("no-stage", stage=None),
        {"stage": "ResponseComplete"},
        event("bad-code", responseStatus={"code": "200"}),
        event("bad-stage", stage="Finished"),
        event("bad-time", requestReceivedTimestamp="yesterday"),
        ["not", "an", "object"],
        Malformed("{oops", "line 3 is not JSON"),
        event("good-2"),
    ]
    assert ingestor.ingest("r", batch).as_dict() == {"accepted": 2, "duplicates": 0, "quarantined": 7}
    rows = ingestor.db.conn.execute("SELECT reason, raw FROM quarantine ORDER BY id").fetchall()
    reasons = [reason for reason, _ in rows]
    assert reasons == [
        "stage is missing",
        "auditID is missing",
        "responseStatus.code must be an integer, not str",
        "stage 'Finished' is not one of Panic, RequestReceived, ResponseComplete, ResponseStarted",
        "requestReceivedTimestamp is not an RFC 3339 time: 'yesterday'",
        "an event must be a JSON object, not list",
        "line 3 is not JSON",
    ]
    assert orjson.loads(rows[0][1]) == batch[1]
    assert rows[-1][1] == "{oops"
    assert ingestor.db.conn.execute("SELECT count(*) FROM events").fetchone()[0] == 2


def test_namespace_created_by_a_test_owns_other_clients_events_in_it(ingestor):
    namespace = "deployment-4821"
    create = event(
        "create-ns",
        verb="create",
        requestURI="/api/v1/namespaces",
        objectRef={"resource": "namespaces", "namespace": None, "name": namespace},
        responseStatus={"code": 201},
    )
    controller = event("controller", userAgent=CONTROLLER_AGENT, objectRef={"namespace": namespace})
    elsewhere = event("elsewhere", userAgent=CONTROLLER_AGENT, objectRef={"namespace": "kube-system"})
    other_test = "[sig-apps] Deployment should not steal namespaces"
    conflict = event(
        "conflict",
        verb="create",
        userAgent=f"e2e.test/v1.36.0 (linux/amd64) kubernetes/abc -- {other_test}",
        objectRef={"resource": "namespaces", "namespace": None, "name": "kube-system"},
        responseStatus={"code": 409},
    )
    # The controller's event arrives before the creation (batches arrive out of order): ownership still applies.
    ingestor.ingest("r", [controller, elsewhere, conflict])
    ingestor.ingest("r", [create])
    assert attributed(ingestor) == {
        "controller": (TEST, "namespace"),
        "elsewhere": (None, None),
        "conflict": (other_test, "direct"),
        "create-ns": (TEST, "direct"),
    }
    assert ingestor.db.conn.execute("SELECT namespace, test FROM namespaces").fetchall() == [(namespace, TEST)]


def test_namespace_named_only_in_the_response_object(ingestor):
    create = event(
        "create-ns",
        verb="create",
        objectRef={"resource": "namespaces", "namespace": None, "name": None},
        responseStatus={"code": 201},
        responseObject={"kind": "Namespace", "metadata": {"name": "generated-x1"}},
    )
    ingestor.ingest("r", [create])
    assert ingestor.db.conn.execute("SELECT namespace FROM namespaces").fetchall() == [("generated-x1",)]
    # Bodies are dropped unless asked for.
    assert ingestor.db.conn.execute("SELECT response_object FROM events").fetchone() == (None,)


def test_markers_attribute_events_without_a_test_by_their_own_time(ingestor):
    def at(second: int) -> str:
        return f"2026-11-25T10:00:{second:02d}.000000Z"

    def untested(audit_id: str, second: int) -> dict:
        return event(
            audit_id, userAgent="live-test-writing", objectRef={"namespace": None}, requestReceivedTimestamp=at(second)
        )

    ingestor.ingest("r", [untested("in-b", 25), untested("after", 50)])
    ingestor.record_marker("r", "test A", "start", parse_time(at(10)))
    ingestor.record_marker("r", "test B", "start", parse_time(at(20)))
    ingestor.record_marker("r", "test A", "end", parse_time(at(19)))
    ingestor.record_marker("r", "test B", "end", parse_time(at(30)))
    ingestor.ingest("r", [untested("in-a", 15), untested("before", 5)])
    assert attributed(ingestor) == {
        "in-a": ("test A", "window"),
        "in-b": ("test B", "window"),
        "before": (None, None),
        "after": (None, None),
    }
    with pytest.raises(AuditcovError, match="'middle' is not 'start' or 'end'"):
        ingestor.record_marker("r", "test A", "middle", 0)


def test_keep_bodies_keeps_request_and_response_objects(tmp_path):
    db = open_store(tmp_path / "bodies.db")
    body = {"kind": "ConfigMap", "data": {"k": "v"}}
    Ingestor(db, keep_bodies=True).ingest("r", [event("a", requestObject=body)])
    assert orjson.loads(db.conn.execute("SELECT request_object FROM events").fetchone()[0]) == body


def test_a_matcher_fills_the_operation_columns(tmp_path):
    class ByVerb:
        def match(self, verb, request_uri):
            return ("watchCoreV1NamespacedServiceAccount", None) if verb == "watch" else (None, "no such path")

    db = open_store(tmp_path / "m.db")
    Ingestor(db, matcher=ByVerb()).ingest("r", [event("a"), event("b", verb="get", requestURI="/healthz")])
    rows = db.conn.execute("SELECT audit_id, operation_id, unmatched_reason FROM events ORDER BY audit_id").fetchall()
    assert rows == [("a", "watchCoreV1NamespacedServiceAccount", None), ("b", None, "no such path")]


def test_run_names_are_checked(ingestor):
    with pytest.raises(AuditcovError, match="run name"):
        ingestor.ingest("../etc", [event("a")])
