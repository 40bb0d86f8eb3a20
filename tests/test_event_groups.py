"""event_groups, the store's count of each run's events as the endpoint model reads them (merge/store.py), against
its oracle: the events themselves, grouped here in Python by the rule the table states. In both stores, through
every way events are stored or changed: batches with duplicates and retries, failed jobs, remap, merged bundles,
upgraded stores, and on PostgreSQL two writers at once."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from sink_support import CONTROLLER_AGENT, FIXTURES, SUMMED_EVENT_GROUPS, event

from auditcov.merge.errors import StoreError
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.eligibility import load_eligibility
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import remap, save_catalogue
from auditcov.merge.store import SCHEMA_VERSION, open_store, open_store_readonly, transaction
from auditcov.sink.cli import cli
from auditcov.sink.ingest import Ingestor

SPEC = FIXTURES / "openapi/swagger-v1.36.json.gz"
TEST = "[sig-apps] Deployment should run the lifecycle of a Deployment [Conformance]"
AGENTS = (
    f"e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- {TEST}",
    f"e2e.test/v1.35.2-rc.1+dirty -- {TEST}",  # the version ends at the first space
    "e2e.test",  # no version, no test
    "e2e.test (linux) v1/2 -- [sig-node] Pods",  # a '/' only after the first space: no version
    CONTROLLER_AGENT,
    "kubectl/v1.36.0 (linux/amd64) kubernetes/abc1234",
)


def oracle(db, run: str) -> dict[tuple, tuple]:
    """(test, namespace, operationId, reason, e2e, version, code) -> (events, first, last, last stage time), from
    the events: the namespace only when no test is named, the version the first word's part after '/'."""
    groups: dict[tuple, list] = {}
    for test, namespace, operation_id, reason, client, agent, code, received, stage in db.conn.execute(
        "SELECT test, namespace, operation_id, unmatched_reason, client, user_agent, code, received_us, stage_us"
        " FROM events WHERE run = ?",
        (run,),
    ):
        e2e = client == "e2e.test"
        version = (agent.partition(" ")[0].partition("/")[2] or None) if e2e else None
        key = (test, namespace if test is None else None, operation_id, reason, int(e2e), version, code)
        at, done = (received if received is not None else stage), (stage if stage is not None else received)
        entry = groups.setdefault(key, [0, at, at, done])
        entry[0] += 1
        entry[1], entry[2], entry[3] = min(entry[1], at), max(entry[2], at), max(entry[3], done)
    return {key: tuple(value) for key, value in groups.items()}


def stored(db, run: str) -> dict[tuple, tuple]:
    return {tuple(row[1:8]): tuple(row[8:]) for row in db.conn.execute(SUMMED_EVENT_GROUPS) if row[0] == run}


def traffic(prefix: str, count: int) -> list[dict]:
    """Events of every agent above, in and out of a namespace, hitting known and unknown paths, with codes and
    without (RequestReceived)."""
    items = []
    for n in range(count):
        agent = AGENTS[n % len(AGENTS)]
        uri = ("/api/v1/namespaces/ns-1/pods", "/api/v1/nodes", "/apis/example.com/v1/things", "/healthz")[n % 4]
        second = f"{n // 1000:02d}.{n % 1000:03d}"
        changes = {"userAgent": agent, "requestURI": uri, "requestReceivedTimestamp": f"2026-11-25T10:00:{second}Z"}
        if n % 4 != 0:
            changes["objectRef"] = {"namespace": None}
        if n % 9 == 0:
            changes.update(stage="RequestReceived", responseStatus=None)
        else:
            changes["responseStatus"] = {"code": (200, 201, 404, 500)[n % 4]}
        items.append(event(f"{prefix}-{n}", **changes))
    return items


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    target = tmp_path / "groups.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(target)
    save_catalogue(store, load_catalogue(SPEC), load_eligibility())
    yield store
    store.conn.close()


def test_every_batch_is_counted_once_whatever_came_twice(db):
    ingestor = Ingestor(db, matcher=Matcher(load_catalogue(SPEC)))
    first, second = traffic("a", 300), traffic("b", 200)
    assert ingestor.ingest("r", first).accepted == 300
    assert ingestor.ingest("r", first).duplicates == 300  # a retried batch
    mixed = ingestor.ingest("r", first[100:150] + second)  # a batch partly stored already
    assert (mixed.accepted, mixed.duplicates) == (200, 50)
    ingestor.ingest("other", traffic("a", 40))
    # Two batches in one transaction (the sink's group commit), one of them rolled back to its savepoint.
    with transaction(db.conn):
        ingestor.write(ingestor.prepare("r", traffic("c", 30)))
        db.conn.execute("SAVEPOINT job")
        ingestor.write(ingestor.prepare("r", traffic("d", 30)))
        db.conn.execute("ROLLBACK TO job")
        db.conn.execute("RELEASE job")
    groups = oracle(db, "r")
    assert sum(value[0] for value in groups.values()) == 530
    assert {key[5] for key in groups} == {"v1.36.0", "v1.35.2-rc.1+dirty", None}
    assert {key[6] for key in groups} == {None, 200, 201, 404, 500}
    assert stored(db, "r") == groups
    assert stored(db, "other") == oracle(db, "other")


