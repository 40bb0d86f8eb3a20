"""Matcher throughput in-process, on cached request shapes: prints events/s for two mixes.

Both mixes call every operation of the Kubernetes 1.36 spec in every form its action allows
(`merge.openapi.synth`), each call with fresh random names, so the raw URIs differ while the shapes repeat:

- "new names": every event has its own names (worst case: only the shape cache helps);
- "e2e-like": each object's path is used several times (1 + a geometric count, mean --repeat), as an e2e test
  polls an object it made, and as kubelets and controllers renew leases and post status. The queries differ
  (resourceVersion), so only the (verb, path) cache can catch the repeats.

A warm-up pass over other names fills the shape cache; then one timed pass over the measured events runs the
whole of `Matcher.match` on each: splitting off the query, the (verb, path) lookup and, on a miss, the shape key
and its lookup. Best of 3, in CPU time (`time.process_time`), since the machine is shared.

    .venv/bin/python bench/match.py [--events 1000000] [--repeat 4] [--spec FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from merge.openapi.catalogue import Catalogue, load_catalogue
from merge.openapi.matcher import Matcher
from merge.openapi.synth import requests_for

SPEC = Path(__file__).resolve().parent.parent / "tests/fixtures/openapi/swagger-v1.36.json.gz"


def make_events(catalogue: Catalogue, count: int, mean_repeat: float, rng: random.Random) -> list[tuple[str, str]]:
    endpoints = list(catalogue.endpoints.values())
    events: list[tuple[str, str]] = []
    while len(events) < count:
        for verb, uri in requests_for(rng.choice(endpoints), rng):
            times = 1 + (int(rng.expovariate(1 / mean_repeat)) if mean_repeat else 0)
            events.extend(
                (verb, f"{uri}{'&' if '?' in uri else '?'}resourceVersion={rng.randrange(10**6)}") for _ in range(times)
            )
    del events[count:]
    # Interleave, as concurrent tests and controllers do, without losing the repeats.
    rng.shuffle(events)
    return events


def measure(catalogue: Catalogue, warm_up: list[tuple[str, str]], events: list[tuple[str, str]]) -> float:
    """Events/s (CPU time) of one pass over `events` with the shape cache warmed by other names."""
    matcher = Matcher(catalogue)
    match = matcher.match
    for verb, uri in warm_up:
        match(verb, uri)
    matcher._by_path.clear()  # the names in `events` are new: nothing of them may be cached yet
    started = time.process_time()
    for verb, uri in events:
        match(verb, uri)
    return len(events) / (time.process_time() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=float, default=4.0, help="mean extra uses of a path in the e2e-like mix")
    parser.add_argument("--spec", default=str(SPEC))
    args = parser.parse_args()

    catalogue = load_catalogue(args.spec)
    print(f"spec: {args.spec} ({len(catalogue.endpoints)} operations), {args.events:,} events per mix")
    for label, mean_repeat in (("new names", 0.0), ("e2e-like", args.repeat)):
        warm_up = make_events(catalogue, args.events // 4, mean_repeat, random.Random(1))
        events = make_events(catalogue, args.events, mean_repeat, random.Random(2))
        paths = len({(verb, uri.partition("?")[0]) for verb, uri in events})
        best = max(measure(catalogue, warm_up, events) for _ in range(3))
        print(f"{label:>9}: {paths:,} distinct (verb, path) in {len(events):,} events: {best:,.0f} events/s")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
