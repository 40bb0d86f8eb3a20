"""`auditcov import` on one core and on every core, against orjson's parse-only rate of the same input.

The input is the 2018 minikube events of the falco fixtures (tests/fixtures/audit/falco, at RequestResponse
level, so with their request and response bodies: about 1.8 KB a line), repeated with fresh auditIDs to
--events (184,393 by default) in one JSON-lines file, each copy a day after the one before. Each store holds the
Kubernetes 1.12 catalogue (the API of those events, tests/fixtures/openapi/swagger-v1.12.0.json.gz), so every
event is matched to an endpoint too.
Printed in one run:

- the baseline: `orjson.loads` of every line, in this process, before the imports and after them (the machine's
  load moves it: the ratios are to the faster of the two);
- `auditcov import --jobs 1` and `--jobs N` (subprocesses, as a user runs them, each into a fresh store): wall
  seconds, CPU seconds of the import and its workers, events/s, the ratio to the baseline, CPU us per event;
  then a check that both stores hold the same events table, row for row;
- where the parallel import's CPU goes, per event, measured stage by stage in this process on the same input:
  the main process reading lines, pickling the blocks to the workers, the workers decoding, preparing and
  marshalling the rows, the main process unmarshalling them, and the one writer's `Ingestor.commit`;
- the least any import of them does (decoding, preparing, inserting the rows), against the CPU per event that
  half the parse-only rate allows on this machine's cores;
- the load average before and after (the machine is shared: CPU time is the steadier figure).

    .venv/bin/python bench/import.py [--events 184393] [--jobs N]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.decode import Malformed
from auditcov.merge.eventfiles import AuditFile, LineBlock, audit_files
from auditcov.merge.events import event_from_bytes
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.stored import save_catalogue, stored_matcher
from auditcov.merge.store import open_store, transaction
from auditcov.sink import parallelimport
from auditcov.sink.importer import IMPORT_BATCH_SIZE
from auditcov.sink.ingest import EVENT_COLUMNS, Ingestor

ROOT = Path(__file__).resolve().parent.parent
FALCO = ROOT / "tests/fixtures/audit/falco"
SPEC = ROOT / "tests/fixtures/openapi/swagger-v1.12.0.json.gz"
AUDITCOV = str(Path(sys.executable).with_name("auditcov"))
RUN = "bench"
TIMES = ("requestReceivedTimestamp", "stageTimestamp", "timestamp")


def write_log(path: Path, count: int) -> None:
    events = [entry.item for file in audit_files([FALCO]) for entry in file if not isinstance(entry.item, Malformed)]
    with path.open("wb") as out:
        for number in range(count):
            copy, index = divmod(number, len(events))
            event = dict(events[index], auditID=f"bench-{number:012d}")
            for key in TIMES:  # each copy a day after the one before, as a log runs on
                if key in event:
                    moment = datetime.fromisoformat(event[key].replace("Z", "+00:00")) + timedelta(days=copy)
                    event[key] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            out.write(orjson.dumps(event) + b"\n")


def fresh_store(path: Path):
    db = open_store(path)
    save_catalogue(db, load_catalogue(SPEC), load_eligibility())
    return db


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def report(label: str, events: int, seconds: float, cpu: float) -> tuple[float, float]:
    """Print a step's figures; return its events/s and its CPU us per event."""
    rate, cpu_per_event = events / seconds, cpu / events * 1e6
    print(f"{label:<32} {seconds:7.2f} s wall {cpu:7.2f} s CPU {cpu_per_event:6.1f} us/event CPU {rate:9,.0f} events/s")
    return rate, cpu_per_event


def parse_only(log: Path, events: int, when: str) -> tuple[float, float]:
    started, started_cpu = time.perf_counter(), time.process_time()
    with log.open("rb") as lines:
        for line in lines:
            orjson.loads(line)
    seconds, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    return report(f"orjson.loads, baseline ({when})", events, seconds, cpu)


def run_import(log: Path, db: Path, jobs: int, events: int) -> tuple[float, float]:
    fresh_store(db).conn.close()
    started, started_cpu = time.perf_counter(), children_cpu()
    answer = subprocess.run(
        [AUDITCOV, "import", "--db", str(db), "--run", RUN, "--jobs", str(jobs), str(log)], capture_output=True
    )
    seconds, cpu = time.perf_counter() - started, children_cpu() - started_cpu
    if answer.returncode:
        sys.exit(f"auditcov import --jobs {jobs} failed: {answer.stderr.decode()[-2000:]}")
    return report(f"auditcov import --jobs {jobs}", events, seconds, cpu)


