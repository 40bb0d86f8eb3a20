"""Acceptance: APISnoop's published 1.36.0 coverage, replayed through the real sink, comes back out unchanged.

For every endpoint of tests/fixtures/apisnoop/1.36.0.json and every test in its `tests[]`, audit events are
made (concrete URIs from the path template, with the test's own namespace and realistic names, in every form
the action allows: list and watch, GET and POST connect, HEAD and OPTIONS proxy, multi-segment proxy paths),
each with that test's e2e user agent. Noise is added: kubelet and controller traffic in kube-system and in the
tests' namespaces (also on endpoints no test hit), e2e.test clients without test text (APISnoop's `""` test),
CRD and health-check requests that match nothing. All of it goes to a sink started with `openapi` = the 1.36
spec, over HTTP on loopback, in EventLists of 400; then `auditcov report --format apisnoop` must give back
APISnoop's file: every endpoint row and every tests[] row field for field and in its order (null for other
clients and "" for e2e.test clients without test text included), and the header totals that one run can give.
The test lists what still differs, and why.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import uuid

import aiohttp
import orjson
import pytest
import yaml
from click.testing import CliRunner

from auditcov.merge.events import format_time
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import UNKNOWN_GROUP_VERSION, UNKNOWN_NON_RESOURCE
from auditcov.merge.openapi.synth import random_name, requests_for
from auditcov.merge.reports.apisnoop import apisnoop_level
from auditcov.sink.cli import cli
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

pytestmark = pytest.mark.slow

RUN = "e2e-1.36.0"
E2E_AGENT = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234"
KUBELET_AGENT = "kubelet/v1.36.0 (linux/amd64) kubernetes/abc1234"
CONTROLLER_AGENT = (
    "kube-controller-manager/v1.36.0 (linux/amd64) kubernetes/abc1234/system:serviceaccount:kube-system:{}"
)
BATCH = 400
START_US = 1_776_667_676_000_000  # 2026-04-20T06:47:56Z, APISnoop's release_date for 1.36.0


@pytest.fixture(scope="module")
def apisnoop(fixtures) -> dict:
    with gzip.open(fixtures / "apisnoop/1.36.0.json.gz") as stream:
        return json.load(stream)


class EventMaker:
    """Audit events (audit.k8s.io/v1, Metadata level) with increasing timestamps."""

    def __init__(self) -> None:
        self.clock = itertools.count(START_US, 1_000)
        self.rng = random.Random(1360)

    def event(self, verb: str, uri: str, agent: str, *, namespace: str | None = None, **object_ref) -> dict:
        moment = format_time(next(self.clock))
        if namespace:
            object_ref["namespace"] = namespace
        return {
            "level": "Metadata",
            "auditID": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "stage": "ResponseComplete",
            "requestURI": uri,
            "verb": verb,
            "user": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "sourceIPs": ["172.18.0.1"],
            "userAgent": agent,
            "objectRef": object_ref,
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": moment,
            "stageTimestamp": moment,
        }


def synthesise(apisnoop: dict, catalogue) -> tuple[list[dict], int]:
    """The events, and how many (endpoint, named test) pairs they cover."""
    maker = EventMaker()
    rng = maker.rng
    tests = sorted({t for row in apisnoop["endpoints"] for t in row["tests"] if t})
    namespace_of = {test: f"{random_name(rng).split('-')[0]}-{index}" for index, test in enumerate(tests)}
    events: list[dict] = []
    # Each test first creates its namespace, as the e2e framework does: the sink notes who owns it.
    for test, namespace in namespace_of.items():
        events.append(
            maker.event("create", "/api/v1/namespaces", f"{E2E_AGENT} -- {test}", resource="namespaces", name=namespace)
        )
    pairs = 0
    untested = []
    for row in apisnoop["endpoints"]:
        endpoint = catalogue.endpoints[row["endpoint"]]
        named = [t for t in row["tests"] if t]
        if not named:
            untested.append(endpoint)
        for test in named:
            pairs += 1
            for verb, uri in requests_for(endpoint, rng, {"namespace": namespace_of[test]}):
                events.append(maker.event(verb, uri, f"{E2E_AGENT} -- {test}", namespace=namespace_of[test]))
        if "" in row["tests"]:  # an e2e.test client whose agent carries no test text
            for verb, uri in requests_for(endpoint, rng):
                events.append(maker.event(verb, uri, E2E_AGENT))
        if None in row["tests"]:  # other clients hit it too: kubelets and controllers in kube-system
            for verb, uri in requests_for(endpoint, rng, {"namespace": "kube-system"}):
                events.append(maker.event(verb, uri, KUBELET_AGENT, namespace="kube-system"))
    # Controllers acting inside the tests' namespaces on endpoints no test hit: indirect hits, which the
    # apisnoop format must not count.
    for endpoint in untested:
        if "{namespace}" in endpoint.path:
            test = rng.choice(tests)
            for verb, uri in requests_for(endpoint, rng, {"namespace": namespace_of[test]}):
                agent = CONTROLLER_AGENT.format("namespace-controller")
                events.append(maker.event(verb, uri, agent, namespace=namespace_of[test]))
    # Requests that match nothing, from tests and from others.
    some_test = tests[0]
    for verb, uri, agent in [
        ("list", "/apis/stable.example.com/v1/namespaces/x/crontabs", f"{E2E_AGENT} -- {some_test}"),
        ("get", "/apis/metrics.k8s.io/v1beta1/nodes", CONTROLLER_AGENT.format("horizontal-pod-autoscaler")),
        ("get", "/healthz", KUBELET_AGENT),
        ("get", "/readyz?verbose", KUBELET_AGENT),
    ]:
        events.append(maker.event(verb, uri, agent))
    rng.shuffle(events)  # batches arrive interleaved and out of order
    return events, pairs


def theirs_tests(apisnoop: dict, operation_id: str) -> list[str | None]:
    return next(row["tests"] for row in apisnoop["endpoints"] if row["endpoint"] == operation_id)


async def test_apisnoop_1_36_replayed_through_the_sink(fixtures, tmp_path, apisnoop):
    spec = fixtures / "openapi/swagger-v1.36.json.gz"
    catalogue = load_catalogue(spec)
    events, pairs = synthesise(apisnoop, catalogue)
    assert pairs == 17_699

    db = tmp_path / "sink.db"
    sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(db), openapi=str(spec)))
    try:
        stored = 0
        async with aiohttp.ClientSession() as session:
            for start in range(0, len(events), BATCH):
                body = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}}
                body["items"] = events[start : start + BATCH]
                async with session.post(f"{sink.url}/v1/audit/{RUN}?timeout=30s", data=orjson.dumps(body),
                                        headers={"Content-Type": "application/json"}) as response:  # fmt: skip
                    assert response.status == 200, await response.text()
                    stored += (await response.json())["accepted"]
    finally:
        await sink.stop()
    assert stored == len(events)

    # conformance.yaml as APISnoop had it for 1.36: its own tests[] rows say which tests it lists, with what.
    conformance = tmp_path / "conformance.yaml"
    conformance.write_text(
        yaml.safe_dump(
            [
                {"testname": t["testname"], "codename": t["test"], "description": "", "release": t["promotion_release"],
                 "file": t["file"]}
                for t in apisnoop["tests"]
                if t["conformance_test"]
            ]
        )
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--run", RUN, "--format", "apisnoop", "-o",
                                      str(tmp_path / "1.36.0.json"), "--conformance", str(conformance)])  # fmt: skip
    assert result.exit_code == 0, result.output
    ours = orjson.loads((tmp_path / "1.36.0.json").read_bytes())

    # Every endpoint row, field for field and in APISnoop's order (tests with null and "" too); every tests[] row.
    assert list(ours) == list(apisnoop)
    assert ours["endpoints"] == apisnoop["endpoints"]
    assert ours["tests"] == apisnoop["tests"]
    same = ("release", "release_date", "total endpoints", "tested endpoints")
    assert {key: ours[key] for key in same} == {key: apisnoop[key] for key in same}
    assert ours["tested endpoints"] == 591 and ours["total endpoints"] == 908
    assert sum(len(row["tests"]) for row in ours["endpoints"]) == pairs + 7 + 609  # + "" in 7 rows, null in 609

    # What differs, and why:
    # - `spec` and `sources` say where the data came from: here the spec file given and the auditcov run, there
    #   the spec's URL and the prow jobs whose audit logs APISnoop loaded.
    assert ours["spec"] == str(spec) and ours["sources"] == [f"auditcov run {RUN}"]
    assert apisnoop["spec"].endswith("swagger.json") and all(
        s.startswith("https://prow.k8s.io/") for s in apisnoop["sources"]
    )
    # - The conformance totals are APISnoop's formula (eligible: stable by APISnoop's level, not deprecated, not
    #   ineligible, not pending; tested: hit by a conformance.yaml test), over the eligibility lists auditcov ships,
    #   which are not the ones APISnoop's database held (there, 563 eligible endpoints and every one tested: its
    #   totals also count the tests of every release it loaded, back to 1.15, while this replay has one run).
    eligibility = load_eligibility()
    codenames = {t["test"] for t in apisnoop["tests"] if t["conformance_test"]}
    eligible = [
        e for e in catalogue.endpoints.values()
        if apisnoop_level(e) == "stable" and "deprecated" not in e.description.lower()
        and e.operation_id not in eligibility.ineligible and not eligibility.is_pending(e)
    ]  # fmt: skip
    tested = [e for e in eligible if codenames & set(theirs_tests(apisnoop, e.operation_id))]
    assert ours["total conformance eligible endpoints"] == len(eligible) == 521
    assert ours["tested conformance eligible endpoints"] == len(tested) == 504
    assert (apisnoop["total conformance eligible endpoints"], apisnoop["tested conformance eligible endpoints"]) == (
        563,
        563,
    )
    # - The two "new" totals need the previous release's catalogue (APISnoop: 1.35's, 14 new, all tested); without
    #   one they are null, and with 1.27's (the oldest here) they count what came since 1.27.
    assert (
        ours["new conformance eligible endpoints"] is None and ours["new tested conformance eligible endpoints"] is None
    )
    previous = fixtures / "openapi/swagger-v1.27.0.json.gz"
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--run", RUN, "--format", "apisnoop",
                                      "--since", str(previous), "--conformance", str(conformance)])  # fmt: skip
    assert result.exit_code == 0, result.output
    totals = orjson.loads(result.output)
    older = set(load_catalogue(previous).endpoints)
    new = [e for e in eligible if e.operation_id not in older]
    assert totals["new conformance eligible endpoints"] == len(new) > 0
    assert totals["new tested conformance eligible endpoints"] == sum(e in tested for e in new)

    # auditcov's own json report does see what controllers did inside the tests' namespaces.
    result = CliRunner().invoke(cli, ["report", "--db", str(db), "--run", RUN, "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["totals"]["tested_directly"] == 591
    assert report["totals"]["tested_including_indirect"] > 591
    assert report["unmatched"] == {
        UNKNOWN_GROUP_VERSION: 2,
        UNKNOWN_NON_RESOURCE: 2,
    }
