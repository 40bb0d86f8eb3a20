"""Live ingest throughput: concurrent clients POST 400-event EventLists to `auditcov serve` over loopback, on
SQLite, on PostgreSQL, and with two sinks sharing one PostgreSQL database, in the same run.

Each sink runs as its own process (`auditcov serve`, a fresh store, synchronous=NORMAL unless --synchronous
FULL; PostgreSQL: a server the bench starts, as the tests do, one new database per measurement, commits durable
as PostgreSQL's defaults make them). The events are realistic Metadata-level audit events of about 1 KB: the
real e2e event from the fixtures with fresh auditIDs, a mix of e2e test agents, controllers and kubectl, of
verbs, resources and namespaces, and timestamps moving forward. Every batch holds new events, so every one is
stored, and each answer (200) comes after its batch is committed. Prints:

- per store: events/s stored (durable), p50/p99 batch latency, the sinks' CPU per event, split between the
  event loop thread and the store writer, PostgreSQL's CPU per event (all its processes), the sink's peak RSS
  (VmHWM) and the bytes it wrote per event; the load average around each run;
- a parse-only baseline: orjson over the same bodies in this process, and the ratio between the two;
- a check that the store holds every event sent.

    .venv/bin/python bench/ingest.py [--batches 500] [--clients 4] [--synchronous NORMAL]
                                     [--stores sqlite,postgres,postgres-2]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
E2E_LINE = ROOT / "tests/fixtures/audit/apisnoop/e2e-event-grep-output.txt"
AUDITCOV = str(Path(sys.executable).with_name("auditcov"))
RUN = "bench"
AGENT_HEAD = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- "
OTHER_AGENTS = (
    "kube-controller-manager/v1.36.0 (linux/amd64) kubernetes/abc1234/system:serviceaccount:kube-system:rs-controller",
    "kube-scheduler/v1.36.0 (linux/amd64) kubernetes/abc1234/scheduler",
    "kubelet/v1.36.0 (linux/amd64) kubernetes/abc1234",
    "kubectl/v1.36.0 (linux/amd64) kubernetes/abc1234",
)  # fmt: skip
SHAPES = (  # verb, resource, path under the namespace
    ("get", "pods", "pods/{name}"),
    ("list", "configmaps", "configmaps"),
    ("create", "secrets", "secrets"),
    ("update", "deployments", "deployments/{name}"),
    ("patch", "pods", "pods/{name}/status"),
    ("delete", "services", "services/{name}"),
    ("watch", "serviceaccounts", "serviceaccounts?fieldSelector=metadata.name%3Ddefault&watch=true"),
)


def make_bodies(batches: int, per_batch: int, seed: int = 7) -> list[bytes]:
    """`batches` EventList bodies of `per_batch` distinct, realistic Metadata-level events."""
    line = E2E_LINE.read_text()
    template = orjson.loads(line[line.index("{") :])
    template["level"] = "Metadata"
    rng = random.Random(seed)
    # e2e test names are long: "[sig-apps] Deployment deployment should support proportional scaling [Conformance]"
    tests = [
        f"[sig-apps] Workload {n} should run its lifecycle and report every status change [Conformance]"
        for n in range(150)
    ]
    clock = 1_764_000_000_000_000  # microseconds; advances a little per event
    bodies = []
    for _ in range(batches):
        items = []
        for _ in range(per_batch):
            item = copy.deepcopy(template)
            verb, resource, path = rng.choice(SHAPES)
            namespace = f"workload-{rng.randrange(400)}"
            name = f"obj-{rng.randrange(10_000)}"
            is_test = rng.random() < 0.6
            clock += rng.randrange(1, 40)
            moment = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(clock // 1_000_000)) + f".{clock % 1_000_000:06d}Z"
            item.update(
                auditID=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                verb=verb,
                requestURI=f"/api/v1/namespaces/{namespace}/{path.format(name=name)}",
                userAgent=AGENT_HEAD + rng.choice(tests) if is_test else rng.choice(OTHER_AGENTS),
                objectRef={
                    "resource": resource,
                    "namespace": namespace,
                    "name": name,
                    "uid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "apiVersion": "v1",
                    "resourceVersion": str(rng.randrange(10**6)),
                },
                annotations={
                    "authorization.k8s.io/decision": "allow",
                    "authorization.k8s.io/reason": f'RBAC: allowed by ClusterRoleBinding "e2e-{namespace}" of '
                    f'ClusterRole "edit" to ServiceAccount "default/{namespace}"',
                },
                responseStatus={"metadata": {}, "code": 201 if verb == "create" else 200},
                requestReceivedTimestamp=moment,
                stageTimestamp=moment,
            )
            items.append(item)
        bodies.append(
            orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
        )
    return bodies


def parse_only(bodies: list[bytes]) -> float:
    """Seconds for orjson to parse every body: the floor any Python sink pays."""
    started = time.perf_counter()
    for body in bodies:
        orjson.loads(body)
    return time.perf_counter() - started


def start_sink(db: str, folder: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """`auditcov serve` on a free loopback port with the store `db`, run in `folder`; the process and its URL."""
    sink = subprocess.Popen(
        [AUDITCOV, "serve", "--listen", "127.0.0.1:0", "--db", db, *flags],
        cwd=folder,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in sink.stdout:
        if match := re.search(r"listening on (http\S+)", line):
            return sink, match.group(1)
    raise SystemExit("the sink did not start")


def _server_stats(postmaster: int) -> dict[int, list[str]]:
    """The /proc stat fields of a PostgreSQL server's processes: the postmaster and those it started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == postmaster or int(fields[1]) == postmaster:
            found[int(entry.name)] = fields
    return found


