"""Live ingest throughput: concurrent clients POST 400-event EventLists to `auditcov serve` over loopback.

The sink runs as its own process (`auditcov serve`, a fresh store, synchronous=NORMAL unless --synchronous
FULL). The events are realistic Metadata-level audit events of about 1 KB: the real e2e event from the fixtures
with fresh auditIDs, a mix of e2e test agents, controllers and kubectl, of verbs, resources and namespaces, and
timestamps moving forward. Every batch holds new events, so every one is stored, and each answer (200) comes
after its batch is committed. Prints:

- events/s stored (durable), p50/p99 batch latency, the sink's peak RSS (VmHWM), its CPU seconds, split between
  the event loop thread and the store writer, and the bytes it wrote per event; the load average around the run;
- a parse-only baseline: orjson over the same bodies in this process, and the ratio between the two;
- a check that the store holds every event sent.

    .venv/bin/python bench/ingest.py [--batches 500] [--clients 4] [--synchronous NORMAL]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
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


def start_sink(db: Path, synchronous: str) -> tuple[subprocess.Popen, str]:
    sink = subprocess.Popen(
        [AUDITCOV, "serve", "--listen", "127.0.0.1:0", "--db", str(db), "--synchronous", synchronous],
        cwd=db.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in sink.stdout:
        if match := re.search(r"listening on (http\S+)", line):
            return sink, match.group(1)
    raise SystemExit("the sink did not start")


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


async def post_all(url: str, bodies: list[bytes], clients: int) -> tuple[float, list[float]]:
    """Wall seconds to have every body answered, and each batch's latency."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def client(session: aiohttp.ClientSession) -> None:
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
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - started, latencies


async def stored_events(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/v1/stats", params={"run": RUN}) as response:
        return (await response.json())["events"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=500, help="EventList POSTs in all (default 500)")
    parser.add_argument("--per-batch", type=int, default=400, help="events per batch (the apiserver's maximum)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--synchronous", choices=("NORMAL", "FULL"), default="NORMAL")
    parser.add_argument("--dir", default=None, help="where the store goes (default: a temporary directory)")
    args = parser.parse_args()

    bodies = make_bodies(args.batches, args.per_batch)
    events = args.batches * args.per_batch
    body_bytes = sum(map(len, bodies))
    print(f"{events} events in {args.batches} batches, {body_bytes / events:.0f} bytes/event, {args.clients} clients")
    parse_s = min(parse_only(bodies) for _ in range(3))

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        sink, url = start_sink(Path(tmp) / "bench.db", args.synchronous)
        try:
            load_before = os.getloadavg()[0]
            cpu_before, client_before = cpu_seconds(sink.pid), time.process_time()
            loop_before, written_before = cpu_seconds(sink.pid, sink.pid), bytes_written(sink.pid)
            wall_s, latencies = asyncio.run(post_all(url, bodies, args.clients))
            sink_cpu = cpu_seconds(sink.pid) - cpu_before
            loop_cpu = cpu_seconds(sink.pid, sink.pid) - loop_before
            written = bytes_written(sink.pid) - written_before
            load_after = os.getloadavg()[0]
            client_cpu = time.process_time() - client_before
            rss = peak_rss_mib(sink.pid)
            stored = asyncio.run(stored_events(url))
        finally:
            sink.send_signal(signal.SIGTERM)
            sink.wait(60)
    rate = events / wall_s
    quantiles = statistics.quantiles(latencies, n=100)
    print(f"sink (synchronous={args.synchronous}): {rate:,.0f} events/s durable ({wall_s:.2f} s wall)")
    print(f"batch latency: p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms")
    # The machine is shared: the sink's own CPU time says what it could do with a core to itself.
    print(
        f"sink peak RSS: {rss:.0f} MiB; sink CPU: {sink_cpu:.2f} s for {wall_s:.2f} s wall "
        f"({sink_cpu / events * 1e6:.1f} us/event, {events / sink_cpu:,.0f} events per sink CPU-second)"
    )
    # The event loop (parsing, attribution) and the writer thread (SQLite) share one GIL.
    print(
        f"  of which the event loop thread {loop_cpu / events * 1e6:.1f} us/event, the other threads (the store "
        f"writer) {(sink_cpu - loop_cpu) / events * 1e6:.1f} us/event; {written / events:,.0f} bytes written/event"
    )
    print(f"clients' CPU (this process, sharing the 2 cores): {client_cpu:.2f} s")
    print(f"load average (1 min) before and after: {load_before:.2f}, {load_after:.2f}")
    print(f"parse-only baseline (orjson.loads of the same bodies): {events / parse_s:,.0f} events/s")
    print(f"ratio sink / parse-only: {rate / (events / parse_s):.2f}")
    print(f"stored: {stored} of {events} events sent")
    if stored != events:
        raise SystemExit("the store does not hold every event sent")


if __name__ == "__main__":
    main()
