"""The per-test endpoint model (merge/reports/endpointcov.py) against the store's own attribution: its hits per
(test, endpoint, how) must be what a GROUP BY over the `attributed_events` view gives, on events sent through the
real sink (a namespace a test created, controllers in it, marker windows, unmatched paths, failures)."""

from __future__ import annotations

import orjson
import pytest
from sink_support import CONTROLLER_AGENT, FIXTURES, event, event_list

from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import save_catalogue
from auditcov.merge.reports.endpointcov import Hits, endpoint_coverage, status_class
from auditcov.merge.store import open_store, open_store_readonly
from auditcov.sink.app import init_app
from auditcov.sink.settings import Settings

JSON = {"Content-Type": "application/json"}
TEST = "[sig-storage] Secrets should be consumable from pods in volume [NodeConformance] [Conformance]"


def view_hits(db, run: str) -> dict:
    """test -> operationId -> how -> Hits, by the view (the store's one definition of attribution)."""
    hits: dict = {}
    for test, operation_id, how, code, count, first_us, last_us in db.conn.execute(
        "SELECT attributed_test, operation_id, attribution, code, COUNT(*), MIN(COALESCE(received_us, stage_us)),"
        " MAX(COALESCE(received_us, stage_us)) FROM attributed_events WHERE run = ? AND attributed_test IS NOT NULL"
        " AND operation_id IS NOT NULL GROUP BY 1, 2, 3, 4",
        (run,),
    ):
        entry = hits.setdefault(test, {}).setdefault(operation_id, {}).setdefault(how, Hits())
        entry.add(count, first_us, last_us, status_class(code))
    return hits


@pytest.fixture
async def store(aiohttp_client, tmp_path):
    catalogue = load_catalogue(FIXTURES / "openapi/swagger-v1.36.json.gz")
    settings = Settings(db=str(tmp_path / "m.db"))
    db = open_store(settings.db)
    save_catalogue(db, catalogue, load_eligibility())
    db.conn.close()
    client = await aiohttp_client(init_app(settings, matcher=Matcher(catalogue)))

    def at(second: float) -> str:
        return f"2026-11-25T10:00:{second:09.6f}Z"

    kubectl = "kubectl/v1.36.0 (linux/amd64) kubernetes/abc1234"
    secret = "/api/v1/namespaces/secrets-1/secrets/s"
    items = [
        event("ns", verb="create", requestURI="/api/v1/namespaces", requestReceivedTimestamp=at(1),
              objectRef={"resource": "namespaces", "namespace": None, "name": "secrets-1"},
              responseStatus={"code": 201}),
        event("get", verb="get", requestURI=secret, requestReceivedTimestamp=at(2),
              objectRef={"namespace": "secrets-1"}),
        event("gone", verb="delete", requestURI=secret, requestReceivedTimestamp=at(3),
              objectRef={"namespace": "secrets-1"}, responseStatus={"code": 404}),
        event("sa", verb="create", requestURI="/api/v1/namespaces/secrets-1/serviceaccounts",
              userAgent=CONTROLLER_AGENT, requestReceivedTimestamp=at(4), objectRef={"namespace": "secrets-1"}),
        event("win", verb="list", requestURI="/api/v1/pods", userAgent=kubectl, requestReceivedTimestamp=at(21),
              objectRef={"namespace": None}),
        event("win-2", verb="list", requestURI="/api/v1/pods", userAgent=kubectl, requestReceivedTimestamp=at(22),
              objectRef={"namespace": None}, responseStatus={"code": 500}),
        event("outside", verb="list", requestURI="/api/v1/nodes", userAgent=kubectl, requestReceivedTimestamp=at(40),
              objectRef={"namespace": None}),
        event("crd", verb="list", requestURI="/apis/example.com/v1/things", requestReceivedTimestamp=at(5)),
        event("rr", stage="RequestReceived", verb="get", requestURI=secret,
              requestReceivedTimestamp=at(2), objectRef={"namespace": "secrets-1"}, responseStatus=None),
    ]  # fmt: skip
    assert (await client.post("/v1/audit/m", data=event_list(items), headers=JSON)).status == 200
    for kind, second in (("start", 20), ("end", 30)):
        marker = orjson.dumps({"test": "window-test", "event": kind, "time": at(second)})
        assert (await client.post("/v1/runs/m/markers", data=marker, headers=JSON)).status == 200
    return settings.db


def as_json(hits: dict) -> dict:
    return {
        t: {op: {how: h.to_json() for how, h in ways.items()} for op, ways in ops.items()} for t, ops in hits.items()
    }


async def test_hits_are_the_views(store):
    db = open_store_readonly(store)
    coverage = endpoint_coverage(db, "m")
    assert as_json(coverage.hits_by_test) == as_json(view_hits(db, "m"))
    secrets = coverage.test_hits(TEST)
    assert secrets["readCoreV1NamespacedSecret"]["direct"].by_status == {"2xx": 1, "none": 1}
    assert secrets["deleteCoreV1NamespacedSecret"]["direct"].by_status == {"4xx": 1}
    assert set(secrets["createCoreV1NamespacedServiceAccount"]) == {"namespace"}
    window = coverage.test_hits("window-test")["listCoreV1PodForAllNamespaces"]["window"]
    assert (window.count, window.by_status) == (2, {"2xx": 1, "5xx": 1})
    assert "listCoreV1Node" not in coverage.hits_by_endpoint  # outside every window: no test
    assert coverage.hits_of("listCoreV1Node").count == 1
    assert sum(coverage.unmatched.values()) == 1 and coverage.unmapped == 0
    assert coverage.e2e_test_names == {TEST}
    assert coverage.e2e_versions == {"v1.16.0": 5}  # the fixture event's agent: e2e.test/v1.16.0
    by_test = coverage.by_test()
    assert by_test[TEST]["deleteCoreV1NamespacedSecret"] == {"direct"}
    assert by_test["window-test"]["listCoreV1PodForAllNamespaces"] == {"window"}


async def test_successful_only_counts_only_1xx_to_3xx(store):
    db = open_store_readonly(store)
    coverage = endpoint_coverage(db, "m", successful_only=True)
    by_test = coverage.by_test()
    assert "deleteCoreV1NamespacedSecret" not in by_test[TEST]  # only a 404
    assert by_test[TEST]["readCoreV1NamespacedSecret"] == {"direct"}  # a 200 (its RequestReceived has no status)
    assert by_test["window-test"]["listCoreV1PodForAllNamespaces"] == {"window"}  # one of two succeeded
    assert coverage.test_hits(TEST)["deleteCoreV1NamespacedSecret"]["direct"].by_status == {"4xx": 1}
    assert not coverage.hit("deleteCoreV1NamespacedSecret")