def server_pids(postmaster: int) -> list[int]:
    return list(_server_stats(postmaster))


def server_cpu_seconds(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster and every process it started (backends, WAL
    writer, checkpointer), those gone included (a process's cumulative children's time)."""
    ticks = sum(sum(int(value) for value in fields[11:15]) for fields in _server_stats(postmaster).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """CPU seconds of a process, or of one of its threads."""
    stat = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bytes_written(pid: int) -> int:
    """Bytes the process has passed to write calls (the store's WAL and checkpoints)."""
    return int(re.search(r"wchar: (\d+)", Path(f"/proc/{pid}/io").read_text()).group(1))


async def post_all(urls: list[str], bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Wall seconds to have every body answered, and each batch's latency; client n sends to sink n mod sinks."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession, url: str) -> None:
        while queue:
            body = queue.pop()
            sent = time.perf_counter()
            async with session.post(f"{url}/v1/audit/{RUN}?timeout=30s", data=body, headers=headers) as response:
                answer = await response.json()
                if response.status != 200 or answer["accepted"] != body.count(b'"auditID"'):
                    raise SystemExit(f"unexpected answer {response.status}: {answer}")
            latencies.append(time.perf_counter() - sent)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session, urls[n % len(urls)]) for n in range(clients)))
        return time.perf_counter() - started, latencies


