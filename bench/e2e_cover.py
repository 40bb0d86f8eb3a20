"""Benchmark: how much longer the end-to-end run takes with live per-test coverage.

Runs make e2e's sessions (tests/e2e/test_apiserver.py `run_session`: etcd, kube-apiserver, kube-controller-manager,
`auditcov serve` in blocking webhook mode, kubectl traffic, the focused conformance tests one at a time) in turn:
- `plain`: the ordinary kube-apiserver (the baseline);
- `cover, agent off`: the kube-apiserver built by `auditcov cover build`, its agent not started;
- `cover, agent on`: the same binary with its agent registered, snapshotted at every test boundary.
Each is run `--rounds` times, alternating, and the e2e.test time of each is printed with the ratio to the
baseline's, and the load average. The binaries must be built (hack/e2e/build.sh, hack/e2e/build-cover.sh).

Usage: .venv/bin/python bench/e2e_cover.py [--rounds 1] [--focus FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from test_apiserver import run_session
from traffic import OUT

KINDS = [("plain", "blocking", True), ("cover, agent off", "cover", False), ("cover, agent on", "cover", True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--focus", help="a focus file (focus.txt's format) instead of tests/e2e/focus.txt")
    options = parser.parse_args()
    if options.focus:
        os.environ["AUDITCOV_E2E_FOCUS"] = options.focus
    times: dict[str, list[float]] = {name: [] for name, _, _ in KINDS}
    for round_number in range(options.rounds):
        for name, mode, agent in KINDS:
            work = OUT / "bench" / f"{mode}-{'agent' if agent else 'plain'}-{round_number}"
            session = run_session(mode, f"bench-{mode}", work, agent=agent)
            if session.failed:
                print(f"{name}: {len(session.failed)} tests failed: {session.failed[:3]}")
            times[name].append(session.e2e_seconds)
            print(
                f"round {round_number + 1}, {name}: {len(session.passed)} tests in {session.e2e_seconds:.1f} s "
                f"(load average {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    baseline = statistics.median(times["plain"])
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\ne2e.test time, median of {options.rounds} (load average now {load}):")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:18s} {median:7.1f} s   {median / baseline:5.2f}x the plain apiserver")


if __name__ == "__main__":
    main()