def test_remap_counts_the_run_again(db):
    Ingestor(db).ingest("r", traffic("a", 200))  # stored before any matcher: no operations yet
    assert {key[2] for key in stored(db, "r")} == {None}
    result = remap(db, Matcher(load_catalogue(SPEC)), "r")
    assert result.changed == 200
    assert len({key[2] for key in stored(db, "r")}) > 2
    assert stored(db, "r") == oracle(db, "r")


def test_bundles_of_one_run_add_up_and_merging_again_adds_nothing(db, tmp_path):
    matcher = Matcher(load_catalogue(SPEC))
    bundles = []
    for shard, items in enumerate((traffic("a", 150), traffic("a", 100)[50:] + traffic("b", 80))):
        source = tmp_path / f"shard-{shard}.db"
        store = open_store(source)
        save_catalogue(store, load_catalogue(SPEC), load_eligibility())
        Ingestor(store, matcher=matcher).ingest("conformance", items)
        store.conn.close()
        bundles.append(tmp_path / f"bundle-{shard}")
        run(["export", "--db", str(source), "--artifacts", str(bundles[-1])])
    target = _url_or_path(db)
    db.conn.close()
    for _ in range(2):
        run(["merge", *map(str, bundles), "--db", target])
    merged = open_store(target)
    try:
        groups = oracle(merged, "conformance")
        assert sum(value[0] for value in groups.values()) == 230  # the events both shards hold count once
        assert stored(merged, "conformance") == groups
    finally:
        merged.conn.close()


def test_an_upgraded_store_counts_the_events_it_had(tmp_path):
    path = tmp_path / "store.db"
    shutil.copy(FIXTURES / "stores/schema-v2.db", path)
    db = open_store(path)
    groups = oracle(db, "v2")
    assert sum(value[0] for value in groups.values()) == 37
    assert stored(db, "v2") == groups


def make_old_postgres_store(url: str, version: int, *undo: str) -> None:
    """A PostgreSQL store of 300 events, as a store of schema `version` holds them: without the trigger that
    counts events (schema 5), and without what the statements `undo` take away."""
    db = open_store(url)
    Ingestor(db).ingest("r", traffic("a", 300))
    for statement in ("DROP TRIGGER events_counted ON events", "DROP FUNCTION count_inserted_events", *undo):
        db.conn.execute(statement)
    db.conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.conn.close()


def test_a_postgres_store_of_schema_3_is_upgraded_counting_its_events(postgres_url):
    # Schema 3 had no event_groups and no block ids either.
    make_old_postgres_store(postgres_url, 3, "DROP TABLE event_groups", "DROP SEQUENCE events_block_seq")
    with pytest.raises(StoreError, match=f"schema version 3; this auditcov reads {SCHEMA_VERSION}"):
        open_store_readonly(postgres_url)
    db = open_store(postgres_url)
    try:
        assert stored(db, "r") == oracle(db, "r")
        Ingestor(db).ingest("r", traffic("b", 300))  # new events take ids past the old ones'
        assert db.conn.execute("SELECT COUNT(DISTINCT id) FROM events").fetchone()[0] == 600
        assert stored(db, "r") == oracle(db, "r")
    finally:
        db.conn.close()


def test_a_postgres_store_of_schema_4_is_upgraded_to_count_by_trigger_without_counting_twice(postgres_url):
    # Schema 4's sinks counted the events they inserted themselves: its 300 events are counted already.
    make_old_postgres_store(postgres_url, 4)
    db = open_store(postgres_url)
    try:
        assert db.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
        assert stored(db, "r") == oracle(db, "r")
        Ingestor(db).ingest("r", traffic("b", 300) + traffic("a", 50))  # 300 new, 50 stored already
        assert sum(value[0] for value in stored(db, "r").values()) == 600
        assert stored(db, "r") == oracle(db, "r")
    finally:
        db.conn.close()


def test_two_postgres_writers_never_wait_on_each_others_groups(postgres_url):
    one, two = open_store(postgres_url), open_store(postgres_url)
    try:
        # The run and its tests exist first: a writer inserting them would make the other wait for its commit.
        Ingestor(one).ingest("r", traffic("z", 12))
        two.conn.execute("SET lock_timeout = '5s'")  # waiting on `one` fails the test instead of hanging it
        with transaction(one.conn), transaction(two.conn):
            Ingestor(one).write(Ingestor(one).prepare("r", traffic("a", 100)))
            Ingestor(two).write(Ingestor(two).prepare("r", traffic("b", 100)))
        assert stored(one, "r") == oracle(one, "r")
    finally:
        one.conn.close()
        two.conn.close()


def run(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result.output


def _url_or_path(db) -> str:
    return getattr(db.conn, "url", None) or db.conn.execute("PRAGMA database_list").fetchone()[2]


def test_the_report_reads_the_groups_not_the_events(tmp_path):
    """A report's endpoint figures come from event_groups: counted there, an event is in the report."""
    path = tmp_path / "store.db"
    db = open_store(path)
    save_catalogue(db, load_catalogue(SPEC), load_eligibility())
    Ingestor(db, matcher=Matcher(load_catalogue(SPEC))).ingest("r", traffic("a", 60))
    before = run(["report", "--db", str(path), "--run", "r", "--format", "json"])
    with transaction(db.conn):
        db.conn.execute("UPDATE event_groups SET hits = hits + 1000 WHERE run = 'r'")
    db.conn.close()
    assert run(["report", "--db", str(path), "--run", "r", "--format", "json"]) != before
