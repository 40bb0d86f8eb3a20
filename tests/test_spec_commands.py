"""`auditcov spec`, `remap` and `report` on real data: the fixture audit files imported into a real store."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import UNKNOWN_GROUP_VERSION
from auditcov.merge.openapi.stored import save_catalogue, stored_catalogue
from auditcov.merge.store import open_store
from auditcov.sink.cli import cli
from auditcov.sink.ingest import Ingestor

KUBECTL_EVENT = {
    "stage": "ResponseComplete",
    "verb": "list",
    "requestURI": "/api/v1/namespaces/default/pods?limit=500",
    "userAgent": "kubectl/v1.34.0 (linux/amd64) kubernetes/abcdef0",
    "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
    "responseStatus": {"code": 200},
    "requestReceivedTimestamp": "2025-01-01T00:00:00.000000Z",
}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def store(tmp_path, fixtures):
    """The falco and audit2rbac events (2017-2018), imported without an endpoint catalogue."""
    db = tmp_path / "store.db"
    result = invoke("import", "--db", str(db), "--run", "r1", str(fixtures / "audit/falco"),
                    str(fixtures / "audit/audit2rbac/demo.log"))  # fmt: skip
    assert result.exit_code == 0, result.output
    return db


def test_spec_text_and_json(fixtures):
    spec = str(fixtures / "openapi/swagger-v1.36.json.gz")
    text = invoke("spec", spec)
    assert text.exit_code == 0
    assert "1123 operations, 215 deprecated; 524 eligible for conformance (1 of them pending)" in text.output
    document = orjson.loads(invoke("spec", spec, "--format", "json").output)
    assert document["summary"]["by_level"] == {"stable": 666, "beta": 158, "alpha": 84}
    assert len(document["endpoints"]) == 1123
    pod = next(e for e in document["endpoints"] if e["operation_id"] == "readCoreV1NamespacedPod")
    assert pod == {
        "operation_id": "readCoreV1NamespacedPod",
        "method": "GET",
        "path": "/api/v1/namespaces/{namespace}/pods/{name}",
        "group": "",
        "version": "v1",
        "kind": "Pod",
        "action": "get",
        "level": "stable",
        "category": "core",
        "deprecated": False,
        "description": "read the specified Pod",
        "eligible": True,
        "pending": False,
    }


def test_spec_of_a_bad_source_is_an_error(tmp_path):
    (tmp_path / "x.json").write_text("[]")
    result = CliRunner().invoke(cli, ["spec", str(tmp_path / "x.json")])
    assert result.exit_code == 1
    assert "not an OpenAPI document" in result.output


def test_report_needs_a_catalogue_then_remap_maps_every_event(store, fixtures):
    result = CliRunner().invoke(cli, ["report", "--db", str(store)])
    assert result.exit_code == 1
    assert "no endpoint catalogue yet: run `auditcov remap --openapi SOURCE` first" in result.output

    remapped = invoke("remap", "--db", str(store), "--openapi", str(fixtures / "openapi/swagger-v1.12.0.json.gz"))
    assert remapped.exit_code == 0, remapped.output
    assert "86 events against" in remapped.output
    assert "86 matched, 0 unmatched, 86 changed" in remapped.output
    again = invoke("remap", "--db", str(store))  # the stored catalogue, nothing to change
    assert "86 matched, 0 unmatched, 0 changed" in again.output

    db = open_store(store)
    operations = dict(db.conn.execute("SELECT audit_id, operation_id FROM events").fetchall())
    db.conn.close()
    assert operations["ca1ed9f4-7bf4-4c85-81a8-1b11253d1ba6"] == "connectCoreV1PostNamespacedPodExec"

    # The 1.36 spec has no extensions/v1beta1: those events become unmatched, with a reason.
    newer = invoke(
        "remap", "--db", str(store), "--run", "r1", "--openapi", str(fixtures / "openapi/swagger-v1.36.json.gz")
    )
    assert newer.exit_code == 0, newer.output
    json_report = orjson.loads(invoke("report", "--db", str(store), "--format", "json").output)
    assert json_report["unmatched"] == {
        UNKNOWN_GROUP_VERSION: 12,
    }
    assert json_report["totals"]["endpoints"] == 908
    assert json_report["totals"]["unmapped_events"] == 0
    text = invoke("report", "--db", str(store), "--untested")
    assert "Eligible endpoints no conformance test hit (524)" in text.output
    assert "Events that matched no endpoint" in text.output

    # `auditcov import` maps against the store's catalogue once it has one.
    invoke("import", "--db", str(store), "--run", "r1", str(fixtures / "audit/elastic/test-kube-audit.log"))
    assert (
        orjson.loads(invoke("report", "--db", str(store), "--format", "json").output)["totals"]["unmapped_events"] == 0
    )
    db = open_store(store)
    assert db.conn.execute(
        "SELECT operation_id FROM events WHERE audit_id = 'ad26f7bc-f1c6-4097-90f1-e0924e12f257'"
    ).fetchall() == [("replaceCoordinationV1NamespacedLease",)]

    # Events stored without a matcher are reported as not mapped until remapped.
    Ingestor(db).ingest("r1", [{**KUBECTL_EVENT, "auditID": "stored-without-a-matcher"}])
    db.conn.close()
    assert (
        orjson.loads(invoke("report", "--db", str(store), "--format", "json").output)["totals"]["unmapped_events"] == 1
    )
    assert "1 events are not mapped to endpoints" in invoke("report", "--db", str(store)).output
    invoke("remap", "--db", str(store))
    assert (
        orjson.loads(invoke("report", "--db", str(store), "--format", "json").output)["totals"]["unmapped_events"] == 0
    )


def test_stored_catalogue_round_trips(tmp_path, fixtures):
    catalogue = load_catalogue(fixtures / "openapi/v3-v1.27.0")
    db = open_store(tmp_path / "s.db")
    save_catalogue(db, catalogue, load_eligibility())
    assert stored_catalogue(db) == catalogue
    eligible = db.conn.execute("SELECT COUNT(*) FROM endpoints WHERE eligible").fetchone()[0]
    reason = db.conn.execute(
        "SELECT ineligible_reason FROM endpoints WHERE operation_id = 'connectCoreV1DeleteNodeProxy'"
    ).fetchone()[0]
    db.conn.close()
    assert eligible == 222
    assert reason == "Unable to be tested, and likely soon deprecated"


def test_unknown_run_is_an_error(store, fixtures):
    result = CliRunner().invoke(
        cli, ["remap", "--db", str(store), "--run", "nope", "--openapi", str(fixtures / "openapi/v3-v1.27.0")]
    )
    assert result.exit_code == 1
    assert "no run 'nope' in the store" in result.output


def test_commands_end_their_help_with_an_example():
    for command in ("spec", "remap", "report"):
        help_text = invoke(command, "--help").output
        assert f"Example: auditcov {command}" in help_text
