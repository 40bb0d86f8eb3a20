"""Matcher throughput in-process, on cached request shapes: prints events/s for two mixes.

Both mixes call every operation of the Kubernetes 1.36 spec in every form its action allows
(`merge.openapi.synth`), each call with fresh random names (and lists and watches with a fresh
`resourceVersion`), so the raw URIs differ while the shapes repeat:

- "new names": every event has names of its own (the worst case: only the shape cache can help);
- "e2e-like": each object's path is used several times (1 + an exponential count, mean --repeat), as an e2e test
  polls what it made and kubelets and controllers renew leases and post status; repeats are shuffled into the
  stream, so only the (verb, path) cache can catch them.

- "real e2e": the (verb, requestURI) of every audit event of two real runs of Kubernetes v1.36.3's e2e.test
  (88 conformance tests, `make e2e`, batch then blocking webhook mode; bench/data/e2e-v1.36.3-requests.jsonl.gz):
  the shapes learnt from the first run, the second run measured (its namespaces and names are new).

The stream is cut into EventLists of 400, as the apiserver sends them. As in the sink, each batch is decoded from
JSON just before it is matched (decoding is not timed; it puts the batch in the CPU caches, where the sink has
it). A warm-up pass over other names fills the shape cache first. Timed: the whole of `Matcher.match` for every
event (splitting off the query, the (verb, path) lookup, and on a miss the shape key and its lookup), in CPU time
(`time.process_time`) because the machine is shared; the load average is printed too.

    .venv/bin/python bench/match.py [--events 1000000] [--repeat 4] [--spec FILE]
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import time
from pathlib import Path

import orjson

from auditcov.merge.openapi.catalogue import Catalogue, load_catalogue
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.synth import requests_for

SPEC = Path(__file__).resolve().parent.parent / "tests/fixtures/openapi/swagger-v1.36.json.gz"
REAL_E2E = Path(__file__).resolve().parent / "data/e2e-v1.36.3-requests.jsonl.gz"
BATCH = 400


def make_events(catalogue: Catalogue, count: int, mean_repeat: float, rng: random.Random) -> list[list[str]]:
    """[verb, requestURI] pairs: every form of random operations, each path used 1 + Exp(mean_repeat) times."""
    endpoints = list(catalogue.endpoints.values())
    events: list[list[str]] = []
    while len(events) < count:
        for verb, uri in requests_for(rng.choice(endpoints), rng):
            times = 1 + (int(rng.expovariate(1 / mean_repeat)) if mean_repeat else 0)
            events.extend([verb, _with_query(verb, uri, rng)] for _ in range(times))
    del events[count:]
    rng.shuffle(events)  # interleaved, as concurrent tests and controllers are
    return events


def _with_query(verb: str, uri: str, rng: random.Random) -> str:
    """The query a client sends with it: lists and watches carry a fresh resourceVersion; other calls, as a
    rule, nothing."""
    if verb == "list":
        return f"{uri}?limit=500&resourceVersion={rng.randrange(10**6)}"
    if verb == "watch":
        return uri.replace("resourceVersion=1", f"resourceVersion={rng.randrange(10**6)}")
    return uri


def real_e2e_runs() -> tuple[list[list[str]], list[list[str]]]:
    """The [verb, requestURI] of the two recorded e2e runs: (batch mode's, blocking mode's)."""
    runs: dict[str, list[list[str]]] = {"batch": [], "blocking": []}
    with gzip.open(REAL_E2E) as lines:
        for line in lines:
            mode, verb, uri = orjson.loads(line)
            runs[mode].append([verb, uri])
    return runs["batch"], runs["blocking"]


def measure(catalogue: Catalogue, warm_up: list[list[str]], batches: list[bytes]) -> float:
    """Events/s (CPU time) matching the batches in order, the shape cache warmed by other names."""
    matcher = Matcher(catalogue)
    match = matcher.match
    for verb, uri in warm_up:
        match(verb, uri)
    matcher._by_path.clear()  # the measured names are new: none of their paths may be cached yet
    spent = 0.0
    events = 0
    for body in batches:
        batch = orjson.loads(body)
        started = time.process_time()
        for verb, uri in batch:
            match(verb, uri)
        spent += time.process_time() - started
        events += len(batch)
    return events / spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=float, default=4.0, help="mean extra uses of a path in the e2e-like mix")
    parser.add_argument("--spec", default=str(SPEC))
    args = parser.parse_args()

    catalogue = load_catalogue(args.spec)
    print(f"spec: {args.spec} ({len(catalogue.endpoints)} operations); batches of {BATCH}")
    mixes = [
        (label, make_events(catalogue, args.events // 4, mean_repeat, random.Random(1)),
         make_events(catalogue, args.events, mean_repeat, random.Random(2)))
        for label, mean_repeat in (("new names", 0.0), ("e2e-like", args.repeat))
    ]  # fmt: skip
    mixes.append(("real e2e", *real_e2e_runs()))
    for label, warm_up, events in mixes:
        paths = len({(verb, uri.partition("?")[0]) for verb, uri in events})
        batches = [orjson.dumps(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
        best = max(measure(catalogue, warm_up, batches) for _ in range(3))
        print(f"{label:>9}: {len(events):,} events, {paths:,} distinct (verb, path): {best:,.0f} events/s (best of 3)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
