"""`auditcov import` on every core (sink/parallelimport.py) stores exactly what the single-process import stores.

The same input, built from the real fixtures (events of several shapes, duplicates, items that are not events,
cloud records, blank lines, a file that is not audit data, a gzip file cut short), is imported both ways into
two real SQLite stores, which are then compared table by table, row by row, ids included; and into PostgreSQL
(a server the tests start) on every core, against SQLite in one process. A worker that fails
or dies surfaces as an error naming the file and lines, never as a hung pool.
"""

from __future__ import annotations

import gzip
import os
import re
import signal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sink_support import SUMMED_EVENT_GROUPS

from auditcov.merge.decode import Malformed
from auditcov.merge.eventfiles import AuditFile, audit_files
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import save_catalogue, stored_matcher
from auditcov.merge.store import open_store
from auditcov.sink.cli import cli
from auditcov.sink.importer import PARALLEL_MIN_BYTES, import_files
from auditcov.sink.ingest import EVENT_COLUMNS, Ingestor
from auditcov.sink.parallelimport import ImportWorkerError, import_files_parallel

AUDIT = Path(__file__).parent / "fixtures" / "audit"
SPEC = Path(__file__).parent / "fixtures" / "openapi" / "swagger-v1.12.0.json.gz"
#: Columns that hold the moment of the import itself, which no two imports share.
IMPORT_TIMES = {"runs": {"created_us"}, "quarantine": {"received_us"}}
E2E_AGENT = "e2e.test/v1.12.0 (linux/amd64) kubernetes/abc -- [sig-apps] Deployment should work [Conformance]"


def fixture_events() -> list[dict]:
    files = audit_files([AUDIT / "falco", AUDIT / "audit2rbac/demo.log", AUDIT / "apisnoop/example-user-agent.log"])
    return [entry.item for file in files for entry in file if not isinstance(entry.item, Malformed)]


