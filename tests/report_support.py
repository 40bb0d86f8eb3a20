"""A store that looks like a real run, for the report page tests: real events through a real sink, real coverage.

Events: for a slice of the tests in APISnoop's published 1.36.0 coverage, each test creates its namespace and
hits its endpoints in every form the action allows (as tests/test_replay_apisnoop.py does for all of them);
controllers act in some of those namespaces (indirect hits); a few requests match nothing. They are POSTed as
EventLists to `auditcov serve` (a subprocess on loopback, mapping with the 1.36 spec).

Code coverage: coverage.py measures auditcov's own decoder, user-agent parser and matcher while they handle each
test's events, one dynamic context per test (`Coverage.switch_context`, as the Python agent does), and
`auditcov cover import` stores the contexts as per-test lines. So every test has real lines, and tests whose
requests take different matcher paths (watch, proxy, connect, HEAD) have different ones.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import orjson
from click.testing import CliRunner
from sink_support import Sink

from auditcov.merge.events import format_time
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.synth import random_name, requests_for
from auditcov.sink.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"
SPEC = FIXTURES / "openapi/swagger-v1.36.json.gz"
E2E_AGENT = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234"
CONTROLLER_AGENT = (
    "kube-controller-manager/v1.36.0 (linux/amd64) kubernetes/abc1234/system:serviceaccount:kube-system:x"
)
START_US = 1_776_668_876_000_000

#: Runs in a subprocess under coverage.py: one context per test, handling that test's events.
_MEASURE = """
import sys, orjson, coverage
cov = coverage.Coverage(data_file=sys.argv[1], source_pkgs=["auditcov.merge"])
cov.start()
from auditcov.merge.decode import decode_event_list
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.useragent import parse_user_agent
matcher = Matcher(load_catalogue(sys.argv[2]))
by_test = orjson.loads(open(sys.argv[3], "rb").read())
for test, body in by_test.items():
    cov.switch_context(test)
    for item in decode_event_list(body.encode()):
        parse_user_agent(item.user_agent)
        matcher.match(item.verb, item.request_uri)
cov.switch_context("")
cov.stop()
cov.save()
"""


def chosen_tests(count: int) -> tuple[list[str], dict[str, list[str]]]:
    """`count` of APISnoop 1.36.0's tests (every n-th, so all SIGs show) and the endpoints each hit."""
    with gzip.open(FIXTURES / "apisnoop/1.36.0.json.gz") as stream:
        apisnoop = json.load(stream)
    hit: dict[str, list[str]] = {}
    for row in apisnoop["endpoints"]:
        for test in row["tests"]:
            if test:
                hit.setdefault(test, []).append(row["endpoint"])
    names = sorted(hit)
    step = max(1, len(names) // count)
    names = names[::step][:count]
    return names, {name: hit[name] for name in names}


def run_events(count: int, run: str) -> tuple[list[dict], dict[str, list[dict]]]:
    """The run's events, and each test's own events (for measuring the code that handles them)."""
    catalogue = load_catalogue(SPEC)
    rng = random.Random(136)
    clock = itertools.count(START_US, 1_000)
    names, hits = chosen_tests(count)

    def event(verb: str, uri: str, agent: str, namespace: str | None, code: int = 200) -> dict:
        moment = format_time(next(clock))
        return {
            "level": "Metadata", "auditID": str(uuid.UUID(int=rng.getrandbits(128))), "stage": "ResponseComplete",
            "requestURI": uri, "verb": verb, "user": {"username": "kubernetes-admin"}, "sourceIPs": ["127.0.0.1"],
            "userAgent": agent, "objectRef": {"namespace": namespace} if namespace else {},
            "responseStatus": {"code": code}, "requestReceivedTimestamp": moment, "stageTimestamp": moment,
        }  # fmt: skip

    everything: list[dict] = []
    own: dict[str, list[dict]] = {}
    for index, test in enumerate(names):
        namespace = f"{random_name(rng).split('-')[0]}-{index}"
        agent = f"{E2E_AGENT} -- {test}"
        items = [event("create", "/api/v1/namespaces", agent, None)]
        items[0]["objectRef"] = {"resource": "namespaces", "name": namespace}
        for operation_id in hits[test]:
            for verb, uri in requests_for(catalogue.endpoints[operation_id], rng, {"namespace": namespace}):
                # Clean-up deletes often find nothing: a 404 is still a hit.
                items.append(event(verb, uri, agent, namespace, 404 if verb == "delete" and index % 3 == 0 else 200))
        own[test] = items
        everything += items
        if index % 4 == 0:  # a controller works in the test's namespace: an indirect hit
            uri = f"/api/v1/namespaces/{namespace}/events"
            everything.append(event("create", uri, CONTROLLER_AGENT, namespace, 201))
    everything.append(
        event("get", "/apis/stable.example.com/v1/namespaces/x/crontabs", f"{E2E_AGENT} -- {names[-1]}", "x")
    )
    everything.append(event("get", "/healthz", "kubelet/v1.36.0", None))
    return everything, own


def event_list(items: list[dict]) -> bytes:
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})


def measure_code(tmp: Path, own: dict[str, list[dict]]) -> Path:
    """A coverage.py data file with one context per test (see the module docstring)."""
    bodies = tmp / "by-test.json"
    bodies.write_bytes(orjson.dumps({test: event_list(items).decode() for test, items in own.items()}))
    data = tmp / ".coverage"
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(data), str(SPEC), str(bodies)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return data


def import_code(db: Path, run: str, data: Path) -> None:
    result = CliRunner().invoke(cli, ["cover", "import", "--db", str(db), "--run", run, str(data)])
    assert result.exit_code == 0, result.output


def replayed_store(folder: Path, runs: dict[str, list[dict]], code: dict[str, dict[str, list[dict]]]) -> Path:
    """A store in `folder` holding `runs` (run -> events, POSTed in batches of 400 to a real `auditcov serve` that
    maps with SPEC), and for each run of `code` its tests' lines, measured on the events given for each test."""
    db = folder / "store.db"
    sink = Sink(db, "--openapi", str(SPEC))
    try:
        for run, items in runs.items():
            for start in range(0, len(items), 400):
                body = event_list(items[start : start + 400])
                request = urllib.request.Request(
                    f"{sink.url}/v1/audit/{run}", body, {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=30) as answer:
                    assert answer.status == 200
    finally:
        assert sink.stop() == 0
    for run, own in code.items():
        (folder / run).mkdir()
        import_code(db, run, measure_code(folder / run, own))
    return db
