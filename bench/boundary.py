"""Benchmark: what one coverage boundary costs the apiserver, and what one test's delta costs the report.

The sink runs as its own process (`auditcov serve`, a fresh store, agent_timeout 0.2 s unless --timeout). A Go
agent is registered in run `with-agent`; run `baseline` has none. Each round POSTs, as an apiserver in blocking
webhook mode does, a one-event EventList that opens a new test (a RequestReceived with an e2e user agent) to
each run, in turn, and times the answer: the difference is the boundary (the sink asks the agent for its
counters and stores them before answering). Between rounds the program does some work, and the test's closing
event is sent, so each test has a real delta. Then it waits for the sink to decode the raw snapshots and times
`per_test_coverage(db, run, test=T)` (one test's delta and lines) from the stored snapshots, warm (one process,
its layout read once) and cold (a fresh process per test, as `auditcov cover report --test T` is), each beside
the time to read the two snapshot rows at the test's edges from SQLite, and the in-memory decoding a report does
of snapshots a killed sink left raw.

The agent: `--agent-url URL` (one already running, e.g. a kube-apiserver built with `auditcov cover build`),
`--agent-binary BIN [--agent-arg ARG ...]` (started here with AUDITCOV_AGENT=127.0.0.1:0), or by default a
generated Go program of `--blocks` blocks (about 300,000, like kube-apiserver's) built with
`auditcov cover build` and cached in ~/.cache/auditcov-bench.

Usage: .venv/bin/python bench/boundary.py [--rounds 200] [--blocks 300000] [--agent-url URL | --agent-binary BIN]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson
from ingest import start_sink  # bench/ is the script's folder, first on sys.path

from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.snapshots import decode_snapshot, write_meta, write_raw_snapshot
from auditcov.merge.events import format_time, now_us
from auditcov.merge.store import open_store, open_store_readonly, transaction

AUDITCOV = Path(sys.executable).parent / "auditcov"
CACHE = Path.home() / ".cache" / "auditcov-bench"
E2E_AGENT = "e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- "
JSON = {"Content-Type": "application/json"}
#: Blocks in one generated function (entry, if/else, loop, its if, switch cases, return).
BLOCKS_PER_FUNCTION = 10
PACKAGES = 8

FUNCTION = """
func F{n}(x int) int {{
	if x%2 == 0 {{
		x += {n} % 7
	}} else {{
		x -= 1
	}}
	for i := 0; i < x%4; i++ {{
		if i == 2 {{
			x++
		}}
	}}
	switch x % 3 {{
	case 0:
		x *= 2
	case 1:
		x += 7
	default:
		x--
	}}
	return x
}}
"""

MAIN = """// Command synthetic is bench/boundary.py's stand-in for kube-apiserver: {functions} generated functions of
// about {per} coverage blocks each; a third run at start-up, /work?n=N runs N more, chosen at random.
package main

import (
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"strconv"
{imports}
)

var table []func(int) int

