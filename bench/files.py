"""Audit-file throughput: reading, `auditcov import`, and `auditcov replay` to an `auditcov serve` sink.

Builds a gzip-compressed JSON-lines audit log of --events events (audit2rbac's 37 real Metadata-level events,
repeated with fresh auditIDs, about 600 bytes each), then times each step in wall-clock seconds and in CPU
seconds (the machine is shared, so CPU time is the steadier figure; events/s are per wall-clock second):

- reading it with `merge.eventfiles.AuditFile` alone (the parse floor);
- `auditcov import` into a fresh store (a subprocess, as a user runs it);
- `auditcov replay` (a subprocess) to `auditcov serve` (another subprocess) on loopback, with the default
  batch size of 400 and --concurrency; the sink's own count of stored events is checked at the end.

    .venv/bin/python bench/files.py [--events 200000] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from auditcov.merge.eventfiles import AuditFile

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "tests/fixtures/audit/audit2rbac/demo.log"
AUDITCOV = str(Path(sys.executable).with_name("auditcov"))


def write_log(path: Path, count: int) -> None:
    events = [orjson.loads(line) for line in DEMO.read_bytes().splitlines()]
    with gzip.open(path, "wb", compresslevel=1) as out:
        for number in range(count):
            event = events[number % len(events)]
            event["auditID"] = f"bench-{number:012d}"
            out.write(orjson.dumps(event) + b"\n")


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, count: int, action) -> None:
    started, started_cpu = time.perf_counter(), cpu_seconds()
    action()
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - started_cpu
    print(f"{label:<36} {seconds:7.2f} s wall {cpu:7.2f} s CPU  {count / seconds:9,.0f} events/s")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a running process, from /proc (utime + stime, fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stored_events(db: Path, run: str) -> int:
    answer = subprocess.run([AUDITCOV, "stats", "--db", str(db), "--run", run], check=True, capture_output=True)
    return orjson.loads(answer.stdout)["events"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditcov-bench-") as work:
        work = Path(work)
        log = work / "audit.log.gz"
        write_log(log, args.events)
        print(f"{args.events:,} events, {log.stat().st_size / 1e6:.1f} MB gzip, on {os.cpu_count()} CPUs")

        timed("read (AuditFile)", args.events, lambda: sum(1 for _ in AuditFile(log)))

        db = work / "import.db"
        timed(
            "auditcov import",
            args.events,
            lambda: subprocess.run(
                [AUDITCOV, "import", "--db", str(db), "--run", "bench", str(log)], check=True, capture_output=True
            ),
        )
        assert stored_events(db, "bench") == args.events

        sink_db = work / "sink.db"
        port = free_port()
        sink = subprocess.Popen(
            [AUDITCOV, "serve", "--db", str(sink_db), "--listen", f"127.0.0.1:{port}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            sink.stdout.readline()  # the banner's first line: the sink is listening
            sink_cpu = process_cpu_seconds(sink.pid)
            url = f"http://127.0.0.1:{port}/v1/audit/bench"
            timed(
                f"auditcov replay, concurrency {args.concurrency}",
                args.events,
                lambda: subprocess.run(
                    [AUDITCOV, "replay", "--to", url, "--concurrency", str(args.concurrency), str(log)],
                    check=True,
                    capture_output=True,
                ),
            )
            print(f"{'  the sink meanwhile':<36} {'':>12} {process_cpu_seconds(sink.pid) - sink_cpu:7.2f} s CPU")
        finally:
            sink.terminate()
            sink.wait(timeout=60)
        assert stored_events(sink_db, "bench") == args.events


if __name__ == "__main__":
    main()