def events_digest(db: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    rows = open_store(db).conn.execute("SELECT * FROM events ORDER BY id")
    count = 0
    for row in rows:
        digest.update(orjson.dumps(row))
        count += 1
    return count, digest.hexdigest()


def done(result: object) -> Future:
    future: Future = Future()
    future.set_result(result)
    return future


def stages(log: Path, db: Path, events: int) -> None:
    """The parallel import's work, stage by stage, in this process (CPU us per event)."""
    store = fresh_store(db)
    writer = Ingestor(store, matcher=stored_matcher(store))
    parallelimport._start_worker(False, writer.matcher)  # this process plays the worker too
    spent = dict.fromkeys(("read", "send", "prepare", "return", "commit"), 0.0)
    sent_bytes = returned_bytes = 0
    clock = time.process_time
    pieces = iter(AuditFile(log).pieces(parallelimport.BLOCK_BYTES))
    while True:
        at = clock()
        block = next(pieces, None)
        spent["read"] += clock() - at
        if block is None:
            break
        assert isinstance(block, LineBlock)
        at = clock()
        sent = pickle.dumps(block)
        block = pickle.loads(sent)
        spent["send"] += clock() - at
        at = clock()
        prepared = parallelimport._prepare_block(RUN, block, IMPORT_BATCH_SIZE)
        spent["prepare"] += clock() - at
        at = clock()
        returned = pickle.dumps(prepared)
        prepared = parallelimport._outcome(done(pickle.loads(returned)), block)
        spent["return"] += clock() - at
        at = clock()
        for entries in prepared:
            writer.commit(entries.batch)
        spent["commit"] += clock() - at
        sent_bytes += len(sent)
        returned_bytes += len(returned)
    gc.enable()  # _start_worker paused it, as in a worker
    per_event = {stage: seconds / events * 1e6 for stage, seconds in spent.items()}
    print("where the CPU goes (this process playing every part), us per event:")
    print(f"  main process: reading lines {per_event['read']:.1f}, unmarshalling the prepared rows"
          f" {per_event['return']:.1f} ({returned_bytes / events:,.0f} bytes/event), commit (the one writer)"
          f" {per_event['commit']:.1f}")  # fmt: skip
    print(f"  workers: decode, prepare and marshal {per_event['prepare']:.1f}")
    print(f"  the blocks of lines pickled there and back {per_event['send']:.1f}"
          f" ({sent_bytes / events:,.0f} bytes/event)")  # fmt: skip
    main = per_event["read"] + per_event["return"] + per_event["commit"] + per_event["send"] / 2
    workers = per_event["prepare"] + per_event["send"] / 2
    print(f"  main process {main:.1f} us/event (at most {1e6 / main:,.0f} events/s on a core of its own),"
          f" workers {workers:.1f} us/event in all; on {os.cpu_count()} cores shared by both, at most"
          f" {os.cpu_count() * 1e6 / (main + workers):,.0f} events/s")  # fmt: skip


def floor(log: Path, db: Path, events: int, baseline_cpu: float) -> None:
    """The work no import of these events can leave out, stage by stage in this process (CPU us per event): each
    line decoded into its `AuditEvent` (msgspec alone, without the checks that make `merge.linedecode` exact),
    the events turned into rows (`Ingestor.prepare`, the endpoint matching included), and the rows inserted into
    the store's `events` table in 2,000-row transactions (sqlite3's executemany, without event_groups); against
    what half the parse-only rate allows on this machine's cores."""
    store = fresh_store(db)
    ingestor = Ingestor(None, matcher=stored_matcher(store))
    insert = f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
    spent = dict.fromkeys(("decode", "prepare", "insert"), 0.0)
    clock = time.process_time
    with log.open("rb") as lines, gc_paused():
        while chunk := [line for _, line in zip(range(IMPORT_BATCH_SIZE), lines, strict=False)]:
            at = clock()
            decoded = [event_from_bytes(line) for line in chunk]
            spent["decode"] += clock() - at
            at = clock()
            rows = ingestor.prepare(RUN, decoded).events
            spent["prepare"] += clock() - at
            at = clock()
            with transaction(store.conn):
                store.conn.executemany(insert, rows)
            spent["insert"] += clock() - at
    per_event = {stage: seconds / events * 1e6 for stage, seconds in spent.items()}
    total = sum(per_event.values())
    cores = os.cpu_count()
    print(f"the least an import does, us per event: decoding {per_event['decode']:.1f}, preparing"
          f" {per_event['prepare']:.1f}, inserting {per_event['insert']:.1f}: {total:.1f} in all,"
          f" {total / baseline_cpu:.1f} x the parse-only CPU; half the parse-only rate on {cores} cores allows at"
          f" most {2 * cores:.0f} x, with every core busy all the time and nothing else to do")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=184_393)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auditcov-bench-") as work:
        work = Path(work)
        log = work / "falco-2018.jsonl"
        write_log(log, args.events)
        print(f"{args.events:,} events, {log.stat().st_size / 1e6:.0f} MB of JSON lines, on {os.cpu_count()} CPUs;"
              f" load average {load()}")  # fmt: skip
        baselines = [parse_only(log, args.events, "before")]
        one = run_import(log, work / "one.db", 1, args.events)
        every = run_import(log, work / "all.db", args.jobs, args.events)
        baselines.append(parse_only(log, args.events, "after"))
        rate, cpu = max(baselines)  # the faster of the two: the harder target
        print(f"against the faster baseline ({rate:,.0f} events/s, {cpu:.1f} us/event CPU):"
              f" --jobs 1 {one[0] / rate:.2f} x its rate ({one[1] / cpu:.1f} x its CPU per event),"
              f" --jobs {args.jobs} {every[0] / rate:.2f} x ({every[1] / cpu:.1f} x)")  # fmt: skip
        same = events_digest(work / "one.db") == events_digest(work / "all.db")
        print(f"the two stores' events tables are {'identical' if same else 'DIFFERENT'}")
        stages(log, work / "stages.db", args.events)
        floor(log, work / "floor.db", args.events, cpu)
        print(f"load average {load()}")
        if not same:
            sys.exit(1)


if __name__ == "__main__":
    main()
