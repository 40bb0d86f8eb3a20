"""The catalogue against real specs: APISnoop's published 1.36.0 endpoints, the v3 documents, bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from auditcov.merge.errors import SpecError
from auditcov.merge.openapi.catalogue import level_of, load_catalogue
from auditcov.merge.openapi.eligibility import load_conformance_tests, load_eligibility

#: Endpoints whose level auditcov sets differently from APISnoop, and why. APISnoop hard-codes these two as
#: beta ("not marked as such, yet, in the swagger.json", apps/snoopdb load_open_api); they are served without
#: a group version and ServiceAccountIssuerDiscovery has been GA since Kubernetes 1.21, so auditcov says stable.
LEVEL_DIFFERENCES = {
    "getServiceAccountIssuerOpenIDConfiguration": ("stable", "beta"),
    "getServiceAccountIssuerOpenIDKeyset": ("stable", "beta"),
}


@pytest.fixture(scope="module")
def apisnoop_1_36(fixtures):
    with gzip.open(fixtures / "apisnoop/1.36.0.json.gz") as stream:
        return json.load(stream)


@pytest.fixture(scope="module")
def catalogue_1_36(fixtures):
    return load_catalogue(fixtures / "openapi/swagger-v1.36.json.gz")


def test_the_same_908_endpoints_as_apisnoop_1_36(catalogue_1_36, apisnoop_1_36):
    theirs = {row["endpoint"]: row for row in apisnoop_1_36["endpoints"]}
    ours = {op: e for op, e in catalogue_1_36.endpoints.items() if not e.deprecated}
    assert len(theirs) == 908
    assert set(ours) == set(theirs)
    for operation_id, row in theirs.items():
        endpoint = ours[operation_id]
        mine = (endpoint.path, endpoint.group, endpoint.version, endpoint.kind, endpoint.action, endpoint.category)
        assert mine == (row["path"], row["group"], row["version"], row["kind"], row["action"], row["category"]), (
            operation_id
        )
        assert (endpoint.description or None) == row["description"]
    levels = {op: (ours[op].level, row["level"]) for op, row in theirs.items() if ours[op].level != row["level"]}
    assert levels == LEVEL_DIFFERENCES


def test_deprecated_are_the_watch_operations(catalogue_1_36):
    deprecated = [e for e in catalogue_1_36.endpoints.values() if e.deprecated]
    assert len(deprecated) == 1123 - 908
    assert all("/watch/" in e.path for e in deprecated)
    assert {e.action for e in deprecated} == {"watch", "watchlist"}


def test_summary_counts(catalogue_1_36):
    summary = catalogue_1_36.summary()
    assert summary["endpoints"] == 1123
    assert summary["deprecated"] == 215
    assert summary["by_level"] == {"stable": 666, "beta": 158, "alpha": 84}
    assert sum(summary["by_group"].values()) == 908
    assert summary["by_group"]["core"] == 200
    assert summary["by_action"]["connect"] == 48


def test_v3_folder_matches_the_v2_spec_of_the_same_release(fixtures):
    v3 = load_catalogue(fixtures / "openapi/v3-v1.27.0")
    v2 = load_catalogue(fixtures / "openapi/swagger-v1.27.0.json.gz")
    # The folder holds api/v1 and apis/apps/v1 only: every operation under those paths must be the same.
    served = [e for e in v2.endpoints.values() if e.path.startswith(("/api/v1/", "/apis/apps/v1/"))]
    assert len(served) == len(v3.endpoints) == 322
    for endpoint in served:
        assert v3.endpoints[endpoint.operation_id] == endpoint


@pytest.mark.parametrize(
    ("version", "level"),
    [("v1", "stable"), ("v2", "stable"), ("v1beta2", "beta"), ("v2alpha1", "alpha"), (None, "stable"), ("x", "stable")],
)
def test_level_from_the_group_version(version, level):
    assert level_of(version) == level


def test_eligibility_defaults_and_overrides(catalogue_1_36, tmp_path):
    defaults = load_eligibility()
    assert len(defaults.ineligible) == 145
    assert len(defaults.pending) == 48
    endpoints = catalogue_1_36.endpoints
    assert not defaults.is_eligible(endpoints["connectCoreV1DeleteNodeProxy"])  # ineligible, with its reason
    assert "Unable to be tested" in defaults.ineligible["connectCoreV1DeleteNodeProxy"]
    assert not defaults.is_eligible(endpoints["watchCoreV1NamespacedPodList"])  # deprecated
    assert not defaults.is_eligible(endpoints["listResourceV1beta1DeviceClass"])  # beta
    assert defaults.is_eligible(endpoints["readCoreV1NamespacedPod"])
    assert defaults.is_pending(endpoints["createCoreV1Node"])
    assert sum(defaults.is_eligible(e) for e in endpoints.values()) == 524

    mine = tmp_path / "ineligible.yaml"
    mine.write_text("- endpoint: readCoreV1NamespacedPod\n  reason: not here\n  link: x\n")
    pending = tmp_path / "pending.yaml"
    pending.write_text("---\n- listCoreV1Node\n")
    override = load_eligibility(mine, pending)
    assert not override.is_eligible(endpoints["readCoreV1NamespacedPod"])
    assert override.is_eligible(endpoints["connectCoreV1DeleteNodeProxy"])
    assert override.pending == {"listCoreV1Node"}


def test_conformance_tests_are_shipped():
    tests = load_conformance_tests()
    assert len(tests) == 408
    assert all(name.endswith("[Conformance]") for name in tests)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"paths": {}}', "not an OpenAPI document"),
        (b'{"swagger": "2.0", "paths": []}', "'paths' must be an object"),
        (b'{"swagger": "2.0", "paths": {"/a": {"get": {"tags": ["x"]}}}}', "GET /a: operationId is missing"),
        (b'{"swagger": "2.0", "paths": {}}', "no OpenAPI operations found"),
        (
            b'{"swagger": "2.0", "paths": {"/a": {"get": {"operationId": "x"}}, "/b": {"put": {"operationId": "x"}}}}',
            "operationId x is PUT /b here but GET /a elsewhere",
        ),
    ],
)
def test_bad_specs_say_what_is_wrong(tmp_path, content, message):
    spec = tmp_path / "spec.json"
    spec.write_bytes(content)
    with pytest.raises(SpecError, match=message) as caught:
        load_catalogue(spec)
    assert str(spec) in str(caught.value)


def test_bad_lists_say_which_item(tmp_path):
    bad = tmp_path / "ineligible.yaml"
    bad.write_text("- endpoint: ok\n- reason: no endpoint\n")
    with pytest.raises(SpecError, match="item 1: needs an 'endpoint' string"):
        load_eligibility(bad)
    with pytest.raises(SpecError, match="no such file or folder"):
        load_catalogue(tmp_path / "missing.json")
