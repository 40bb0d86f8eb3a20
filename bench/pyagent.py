"""Benchmark: what one boundary costs at the Python coverage agent (merge/cover/pyagent.py).

At a boundary the sink POSTs /v1/context to a Python agent: coverage.py flushes what its tracers collected since
the last switch into its SQLite data file and starts the new context. This starts tests/pyservice under
`auditcov cover run`, and each round switches to a new test, sends the service a few requests (so every switch
has lines to flush) and times the switch's round trip; the baseline is GET /v1/health on the same agent in the
same round (the same HTTP path, no flush). At the end it times GET /v1/data (a save and the file's bytes).

Usage: .venv/bin/python bench/pyagent.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICE_DIR = ROOT / "tests" / "pyservice"
AUDITCOV = Path(sys.executable).with_name("auditcov")
SERVICE = ["python", "-m", "pyservice", "--port-file"]
REQUESTS = ["/square?side=3", "/circle?r=2", "/primes?n=200"]


def timed(port: int, method: str, path: str, body: bytes | None = None) -> float:
    """One request's round trip in ms (a new connection, as the agent closes each one)."""
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status == 200, (method, path, response.status)
    return elapsed


def wait_for(predicate, what: str):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise SystemExit(f"no {what} after 30 s")


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):6.2f} ms  p99 {p99:6.2f} ms  max {ordered[-1]:6.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        port_file, stderr_path = Path(workdir) / "port", Path(workdir) / "stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [AUDITCOV, "cover", "run", "--source", SERVICE_DIR / "pyservice", "--", *SERVICE, port_file],
                cwd=SERVICE_DIR,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            port = int(wait_for(lambda: port_file.is_file() and port_file.read_text(), "service port"))
            line = wait_for(lambda: "listening on http" in stderr_path.read_text() and stderr_path.read_text(), "agent")
            agent = int(line.split("listening on http://127.0.0.1:")[1].split()[0])
            switches, healths = [], []
            for round_number in range(options.rounds):
                for path in REQUESTS:
                    timed(port, "GET", path)
                body = json.dumps({"context": f"test {round_number}"}).encode()
                switches.append(timed(agent, "POST", "/v1/context", body))
                healths.append(timed(agent, "GET", "/v1/health"))
            data = [timed(agent, "GET", "/v1/data") for _ in range(10)]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    print(f"Python agent, {options.rounds} rounds of {len(REQUESTS)} requests, {os.cpu_count()} CPUs")
    print(f"  POST /v1/context (flush + switch)  {percentiles(switches)}")
    print(f"  GET /v1/health (baseline)          {percentiles(healths)}")
    print(f"  GET /v1/data ({options.rounds + 1} contexts)".ljust(37) + percentiles(data))
    print("  load average: " + " ".join(f"{value:.2f}" for value in os.getloadavg()))


if __name__ == "__main__":
    main()