func main() {{
{appends}
	for i := 0; i < len(table)/3; i++ {{
		table[i*3](i)
	}}
	http.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {{
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := 0; i < n; i++ {{
			table[rand.Intn(len(table))](i)
		}}
		fmt.Fprintln(w, "ok")
	}})
	if err := http.ListenAndServe(os.Args[1], nil); err != nil {{
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}}
}}
"""


def build_synthetic(blocks: int) -> Path:
    """The generated program (cached by size), built with `auditcov cover build`."""
    functions = blocks // BLOCKS_PER_FUNCTION
    folder = CACHE / f"synthetic-{functions}"
    binary = folder / "synthetic"
    if binary.exists():
        return binary
    source = folder / "src"
    per_package = -(-functions // PACKAGES)
    for package in range(PACKAGES):
        directory = source / f"p{package}"
        directory.mkdir(parents=True, exist_ok=True)
        first, last = package * per_package, min(functions, (package + 1) * per_package)
        for start in range(first, last, 500):
            body = "".join(FUNCTION.format(n=n) for n in range(start, min(last, start + 500)))
            (directory / f"f{start}.go").write_text(f"package p{package}\n{body}")
        entries = ", ".join(f"F{n}" for n in range(first, last))
        (directory / "table.go").write_text(f"package p{package}\n\nvar Table = []func(int) int{{{entries}}}\n")
    (source / "go.mod").write_text("module example.com/synthetic\n\ngo 1.22\n")
    (source / "main.go").write_text(
        MAIN.format(
            functions=functions,
            per=BLOCKS_PER_FUNCTION,
            imports="\n".join(f'\t"example.com/synthetic/p{p}"' for p in range(PACKAGES)),
            appends="\n".join(f"\ttable = append(table, p{p}.Table...)" for p in range(PACKAGES)),
        )
    )
    print(f"building a synthetic program of {functions:,} functions (once; cached in {folder}) ...", flush=True)
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
    subprocess.run(
        [AUDITCOV, "cover", "build", "-C", str(source), "-o", str(binary), ".", "--", "-coverpkg=./..."],
        env=env,
        check=True,
    )
    return binary


def start_agent(binary: Path, args: list[str]) -> tuple[subprocess.Popen, str]:
    """Run `binary` with the agent on a free loopback port; its agent's URL from its log."""
    process = subprocess.Popen(
        [str(binary), *args],
        env={**os.environ, "AUDITCOV_AGENT": "127.0.0.1:0"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    for line in process.stderr:
        if match := re.match(r"auditcov-agent: listening on (http\S+)", line):
            return process, match[1]
    raise SystemExit(f"{binary}: the agent did not start")


def opening_event(test: str, stage: str, received_us: int) -> bytes:
    item = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": str(uuid.uuid5(uuid.NAMESPACE_URL, test + stage)),
        "stage": stage,
        "requestURI": "/api/v1/namespaces/default/pods",
        "verb": "list",
        "user": {"username": "admin"},
        "userAgent": E2E_AGENT + test,
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": format_time(received_us),
        "stageTimestamp": format_time(now_us()),
    }
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": [item]})


async def post_timed(session: aiohttp.ClientSession, url: str, body: bytes) -> float:
    started = time.perf_counter()
    async with session.post(url, data=body, headers=JSON) as response:
        await response.read()
        assert response.status == 200, response.status
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure(sink: str, agent: str, token: str, rounds: int, work_url: str | None, db: Path) -> dict:
    async with aiohttp.ClientSession() as session:
        registration = {"process": "agent", "kind": "go", "address": agent, **({"token": token} if token else {})}
        async with session.post(f"{sink}/v1/runs/with-agent/agents", json=registration) as response:
            assert response.status == 200, await response.text()
        deadline = time.monotonic() + 120
        while not _count(db, "SELECT COUNT(*) FROM cover_meta"):  # the meta-data, fetched in the background
            if time.monotonic() > deadline:
                raise SystemExit("the sink never got the agent's meta-data")
            await asyncio.sleep(0.2)
        baseline, boundary = [], []
        for n in range(rounds):
            test = f"[sig-bench] test {n}"
            for run, times in (("baseline", baseline), ("with-agent", boundary)):
                received = now_us()
                url = f"{sink}/v1/audit/{run}"
                times.append(await post_timed(session, url, opening_event(test, "RequestReceived", received)))
                if run == "with-agent" and work_url:
                    async with session.get(work_url) as response:
                        await response.read()
                await post_timed(session, url, opening_event(test, "ResponseComplete", received))
        async with session.post(f"{sink}/v1/runs/with-agent/snapshots") as response:
            assert response.status == 200
    return {"baseline": baseline, "boundary": boundary}


def _count(db: Path, sql: str) -> float:
    if not db.exists():
        return 0
    store = open_store_readonly(db)
    try:
        return store.conn.execute(sql).fetchone()[0] or 0
    finally:
        store.conn.close()


#: One test's delta and lines in a fresh process: seconds to read its two edge rows (own connection), then for
#: the delta from opening the store on (imports not counted: they are the same for every command).
COLD_DELTA = """
import sys, time
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.store import open_store_readonly
sys.path.insert(0, sys.argv[1])
from boundary import read_edge_rows
store = open_store_readonly(sys.argv[2])
rows = read_edge_rows(store, int(sys.argv[3]))
store.conn.close()
started, cpu = time.perf_counter(), time.process_time()
store = open_store_readonly(sys.argv[2])
(result,) = per_test_coverage(store, "with-agent", test=f"[sig-bench] test {sys.argv[3]}")
result.lines()
print(rows, time.perf_counter() - started, time.process_time() - cpu)
"""


def read_edge_rows(store, n: int) -> float:
    """Seconds to read the counters of the snapshots at test n's edges (the boundary opening it, and the next)."""
    started = time.perf_counter()
    rows = store.conn.execute(
        "SELECT counters FROM cover_snapshots WHERE id IN "
        "(SELECT id FROM cover_snapshots WHERE run = 'with-agent' ORDER BY at_us LIMIT 2 OFFSET ?)",
        (n,),
    ).fetchall()
    assert len(rows) == 2 and all(rows[0] + rows[1]), rows
    return time.perf_counter() - started


def delta_times(db: Path, rounds: int) -> tuple[dict[str, list[float]], int, int]:
    """Seconds for one test's delta and lines, for a spread of tests, warm and cold, each with the edge rows'
    read beside it; the blocks of the last test's delta, and of the layout."""
    tests = list(range(0, rounds, max(1, rounds // 10)))
    store = open_store_readonly(db)
    try:
        seconds = {"warm": [], "warm rows": [], "warm cpu": [], "cold": [], "cold rows": [], "cold cpu": []}
        per_test_coverage(store, "with-agent", test="[sig-bench] test 0")  # the layout, read once per process
        for n in tests:
            seconds["warm rows"].append(read_edge_rows(store, n))
            started, cpu = time.perf_counter(), time.process_time()
            (result,) = per_test_coverage(store, "with-agent", test=f"[sig-bench] test {n}")
            result.lines()
            seconds["warm"].append(time.perf_counter() - started)
            seconds["warm cpu"].append(time.process_time() - cpu)
            changed = len(result.profile.counts)
        blocks = store.conn.execute("SELECT MAX(block_count) FROM cover_layouts").fetchone()[0]
    finally:
        store.conn.close()
    for n in tests:
        command = [sys.executable, "-c", COLD_DELTA, str(Path(__file__).parent), str(db), str(n)]
        figures = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()
        for key, value in zip(("cold rows", "cold", "cold cpu"), figures, strict=True):
            seconds[key].append(float(value))
    return seconds, changed, blocks


async def raw_decode_times(agent: str, token: str, source_db: Path, folder: Path) -> list[float]:
    """What a report pays for snapshots a killed sink left raw: counters fetched from the agent into a store of
    their own, decoded in memory (the first parses the meta-data)."""
    db = open_store(folder / "raw.db")
    (meta,) = open_store_readonly(source_db).conn.execute("SELECT data FROM cover_meta").fetchone()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        raws = []
        for _ in range(4):
            async with session.get(f"{agent}/v1/counters", headers=headers) as response:
                raws.append(await response.read())
    with transaction(db.conn):
        write_meta(db.conn, meta, where="agent")
        ids = [
            write_raw_snapshot(db.conn, run="r", process="p", at_us=n, taken_us=n, raw=raw, source="agent")
            for n, raw in enumerate(raws)
        ]
    seconds = []
    for snapshot_id in ids:
        started = time.perf_counter()
        decode_snapshot(db, snapshot_id)
        seconds.append(time.perf_counter() - started)
    db.conn.close()
    return seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="tests opened in each run")
    parser.add_argument("--blocks", type=int, default=300_000, help="blocks of the generated program")
    parser.add_argument("--timeout", type=float, default=0.2, help="the sink's agent_timeout, seconds")
    parser.add_argument("--work", type=int, default=200, help="generated functions run per test (generated only)")
    parser.add_argument("--agent-url", help="an agent already running (http://127.0.0.1:PORT)")
    parser.add_argument("--agent-token-file", help="its bearer token, if it needs one")
    parser.add_argument("--agent-binary", type=Path, help="a program built with `auditcov cover build`, run here")
    parser.add_argument("--agent-arg", action="append", default=[], help="an argument for --agent-binary")
    args = parser.parse_args()

    program, work_url = None, None
    token = Path(args.agent_token_file).read_text().strip() if args.agent_token_file else ""
    if args.agent_url:
        agent = args.agent_url.rstrip("/")
    elif args.agent_binary:
        program, agent = start_agent(args.agent_binary, args.agent_arg)
    else:
        port = free_port()
        program, agent = start_agent(build_synthetic(args.blocks), [f"127.0.0.1:{port}"])
        work_url = f"http://127.0.0.1:{port}/work?n={args.work}"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "boundary.db"
        sink, url = start_sink(str(db), db.parent, "--agent-timeout", str(args.timeout))
        try:
            load_before = os.getloadavg()
            times = asyncio.run(measure(url, agent, token, args.rounds, work_url, db))
            load_after = os.getloadavg()
            started = time.perf_counter()
            pending = "SELECT COUNT(*) FROM cover_snapshots WHERE typeof(raw) <> 'null' AND typeof(counters) = 'null'"
            while _count(db, pending):
                time.sleep(0.2)
            decode_wait = time.perf_counter() - started
            missing = _count(db, "SELECT COUNT(*) FROM cover_snapshots WHERE missing IS NOT NULL")
            counters_size = _count(db, "SELECT AVG(LENGTH(counters)) FROM cover_snapshots")
            deltas, changed, blocks = delta_times(db, args.rounds)
            load_deltas = os.getloadavg()
            raw = asyncio.run(raw_decode_times(agent, token, db, Path(tmp)))
        finally:
            sink.terminate()
            sink.wait()
            if program is not None:
                program.terminate()
                program.wait()

    baseline, boundary = times["baseline"], times["boundary"]
    ms = 1000
    print(f"agent:                      {agent} ({blocks:,} blocks in its layout)")
    print(f"rounds:                     {args.rounds} tests opened per run, agent_timeout {args.timeout} s")
    print(f"load average:               {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    for name, values in (("baseline (no agent):", baseline), ("opening a test (boundary):", boundary)):
        print(
            f"{name:28}{percentile(values, 0.5) * ms:6.1f} ms p50 {percentile(values, 0.99) * ms:6.1f} ms p99 "
            f"{max(values) * ms:6.1f} ms max"
        )
    extra = [b - a for a, b in zip(baseline, boundary, strict=True)]
    print(
        f"extra time of a boundary:   {percentile(extra, 0.5) * ms:6.1f} ms p50 {percentile(extra, 0.99) * ms:6.1f} ms "
        "p99 (per round: boundary minus baseline)"
    )
    print(f"missing snapshots:          {missing} of {args.rounds + 1}")
    print(
        f"decoding caught up:         {decode_wait:.1f} s after the last boundary "
        f"(stored counters: {counters_size / 1024:.0f} KiB a snapshot)"
    )
    for kind in ("warm", "cold"):
        rows, cpu = deltas[f"{kind} rows"], deltas[f"{kind} cpu"]
        print(
            f"one test's delta, {kind}:     {statistics.median(deltas[kind]) * ms:5.1f} ms median "
            f"{max(deltas[kind]) * ms:5.1f} ms max, CPU {statistics.median(cpu) * ms:.1f} ms median (reading its two "
            f"snapshot rows: {statistics.median(rows) * ms:.1f} ms median {max(rows) * ms:.1f} ms max)"
        )
    print(
        f"                            ({len(deltas['warm'])} tests; {changed:,} changed blocks in the last; cold: a "
        f"fresh process each, from opening the store; load average {load_deltas[0]:.2f})"
    )
    print(
        f"decoding a raw snapshot:    {raw[0] * ms:.0f} ms the first (meta-data parsed), "
        f"{statistics.median(raw[1:]) * ms:.0f} ms each after"
    )


if __name__ == "__main__":
    main()