async def stored_events(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/stats", params={"run": RUN}) as response:
        return (await response.json())["events"]


@dataclass
class Result:
    store: str
    sinks: int
    rate: float
    wall_s: float
    p50_ms: float
    p99_ms: float
    sink_cpu: float  # all sinks
    loop_cpu: float  # their event loop threads
    server_cpu: float | None  # PostgreSQL's processes
    rss_mib: float
    written: int
    load: tuple[float, float]


def measure(store: str, db: str, sinks: int, bodies: list[bytes], args, folder: Path, postmaster: int | None) -> Result:
    """Send every body to `sinks` fresh sinks on the store `db`; check the store holds every event."""
    started = [start_sink(db, folder, "--synchronous", args.synchronous) for _ in range(sinks)]
    processes, urls = [process for process, _ in started], [url for _, url in started]
    try:
        load_before = os.getloadavg()[0]
        cpu_before = [cpu_seconds(process.pid) for process in processes]
        loop_before = [cpu_seconds(process.pid, process.pid) for process in processes]
        written_before = sum(bytes_written(process.pid) for process in processes)
        server_before = server_cpu_seconds(postmaster) if postmaster else 0.0
        wall_s, latencies = asyncio.run(post_all(urls, bodies, args.clients))
        sink_cpu = sum(cpu_seconds(process.pid) - before for process, before in zip(processes, cpu_before, strict=True))
        loop_cpu = sum(
            cpu_seconds(process.pid, process.pid) - b for process, b in zip(processes, loop_before, strict=True)
        )
        written = sum(bytes_written(process.pid) for process in processes) - written_before
        server_cpu = server_cpu_seconds(postmaster) - server_before if postmaster else None
        load_after = os.getloadavg()[0]
        rss = max(peak_rss_mib(process.pid) for process in processes)
        stored = asyncio.run(stored_events(urls[0]))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    events = sum(body.count(b'"auditID"') for body in bodies)
    if stored != events:
        raise SystemExit(f"{store} with {sinks} sink(s): the store holds {stored} of the {events} events sent")
    quantiles = statistics.quantiles(latencies, n=100)
    return Result(
        store, sinks, events / wall_s, wall_s, quantiles[49] * 1000, quantiles[98] * 1000, sink_cpu, loop_cpu,
        server_cpu, rss, written, (load_before, load_after),
    )  # fmt: skip


def postgres_server(folder: Path):
    """A PostgreSQL server of the bench's own, as the tests start theirs (tests/pgserver.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import PostgresServer, postgres_bin

    bindir = postgres_bin()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (hack/test-deps.sh installs it)")
    server = PostgresServer(folder, bindir)
    server.init()
    server.start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=500, help="EventList POSTs in all (default 500)")
    parser.add_argument("--per-batch", type=int, default=400, help="events per batch (the apiserver's maximum)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in all (default 4)")
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument(
        "--stores",
        default="sqlite,postgres,postgres-2",
        help="what to measure, in order: sqlite (one sink), postgres (one sink), postgres-2 (two sinks on one "
        "database); default all three",
    )
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temporary directory)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="PostgreSQL on the last core, the bench and its sinks on the others: as with a database server of its "
        "own (the sinks' share of the machine is then the same with either store)",
    )
    args = parser.parse_args()

    bodies = make_bodies(args.batches, args.per_batch)
    events = args.batches * args.per_batch
    body_bytes = sum(map(len, bodies))
    print(f"{events} events in {args.batches} batches, {body_bytes / events:.0f} bytes/event, {args.clients} clients")
    parse_s = min(parse_only(bodies) for _ in range(3))
    parse_rate = events / parse_s

    results = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        wanted = args.stores.split(",")
        server = None
        if any(name.startswith("postgres") for name in wanted):
            # Its own temporary folder: the server may run as another user (tests/pgserver.py).
            server = postgres_server(Path(tempfile.mkdtemp(prefix="auditcov-bench-postgres-")))
        if args.pin:
            cores = sorted(os.sched_getaffinity(0))
            if len(cores) < 2:
                raise SystemExit("--pin needs two cores")
            if server is not None:
                for pid in server_pids(server.process.pid):
                    os.sched_setaffinity(pid, {cores[-1]})  # its later backends inherit the postmaster's
            os.sched_setaffinity(0, set(cores[:-1]))  # the sinks inherit this
            print(f"pinned: PostgreSQL on core {cores[-1]}, the bench and its sinks on {cores[:-1]}")
        try:
            for number, name in enumerate(wanted):
                if name == "sqlite":
                    results.append(measure("SQLite", str(folder / f"bench-{number}.db"), 1, bodies, args, folder, None))
                elif name in ("postgres", "postgres-2"):
                    db = server.new_database()
                    sinks = 2 if name == "postgres-2" else 1
                    results.append(measure("PostgreSQL", db, sinks, bodies, args, folder, server.process.pid))
                else:
                    raise SystemExit(f"--stores: {name!r} is not sqlite, postgres or postgres-2")
        finally:
            if server is not None:
                server.stop()
                shutil.rmtree(server.folder, ignore_errors=True)

    print(f"parse-only baseline (orjson.loads of the same bodies, this process): {parse_rate:,.0f} events/s")
    for result in results:
        label = f"{result.store}, {result.sinks} sink{'s' if result.sinks > 1 else ''}"
        print(
            f"{label}: {result.rate:,.0f} events/s durable ({result.wall_s:.2f} s wall, "
            f"ratio to parse-only {result.rate / parse_rate:.2f}); batch latency p50 {result.p50_ms:.1f} ms, "
            f"p99 {result.p99_ms:.1f} ms"
        )
        # The machine is shared: CPU time per event says what each part could do with a core to itself.
        server = "" if result.server_cpu is None else f", PostgreSQL {result.server_cpu / events * 1e6:.1f} us/event"
        print(
            f"  CPU: sink {result.sink_cpu / events * 1e6:.1f} us/event (event loop "
            f"{result.loop_cpu / events * 1e6:.1f}, store writer and others "
            f"{(result.sink_cpu - result.loop_cpu) / events * 1e6:.1f}){server}; sink peak RSS {result.rss_mib:.0f} "
            f"MiB; {result.written / events:,.0f} bytes written by the sink per event; load average (1 min) "
            f"{result.load[0]:.2f} before, {result.load[1]:.2f} after"
        )
    print(f"stored: every one of the {events} events sent, in each run")


if __name__ == "__main__":
    main()
