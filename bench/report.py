"""Benchmark: reports, the diff and the query API over a store of two runs of 1,000,000 events in 400 tests each,
every test with code coverage.

The store (built once, or reused with --store PATH when it exists) holds runs `base` and `head`, shaped like an
e2e conformance run: tests one after another, each creating its namespace, then hitting about 40 endpoints of
the 1.36 catalogue (a common core every test hits, the rest its own) in every form their action allows
(merge/openapi/synth.py), with the e2e user agent (bench/ingest.py's); controllers and the kubelet acting in the
test's namespace (indirect hits) and in kube-system (no test); 7% of answers 4xx or 5xx. Events go in through the
sink's own ingest path (`Ingestor`, with the endpoint matcher). Code coverage: one kube-apiserver process with a
layout of --blocks blocks (default 118,652, a kube-apiserver build's, README); a snapshot at every test boundary
whose counters grow by a core path every test runs plus the test's own blocks. `head` leaves out every tenth test
and one endpoint and some blocks of others, so the diff has something to say.

Prints: each entry of TIMINGS (the JSON report, the other report formats, the per-run model, the diff) in
seconds, best of --repeat; each query route of the API over HTTP on loopback against a real sink (start_sink),
p50 / p99 of --requests requests after a first one that fills the cache (its time is printed too); a same-run
baseline (one scan of the run's events in SQLite, and orjson parsing the JSON report: the floors); the load
average around the run.

    .venv/bin/python bench/report.py [--events 1000000] [--tests 400] [--blocks 118652] [--store /tmp/b.db]

More timings: add a (name, callable taking a `Bench`) to TIMINGS.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import AGENT_HEAD, E2E_LINE, OTHER_AGENTS

from auditcov.merge.bundle import export_bundle, merge_bundles
from auditcov.merge.cover.encoding import pack_counters  # the stored encoding, without Profiles
from auditcov.merge.cover.model import Block, Profile, gc_paused
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.snapshots import save_snapshot
from auditcov.merge.events import format_time
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import save_catalogue
from auditcov.merge.openapi.synth import random_name, requests_for
from auditcov.merge.reports.coderanges import run_ranges
from auditcov.merge.reports.diff import diff_runs
from auditcov.merge.reports.endpointcov import endpoint_coverage
from auditcov.merge.reports.formats import FILE_FORMATS, ReportOptions, render_report
from auditcov.merge.reports.queries import load_run_data
from auditcov.merge.store import open_store, open_store_readonly
from auditcov.sink.ingest import Ingestor
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests/fixtures/openapi/swagger-v1.36.json.gz"
SIGS = ("apps", "api-machinery", "node", "storage", "network", "auth", "cli", "scheduling")
TEST_SECONDS = 3  # each test's window
CORE_ENDPOINTS = 12  # endpoints every test hits (namespace, service account, pods, events, ...)
OWN_ENDPOINTS = 30
CORE_BLOCKS = 4_000  # blocks every test runs (request handling, admission, storage)
OWN_BLOCKS = 1_500
KUBE_SYSTEM = "kube-system"
FAILURES = ((404, 0.04), (409, 0.02), (500, 0.01))


@dataclass
class Bench:
    """What a timing reads: the store and its runs."""

    path: Path
    db: object
    base: str = "base"
    head: str = "head"
    models: tuple | None = None  # both runs' RunData, for timing the diff alone
    coverage: object = None  # run base's endpoint model, for its test spans (as the per-run model passes them)
    per_test: list | None = None  # run base's per-test code model, for timing its line ranges alone


def _report(output_format: str) -> Callable[[Bench], object]:
    return lambda bench: render_report(bench.db, bench.base, output_format, ReportOptions())


def _export(bench: Bench) -> object:
    with tempfile.TemporaryDirectory() as folder:
        return export_bundle(bench.path, bench.base, Path(folder) / "bundle", ReportOptions())


@functools.cache
def _bundles(path: Path) -> list[Path]:
    """The bundles of both runs, exported once for the merge timing (removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="auditcov-bundles-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return [export_bundle(path, run, folder / run, ReportOptions()).directory for run in ("base", "head")]


def _merge(bench: Bench) -> object:
    bundles = _bundles(bench.path)
    with tempfile.TemporaryDirectory() as folder:
        return merge_bundles(bundles, Path(folder) / "merged", ReportOptions(), run="both")


def _models(bench: Bench) -> tuple:
    """Both runs' models, built (and kept for timing the diff alone); what `diff.run_diff` reads."""
    bench.models = (load_run_data(bench.db, bench.base), load_run_data(bench.db, bench.head))
    return bench.models


def _paused(build: Callable, *args: object, **kwargs: object) -> object:
    """`build(*args, **kwargs)` with the cyclic collector paused, as the reports and the query cache read a model."""
    with gc_paused():
        return build(*args, **kwargs)


def _endpoints(bench: Bench) -> object:
    bench.coverage = _paused(endpoint_coverage, bench.db, bench.base)
    return bench.coverage


def _per_test(bench: Bench) -> list:
    """Run base's per-test code model as the per-run model builds it: with the endpoint model's test spans when that
    was timed before it (else it reads the windows from the events itself)."""
    spans = None if bench.coverage is None else bench.coverage.test_spans
    bench.per_test = _paused(per_test_coverage, bench.db, bench.base, event_spans=spans)
    return bench.per_test


#: name -> what it times (called with the open store). Add entries here for more figures.
TIMINGS: list[tuple[str, Callable[[Bench], object]]] = [
    *((f"report --format {name}", _report(name)) for name in FILE_FORMATS),
    ("per-run model (endpoints + code, cold)", lambda bench: load_run_data(bench.db, bench.base)),
    ("  of it: the endpoint model (endpointcov)", _endpoints),
    ("  of it: the per-test code model", _per_test),
    # Times the model too when it was not timed just before (--only without "code").
    (
        "  of it: the line ranges of that model (run_ranges)",
        lambda bench: _paused(run_ranges, bench.per_test or _per_test(bench)),
    ),
    ("diff base..head (both models, then diff_runs)", lambda bench: diff_runs(*_models(bench))),
    ("  of it: diff_runs of the two models just built", lambda bench: diff_runs(*bench.models)),
    ("export --artifacts (store copy, 6 reports, manifest)", _export),
    ("merge of the base and head bundles (--run both)", _merge),
]


class Traffic:
    """Events and coverage of one run, from a seed (see the module docstring)."""

    def __init__(self, catalogue, tests: int, events: int, blocks: int, seed: int, drop: bool) -> None:
        # The suite's shape (tests, their endpoints and blocks) is the same in both runs; the traffic differs.
        rng = random.Random(1)
        line = E2E_LINE.read_text()
        self.template = orjson.loads(line[line.index("{") :])
        self.template["level"] = "Metadata"
        current = [e for _, e in sorted(catalogue.endpoints.items()) if not e.deprecated]
        namespaced = [e for e in current if "{namespace}" in e.path and "proxy" not in e.path]
        core_ids = ("createCoreV1Namespace", "deleteCoreV1Namespace", "readCoreV1NamespacedServiceAccount",
                    "listCoreV1NamespacedPod", "createCoreV1NamespacedPod", "readCoreV1NamespacedPod",
                    "deleteCoreV1NamespacedPod", "listCoreV1NamespacedEvent", "readCoreV1NamespacedConfigMap",
                    "listCoreV1NamespacedServiceAccount", "readCoreV1Namespace", "listCoreV1Node")  # fmt: skip
        self.core = [catalogue.endpoints[op] for op in core_ids[:CORE_ENDPOINTS]]
        self.names = [self._test_name(i) for i in range(tests)]
        self.own = {name: rng.sample(namespaced, OWN_ENDPOINTS) for name in self.names}
        self.per_test = events // tests
        # About 24 blocks a file, as in a kube-apiserver build (118,652 blocks in about 5,000 files).
        self.blocks = [
            Block(f"k8s.io/kubernetes/pkg/part{i // 24 % 97}/file{i // 24}.go", 10 + 5 * (i % 24), 2,
                  12 + 5 * (i % 24), 30)
            for i in range(blocks)
        ]  # fmt: skip
        self.blocks.sort()
        self.core_blocks = rng.sample(range(blocks), CORE_BLOCKS)
        self.own_blocks = {name: rng.sample(range(blocks), OWN_BLOCKS) for name in self.names}
        self.rng = random.Random(seed)
        self.removed = set(self.names[::10]) if drop else set()
        if drop:  # head: some tests lose an endpoint and a few hundred blocks
            for name in self.names[1::7]:
                self.own[name] = self.own[name][1:]
                self.own_blocks[name] = self.own_blocks[name][300:]

    def _test_name(self, i: int) -> str:
        conformance = " [Conformance]" if i % 3 == 0 else ""
        sig = SIGS[i % len(SIGS)]
        return f"[sig-{sig}] Workload {i} should run its lifecycle and report every status change{conformance}"

    def event(self, clock: int, verb: str, uri: str, agent: str, namespace: str | None, code: int) -> dict:
        item = dict(self.template)
        moment = format_time(clock)
        item.update(
            auditID=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            verb=verb,
            requestURI=uri,
            userAgent=agent,
            objectRef={"resource": "pods", "namespace": namespace, "name": "x", "apiVersion": "v1"},
            responseStatus={"metadata": {}, "code": code},
            requestReceivedTimestamp=moment,
            stageTimestamp=moment,
        )
        return item

    def _code(self, verb: str) -> int:
        draw = self.rng.random()
        for code, share in FAILURES:
            if draw < share:
                return code
            draw -= share
        return 201 if verb == "create" else 200

    def events_of(self, index: int, start_us: int) -> list[dict]:
        """One test's events, within [start_us, start_us + TEST_SECONDS)."""
        rng, name = self.rng, self.names[index]
        namespace = f"{random_name(rng).split('-')[0]}-{index}"
        agent = f"{AGENT_HEAD}{name}"
        step = TEST_SECONDS * 1_000_000 // (self.per_test + 2)
        clock = start_us + step
        items = [self.event(clock, "create", "/api/v1/namespaces", agent, None, 201)]
        items[0]["objectRef"] = {"resource": "namespaces", "name": namespace, "apiVersion": "v1"}
        forms = {
            endpoint.operation_id: requests_for(endpoint, rng, {"namespace": namespace})
            for endpoint in (*self.core, *self.own[name])
        }
        mine = list(forms)
        system = [requests_for(endpoint, rng, {"namespace": KUBE_SYSTEM}) for endpoint in self.core]
        for _ in range(self.per_test - 1):
            clock += step
            draw = rng.random()
            if draw < 0.6:
                verb, uri = rng.choice(forms[rng.choice(mine)])
                items.append(self.event(clock, verb, uri, agent, namespace, self._code(verb)))
            elif draw < 0.9:  # controllers and the kubelet working for the test in its namespace
                verb, uri = rng.choice(forms[rng.choice(mine[: CORE_ENDPOINTS + 5])])
                items.append(self.event(clock, verb, uri, rng.choice(OTHER_AGENTS), namespace, self._code(verb)))
            else:
                verb, uri = rng.choice(rng.choice(system))
                items.append(self.event(clock, verb, uri, rng.choice(OTHER_AGENTS), KUBE_SYSTEM, 200))
        return items


def build_run(db, catalogue, run: str, traffic: Traffic, start_us: int) -> None:
    ingestor = Ingestor(db, matcher=Matcher(catalogue))
    counts = [0] * len(traffic.blocks)
    statements = [1 + i % 5 for i in range(len(traffic.blocks))]
    layout = None
    snapshots = []
    for index, name in enumerate(traffic.names):
        at_us = start_us + index * TEST_SECONDS * 1_000_000
        snapshots.append((at_us, pack_counters(counts)))
        if name in traffic.removed:
            continue
        items = traffic.events_of(index, at_us)
        for chunk in range(0, len(items), 5000):
            ingestor.ingest(run, items[chunk : chunk + 5000])
        for block in traffic.core_blocks:
            counts[block] += 3
        for block in traffic.own_blocks[name]:
            counts[block] += 1
        if index % 40 == 0:
            print(f"  {run}: {index} of {len(traffic.names)} tests", file=sys.stderr)
    snapshots.append((start_us + len(traffic.names) * TEST_SECONDS * 1_000_000, pack_counters(counts)))
    # The first snapshot stores the layout; the others are the same build: rows with their counters.
    first = Profile("atomic", dict(zip(traffic.blocks, statements, strict=True)), dict.fromkeys(traffic.blocks, 0))
    save_snapshot(db, run=run, process="kube-apiserver", at_us=snapshots[0][0], profile=first, source="bench",
                  now_us=start_us)  # fmt: skip
    layout = db.conn.execute("SELECT layout FROM cover_snapshots WHERE run = ?", (run,)).fetchone()[0]
    with db.conn:
        db.conn.executemany(
            "INSERT OR REPLACE INTO cover_snapshots (run, process, at_us, mode, layout, counters, source) "
            "VALUES (?, 'kube-apiserver', ?, 'atomic', ?, ?, 'bench')",
            [(run, at_us, layout, counters) for at_us, counters in snapshots[1:]],
        )


def build_store(path: Path, events: int, tests: int, blocks: int) -> None:
    catalogue = load_catalogue(SPEC)
    db = open_store(path)
    save_catalogue(db, catalogue, load_eligibility())
    start_us = 1_764_000_000_000_000
    for run, seed, drop in (("base", 1, False), ("head", 2, True)):
        started = time.perf_counter()
        build_run(db, catalogue, run, Traffic(catalogue, tests, events, blocks, seed, drop), start_us)
        print(f"  built run {run} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()


def best_of(repeat: int, call: Callable[[], object]) -> tuple[float, float, object]:
    """The best wall seconds and CPU seconds (this process: SQLite runs in it) of `repeat` calls, and a result."""
    walls, cpus, result = [], [], None
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        result = call()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


async def query_latencies(path: Path, requests: int) -> list[tuple[str, float, float, float]]:
    """Per route: (name, first request's seconds, p50, p99) over HTTP against a real sink."""
    sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(path)))
    rows = []
    try:
        async with aiohttp.ClientSession() as session:

            async def get(url: str) -> dict:
                async with session.get(sink.url + url) as response:
                    if response.status != 200:
                        raise SystemExit(f"GET {url}: {response.status} {await response.text()}")
                    return await response.json()

            started = time.perf_counter()
            tests = [row["test"] for row in (await get("/v1/runs/base/tests"))["tests"]]
            cold = time.perf_counter() - started
            endpoints = [
                row["endpoint"] for row in (await get(f"/v1/runs/base/tests/{quote(tests[1], safe='')}"))["endpoints"]
            ]
            files = list((await get(f"/v1/runs/base/tests/{quote(tests[1], safe='')}"))["code"]["files"])
            rng = random.Random(3)
            routes: list[tuple[str, Callable[[], str]]] = [
                ("GET /v1/runs", lambda: "/v1/runs"),
                ("GET /v1/runs/{run}/tests", lambda: "/v1/runs/base/tests"),
                ("GET .../tests?sig=apps&conformance=true", lambda: "/v1/runs/base/tests?sig=apps&conformance=true"),
                ("GET .../tests/{test}", lambda: f"/v1/runs/base/tests/{quote(rng.choice(tests), safe='')}"),
                ("GET .../endpoints/{operationId}", lambda: f"/v1/runs/base/endpoints/{rng.choice(endpoints)}"),
                ("GET .../code?file=", lambda: f"/v1/runs/base/code?file={quote(rng.choice(files))}"),
                ("GET .../code?file=&line=", lambda: f"/v1/runs/base/code?file={quote(rng.choice(files))}&line=14"),
                ("GET .../summary", lambda: "/v1/runs/base/summary"),
                ("GET .../untested", lambda: "/v1/runs/base/untested"),
                ("GET /v1/diff", lambda: "/v1/diff?base=base&head=head"),
            ]
            for name, url in routes:
                started = time.perf_counter()
                await get(url())
                first = time.perf_counter() - started
                latencies = []
                for _ in range(requests):
                    started = time.perf_counter()
                    await get(url())
                    latencies.append(time.perf_counter() - started)
                quantiles = statistics.quantiles(latencies, n=100)
                rows.append((name, first, quantiles[49], quantiles[98]))
            rows.insert(0, ("(first query: builds run base's model)", cold, 0.0, 0.0))
    finally:
        await sink.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events per run")
    parser.add_argument("--tests", type=int, default=400)
    parser.add_argument("--blocks", type=int, default=118_652, help="coverage blocks of the process under test")
    parser.add_argument("--store", type=Path, default=None, help="build the store here, or reuse it if it exists")
    parser.add_argument("--repeat", type=int, default=2, help="best of this many runs per timing")
    parser.add_argument("--requests", type=int, default=100, help="requests per query route")
    parser.add_argument("--only", nargs="*", default=[], help="only the TIMINGS whose names hold one of these words")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.store or Path(tmp) / "report-bench.db"
        if not path.exists():
            print(f"building {path}: 2 runs x {args.events:,} events, {args.tests} tests, {args.blocks:,} blocks",
                  file=sys.stderr)  # fmt: skip
            build_store(path, args.events, args.tests, args.blocks)
        load_before = os.getloadavg()
        db = open_store_readonly(path)
        events = db.conn.execute("SELECT COUNT(*) FROM events WHERE run = 'base'").fetchone()[0]
        tests = db.conn.execute("SELECT COUNT(*) FROM tests WHERE run = 'base'").fetchone()[0]
        print(f"store {path} ({path.stat().st_size / 2**20:.0f} MiB): run base {events:,} events, {tests} tests")
        bench = Bench(path, db)
        print(f"{'':48} {'wall':>8}   {'CPU':>8}")
        scan = best_of(args.repeat, lambda: db.conn.execute(
            "SELECT COUNT(*), SUM(code), MAX(operation_id) FROM events WHERE run = 'base'").fetchone())  # fmt: skip
        print(f"{'baseline: one scan of the run (SQLite)':48} {scan[0]:8.2f} s {scan[1]:8.2f} s")
        for name, call in TIMINGS:
            if args.only and not any(word in name for word in args.only):
                continue
            wall, cpu, result = best_of(args.repeat, lambda call=call: call(bench))
            print(f"{name:48} {wall:8.2f} s {cpu:8.2f} s")
            if name == "report --format json":
                parse = best_of(args.repeat, lambda result=result: orjson.loads(result))
                size = f"({len(result) / 2**20:.0f} MiB)"
                print(f"{'baseline: orjson parses that JSON report':48} {parse[0]:8.2f} s {parse[1]:8.2f} s {size}")
        db.conn.close()
        print(f"\nquery API over HTTP, {args.requests} requests per route (seconds for the first, then ms):")
        for name, first, p50, p99 in asyncio.run(query_latencies(path, args.requests)):
            figures = f"first {first * 1000:8.1f} ms" + (
                f"  p50 {p50 * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms" if p50 else ""
            )
            print(f"  {name:46} {figures}")
        print(f"\nload average (1, 5, 15 min) before: {load_before}, after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