def big_log_lines(count: int) -> list[bytes]:
    """JSON lines of the real events with fresh auditIDs, and every kind of trouble mixed in."""
    events = fixture_events()
    elastic = (AUDIT / "elastic/test-audit.log").read_bytes().splitlines()
    lines = []
    for number in range(count):
        event = dict(events[number % len(events)], auditID=f"parallel-{number:08d}")
        if number % 50 == 7:
            event["userAgent"] = E2E_AGENT
            if number % 100 == 7:  # a test's namespace
                event.update(verb="create", objectRef={"resource": "namespaces", "name": f"ns-{number}"})
                event["responseStatus"] = {"code": 201}
        lines.append(orjson.dumps(event))
        if number % 97 == 3:
            lines.append(orjson.dumps(dict(event, stage="Bogus", auditID=f"bad-{number}")))  # not a valid event
        if number % 89 == 5:
            lines.append(b'{"auditID": "cut short", "stage":')  # not JSON
        if number % 61 == 0:
            lines.append(lines[number // 2])  # an event seen before: a duplicate
        if number % 73 == 11:
            lines.append(b"   ")
        if number % 101 == 13:
            items = [dict(event, auditID=f"list-{number}-{index}") for index in range(3)]
            lines.append(orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}))
        if number % 211 == 17:
            lines.append(elastic[number % len(elastic)])  # GKE and AKS records, plain events
        if number % 307 == 19:
            lines.append(b'{"kind": 0}')
    return lines


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("inputs")
    lines = big_log_lines(6000)
    plain = folder / "a-audit.log"
    plain.write_bytes(b"\n".join(lines) + b"\n")
    packed = folder / "b-audit.log.gz"
    packed.write_bytes(gzip.compress(b"\n".join(lines[2000:] + lines[:100])))  # no final newline
    cut = folder / "c-cut.log.gz"
    compressed = gzip.compress(b"\n".join(lines[:3000]))
    cut.write_bytes(compressed[: len(compressed) * 2 // 3])
    blank_first = folder / "d-blank-first.log"
    blank_first.write_bytes(b"\n\n" + b"\n".join(lines[100:900]))
    fixtures = [*sorted((AUDIT / "falco").iterdir()), *sorted((AUDIT / "elastic").iterdir())]
    apisnoop = [AUDIT / "apisnoop/e2e-event-grep-output.txt", AUDIT / "apisnoop/example-user-agent.log"]
    return [plain, packed, cut, blank_first, *fixtures, *apisnoop, plain]  # the last: every event a duplicate


def store_with_catalogue(path: Path):
    db = open_store(path)
    save_catalogue(db, load_catalogue(SPEC), load_eligibility())
    return db


def import_both_ways(tmp_path: Path, inputs: list[Path], *, keep_bodies: bool, batch_size: int):
    outcomes = []
    for name, jobs in (("single", 1), ("parallel", 2)):
        db = store_with_catalogue(tmp_path / f"{name}.db")
        ingestor = Ingestor(db, keep_bodies=keep_bodies, matcher=stored_matcher(db))
        heard = {"bad": [], "errors": [], "batches": 0}
        callbacks = {
            "on_bad": heard["bad"].append,
            "on_error": heard["errors"].append,
            "on_batch": lambda result, heard=heard: heard.__setitem__("batches", heard["batches"] + 1),
        }
        files = [AuditFile(path) for path in inputs]
        if jobs == 1:
            summary = import_files(ingestor, "r", files, batch_size=batch_size, **callbacks)
        else:
            summary = import_files_parallel(
                ingestor, "r", files, jobs=jobs, batch_size=batch_size, block_bytes=64 * 1024, **callbacks
            )
        outcomes.append((db, summary, heard))
    return outcomes


def table_rows(db, table: str) -> list[tuple]:
    columns = [row[1] for row in db.conn.execute(f"PRAGMA table_info({table})")]
    kept = [column for column in columns if column not in IMPORT_TIMES.get(table, ())]
    if table == "event_groups":  # its rows depend on how the events were batched; their sums do not
        return sorted(db.conn.execute(SUMMED_EVENT_GROUPS).fetchall(), key=repr)
    return db.conn.execute(f"SELECT {', '.join(kept)} FROM {table} ORDER BY rowid").fetchall()


@pytest.mark.parametrize(("keep_bodies", "batch_size"), [(False, 500), (True, 2000)])
def test_parallel_import_stores_exactly_what_the_single_process_one_does(tmp_path, inputs, keep_bodies, batch_size):
    (single, single_summary, single_heard), (parallel, parallel_summary, parallel_heard) = import_both_ways(
        tmp_path, inputs, keep_bodies=keep_bodies, batch_size=batch_size
    )
    assert parallel_summary == single_summary
    assert parallel_heard["bad"] == single_heard["bad"]
    assert parallel_heard["errors"] == single_heard["errors"] == single_summary.errors
    # What the input holds, so that the comparison compares something.
    assert single_summary.accepted > 6000 and single_summary.duplicates > 6000 and single_summary.quarantined > 100
    assert len(single_summary.errors) == 2  # the gzip cut short, and the grep output that is not audit data
    assert any("c-cut.log.gz: unreadable after line" in error for error in single_summary.errors)
    tables = [row[0] for row in single.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"events", "runs", "tests", "namespaces", "quarantine", "endpoints"} <= set(tables)
    for table in tables:
        assert table_rows(parallel, table) == table_rows(single, table), table
    counts = {table: len(table_rows(single, table)) for table in ("events", "tests", "namespaces")}
    assert counts["events"] == single_summary.accepted and counts["tests"] == 1 and counts["namespaces"] > 10
    reasons = [row[0] for row in single.conn.execute("SELECT reason FROM quarantine")]
    assert all(reason.startswith(str(AUDIT)) or reason.startswith(str(inputs[0].parent)) for reason in reasons)
    assert f"{inputs[0]}:6: stage 'Bogus' is not one of Panic" in reasons[0]
    assert single.conn.execute("SELECT COUNT(*) FROM events WHERE operation_id IS NOT NULL").fetchone()[0] > 6000


class FailingMatcher(Matcher):
    """The real matcher, which fails (or kills its process) on one request URI, as a bug or the OOM killer would."""

    def __init__(self, uri: str, how: str):
        super().__init__(load_catalogue(SPEC))
        self.uri, self.how = uri, how

    def match(self, verb: str, request_uri: str):
        if request_uri == self.uri:
            if self.how == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError(f"cannot match {request_uri}")
        return super().match(verb, request_uri)


@pytest.mark.parametrize("how", ["raise", "die"])
def test_a_worker_that_fails_or_dies_is_an_error_naming_the_file_and_lines(tmp_path, how):
    events = fixture_events()
    lines = [orjson.dumps(dict(events[n % len(events)], auditID=f"w-{n}")) for n in range(3000)]
    lines[2500] = orjson.dumps(dict(events[0], auditID="trouble", requestURI="/trouble"))  # line 2501
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    db = open_store(tmp_path / "store.db")
    ingestor = Ingestor(db, matcher=FailingMatcher("/trouble", how))
    with pytest.raises(ImportWorkerError) as failed:
        import_files_parallel(ingestor, "r", [AuditFile(path)], jobs=2, block_bytes=256 * 1024)
    where = re.fullmatch(rf"{path}: lines (\d+)-(\d+): (.*)", str(failed.value))
    first, last, what = int(where[1]), int(where[2]), where[3]
    if how == "raise":  # the block that holds line 2501, and what went wrong in it
        assert first <= 2501 <= last and what == "ValueError: cannot match /trouble"
    else:  # the first block the broken pool did not prepare
        assert first <= 2501 and what == "not prepared: a worker process ended abruptly (killed, or out of memory?)"
    # The blocks before it are committed; nothing after.
    assert db.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == first - 1


def test_the_import_command_takes_jobs_and_stores_the_same_either_way(tmp_path):
    events = [event for event in fixture_events() if "requestObject" in event]  # large events: few are needed
    path = tmp_path / "audit.log"
    with path.open("wb") as out:
        number = 0
        while out.tell() < PARALLEL_MIN_BYTES:
            out.write(orjson.dumps(dict(events[number % len(events)], auditID=f"cli-{number}")) + b"\n")
            number += 1
    stores = []
    for jobs in ("1", "2"):
        store = tmp_path / f"jobs-{jobs}.db"
        result = CliRunner().invoke(cli, ["import", "--db", str(store), "--run", "r", "--jobs", jobs, str(path)])
        assert result.exit_code == 0, result.output
        assert f"imported into run 'r' of {store}: {number} events stored, 0 duplicates" in result.output
        stores.append(open_store(store))
    assert table_rows(stores[1], "events") == table_rows(stores[0], "events")
    refused = CliRunner().invoke(cli, ["import", "--db", str(tmp_path / "x.db"), "--jobs", "0", str(path)])
    assert refused.exit_code == 2 and "--jobs" in refused.output


def test_parallel_import_into_postgresql_stores_what_one_process_stores_into_sqlite(tmp_path, inputs, postgres_url):
    sqlite, postgres = store_with_catalogue(tmp_path / "single.db"), store_with_catalogue(postgres_url)
    single = import_files(Ingestor(sqlite, matcher=stored_matcher(sqlite)), "r", [AuditFile(path) for path in inputs])
    parallel = import_files_parallel(
        Ingestor(postgres, matcher=stored_matcher(postgres)),
        "r",
        [AuditFile(path) for path in inputs],
        jobs=2,
        block_bytes=64 * 1024,
    )
    assert parallel == single and single.accepted > 6000
    # PostgreSQL stores a batch that holds rows stored already in an order of its own (merge/pgstore.py inserts
    # them from a staging table, in key order), so the rows are compared as sets.
    queries = [
        f"SELECT {', '.join(EVENT_COLUMNS)} FROM events",
        "SELECT name, duplicates FROM runs",
        "SELECT run, name, tags, conformance FROM tests",
        "SELECT run, namespace, test, created_us FROM namespaces",
        "SELECT run, reason, raw, digest, raw_encoding FROM quarantine",
    ]
    for query in queries:
        stored = [tuple(row) for row in postgres.conn.execute(query).fetchall()]
        assert sorted(stored, key=repr) == sorted(sqlite.conn.execute(query).fetchall(), key=repr), query
