"""`auditcov export` and `auditcov merge` (into a bundle, or a store) on real data: a real audit log (audit2rbac's
demo run) split into two overlapping shards, mapped to the 1.36 spec, with real per-test Go coverage
(tests/gocov_sample snapshots, as in test_cover_pertest_go.py) in one of them. The merged bundle must equal a
bundle of everything imported once, and merging again, with a bundle given twice, must change nothing; so must
loading bundles into a store twice.
"""

from __future__ import annotations

import gzip
import hashlib
import sqlite3
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from sink_support import SUMMED_EVENT_GROUPS
from test_cover_pertest_go import _atomic_snapshots, _import, _markers

from auditcov.merge.bundle import GZIPPED, MANIFEST, REPORTS, STORE, STORE_GZ
from auditcov.sink.cli import cli

pytestmark = pytest.mark.go

SPEC = "openapi/swagger-v1.36.json.gz"
ENV = {"SOURCE_DATE_EPOCH": "1776667676"}


def _invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, list(args), env=ENV)
    assert result.exit_code == code, result.output
    return result.output


def _store(tmp: Path, name: str, fixtures: Path, events: list[bytes], run: str = "r", snapshots=None) -> Path:
    log = tmp / f"{name}.jsonl"
    log.write_bytes(b"".join(events))
    db = tmp / f"{name}.db"
    _invoke("import", "--db", str(db), "--run", run, str(log))
    _invoke("remap", "--db", str(db), "--openapi", str(fixtures / SPEC))
    if snapshots is not None:
        _import(db, run, snapshots, "covsample")
        _markers(db, run)
    return db


def _rows(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, but their per-store ids and when the store first saw the run, and event_groups
    as the groups it adds up to: what it holds."""
    conn = sqlite3.connect(path)
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    result = {}
    for table in tables:
        columns = [
            row[1]
            for row in conn.execute(f"PRAGMA table_info({table})")
            if not (row[1] == "id" and row[5]) and (table, row[1]) != ("runs", "created_us")
        ]
        query = SUMMED_EVENT_GROUPS if table == "event_groups" else f"SELECT {', '.join(columns)} FROM {table}"
        result[table] = sorted(conn.execute(query).fetchall(), key=repr)
    conn.close()
    return result


def _files(bundle: Path) -> dict[str, bytes]:
    # report.html says when it was made; everything else must be the same bytes.
    return {name: (bundle / name).read_bytes() for name in REPORTS if name != "report.html"}


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory):
    return _atomic_snapshots(tmp_path_factory.mktemp("bundlecov"))


def test_export_writes_the_run_and_its_reports(tmp_path, fixtures, snapshots):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    db = _store(tmp_path, "all", fixtures, events, snapshots=snapshots)
    _invoke("import", "--db", str(db), "--run", "other", str(tmp_path / "all.jsonl"))  # a run left out
    out = tmp_path / "bundle"
    assert "bundle of run 'r', 7 files" in _invoke("export", "--db", str(db), "--run", "r", "--artifacts", str(out))
    manifest = orjson.loads((out / MANIFEST).read_bytes())
    assert manifest["run"] == "r" and set(manifest["files"]) == {STORE, *REPORTS}
    for name, entry in manifest["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert sorted(p.name for p in out.iterdir()) == sorted([STORE, MANIFEST, *REPORTS])  # no -wal, no -shm
    # The bundle's store holds run r only, all of it; its reports are the source store's.
    rows = _rows(out / STORE)
    assert [row[0] for row in rows["runs"]] == ["r"]
    assert len(rows["events"]) == len(events) and len(rows["cover_snapshots"]) == len(snapshots)
    for name, output_format in REPORTS.items():
        if output_format not in (None, "html"):
            expected = _invoke("report", "--db", str(db), "--run", "r", "--format", output_format)
            assert (out / name).read_text() == expected, name
    summary = orjson.loads((out / "summary.json").read_bytes())
    assert summary["totals"]["eligible"] == 524 and len(summary["untested_eligible"]) == 523  # one is pending
    assert summary["code_totals"]["tests"] == 3
    assert b"DA:" in (out / "coverage.lcov").read_bytes() and b"<testcase" in (out / "junit_auditcov.xml").read_bytes()
    assert (out / "report.html").read_bytes().startswith(b"<!DOCTYPE html>")
    # --artifacts defaults to $ARTIFACTS, prow's artifacts folder.
    result = CliRunner().invoke(cli, ["export", "--db", str(db), "--run", "r"], env={"ARTIFACTS": str(tmp_path / "a")})
    assert result.exit_code == 0, result.output
    assert orjson.loads((tmp_path / "a" / MANIFEST).read_bytes())["files"].keys() == manifest["files"].keys()
    # A folder that holds a bundle is not written over.
    again = CliRunner().invoke(cli, ["export", "--db", str(db), "--run", "r", "--artifacts", str(out)])
    assert again.exit_code == 1 and "already holds a bundle" in again.output


def test_merge_of_shards_is_the_whole_run_and_idempotent(tmp_path, fixtures, snapshots):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    first, second = events[:25], events[12:]  # 13 events in both shards
    whole = _store(tmp_path, "whole", fixtures, events, snapshots=snapshots)
    shards = [
        _store(tmp_path, "shard1", fixtures, first, snapshots=snapshots),
        _store(tmp_path, "shard2", fixtures, second),
    ]
    bundles = []
    for i, db in enumerate([whole, *shards]):
        bundles.append(tmp_path / f"b{i}")
        _invoke("export", "--db", str(db), "--artifacts", str(bundles[-1]))
    merged = tmp_path / "merged"
    _invoke("merge", str(bundles[1]), str(bundles[2]), "-o", str(merged))
    expected, got = _rows(bundles[0] / STORE), _rows(merged / STORE)
    assert len(got["events"]) == len(events)
    assert got == expected
    assert _files(merged) == _files(bundles[0])

    # Again, with a shard given twice and the merged bundle too: nothing new.
    twice = tmp_path / "twice"
    result = CliRunner().invoke(cli, ["merge", str(bundles[1]), str(bundles[2]), str(bundles[1]), str(merged), "-o",
                                      str(twice)], env=ENV)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{bundles[1]}: the same store as {bundles[1]}; read once" in result.output
    assert _rows(twice / STORE) == expected and _files(twice) == _files(bundles[0])


def test_export_gzip_and_its_merge(tmp_path, fixtures, snapshots):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    db = _store(tmp_path, "s", fixtures, events, snapshots=snapshots)
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    _invoke("export", "--db", str(db), "--artifacts", str(plain))
    _invoke("export", "--db", str(db), "--artifacts", str(packed), "--gzip")
    manifest = orjson.loads((packed / MANIFEST).read_bytes())
    names = {f"{name}.gz" if name in GZIPPED else name for name in [STORE, *REPORTS]}
    assert manifest["store"] == STORE_GZ and set(manifest["files"]) == names
    assert sorted(p.name for p in packed.iterdir()) == sorted([*names, MANIFEST])
    for name in ("coverage.lcov", "cobertura.xml"):  # the same reports, gzipped
        assert gzip.decompress((packed / f"{name}.gz").read_bytes()) == (plain / name).read_bytes(), name
    (tmp_path / "unpacked.db").write_bytes(gzip.decompress((packed / STORE_GZ).read_bytes()))
    assert _rows(tmp_path / "unpacked.db") == _rows(plain / STORE)
    # A gzipped bundle merges as the plain one does; written again, it is the same bytes (no time in the gzip).
    _invoke("merge", str(packed), "-o", str(tmp_path / "m"))
    assert _rows(tmp_path / "m" / STORE) == _rows(plain / STORE) and _files(tmp_path / "m") == _files(plain)
    _invoke("export", "--db", str(db), "--artifacts", str(tmp_path / "again"), "--gzip")
    assert (tmp_path / "again" / STORE_GZ).read_bytes() == (packed / STORE_GZ).read_bytes()
    # A gzipped store that does not match its manifest is refused, as a plain one is.
    (packed / STORE_GZ).write_bytes(gzip.compress(b"not a store"))
    result = CliRunner().invoke(cli, ["merge", str(packed), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 1 and "auditcov.db.gz is missing or does not match the sha256" in result.output


def test_merge_into_a_store_is_idempotent(tmp_path, fixtures, snapshots):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    whole = _store(tmp_path, "whole", fixtures, events, snapshots=snapshots)
    shard1 = _store(tmp_path, "shard1", fixtures, events[:25], snapshots=snapshots)
    shard2 = _store(tmp_path, "shard2", fixtures, events[12:])
    _invoke("export", "--db", str(whole), "--artifacts", str(tmp_path / "b0"))
    _invoke("export", "--db", str(shard1), "--artifacts", str(tmp_path / "b1"), "--gzip")
    _invoke("export", "--db", str(shard2), "--artifacts", str(tmp_path / "b2"))
    store = tmp_path / "new" / "served.db"
    store.parent.mkdir()
    out = _invoke("merge", str(tmp_path / "b1"), str(tmp_path / "b2"), "--db", str(store))
    assert f"{store}: run 'r' from 2 bundle(s): {len(events)} events ({len(events)} new), 3 tests, 4 coverage " in out
    expected = _rows(tmp_path / "b0" / STORE)
    assert _rows(store) == expected
    # Loading again, and the whole run's bundle too, adds nothing.
    out = _invoke("merge", str(tmp_path / "b1"), str(tmp_path / "b2"), str(tmp_path / "b0"), "--db", str(store))
    assert f"{len(events)} events (0 new)" in out and _rows(store) == expected
    # Into a store holding another run: that run stays as it was, the bundle's is added beside it.
    other = _store(tmp_path, "other", fixtures, events[:5], run="mine")
    before = _rows(other)
    _invoke("merge", str(tmp_path / "b0"), "--db", str(other))
    after = _rows(other)
    assert [row[0] for row in after["runs"]] == ["mine", "r"]
    assert {row for row in after["events"] if "mine" in row} == set(before["events"])
    assert _invoke("report", "--db", str(other), "--run", "r", "--format", "json") == _invoke(
        "report", "--db", str(tmp_path / "b0" / STORE), "--run", "r", "--format", "json"
    )
    # Exactly one of -o and --db.
    for args in ([], ["-o", str(tmp_path / "m"), "--db", str(store)]):
        result = CliRunner().invoke(cli, ["merge", str(tmp_path / "b0"), *args])
        assert result.exit_code == 2 and "give -o DIR (a merged bundle) or --db STORE" in result.output


def test_merge_of_providers_names_one_run(tmp_path, fixtures, snapshots):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    gke = _store(tmp_path, "gke", fixtures, events, run="gke", snapshots=snapshots)
    aks = _store(tmp_path, "aks", fixtures, events, run="aks", snapshots=snapshots)
    for db in (gke, aks):
        _invoke("export", "--db", str(db), "--artifacts", str(tmp_path / db.stem))
    inputs = [str(tmp_path / "gke"), str(tmp_path / "aks")]
    result = CliRunner().invoke(cli, ["merge", *inputs, "-o", str(tmp_path / "m")])
    assert result.exit_code == 1 and "the bundles hold runs aks, gke: name the merged run with --run" in result.output
    _invoke("merge", *inputs, "--run", "providers", "-o", str(tmp_path / "m2"))
    rows = _rows(tmp_path / "m2" / STORE)
    assert [row[0] for row in rows["runs"]] == ["providers"]
    # One audit log under two run names: renamed to one run, its events are the same events, stored once.
    assert len(rows["events"]) == len(events)
    processes = sorted({row[1] for row in rows["cover_snapshots"]})
    assert processes == ["aks:covsample", "gke:covsample"]
    assert orjson.loads((tmp_path / "m2" / MANIFEST).read_bytes())["run"] == "providers"


def test_a_changed_bundle_is_refused(tmp_path, fixtures):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    db = _store(tmp_path, "s", fixtures, events)
    _invoke("export", "--db", str(db), "--artifacts", str(tmp_path / "b"))
    with sqlite3.connect(tmp_path / "b" / STORE) as conn:
        conn.execute("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events LIMIT 1)")
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "b"), "-o", str(tmp_path / "m")])
    assert (
        result.exit_code == 1
        and "auditcov.db is missing or does not match the sha256 in manifest.json" in result.output
    )
    result = CliRunner().invoke(cli, ["merge", str(tmp_path), "-o", str(tmp_path / "m")])
    assert result.exit_code == 1 and "not a bundle (no manifest.json)" in result.output


def test_bundles_of_different_catalogues_are_refused(tmp_path, fixtures):
    events = (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines(keepends=True)
    new = _store(tmp_path, "new", fixtures, events)
    old = _store(tmp_path, "old", fixtures, events)
    _invoke("remap", "--db", str(old), "--openapi", str(fixtures / "openapi/swagger-v1.27.0.json.gz"))
    for db in (new, old):
        _invoke("export", "--db", str(db), "--artifacts", str(tmp_path / f"b-{db.stem}"))
    result = CliRunner().invoke(
        cli, ["merge", str(tmp_path / "b-new"), str(tmp_path / "b-old"), "-o", str(tmp_path / "m")]
    )
    assert result.exit_code == 1
    assert (
        f"{tmp_path / 'b-old'}: its catalogue (" in result.output
        and "differs from the bundles' before it" in result.output
    )
    # Nor is a bundle loaded into a store whose catalogue differs.
    _invoke("merge", str(tmp_path / "b-new"), "--db", str(tmp_path / "served.db"))
    result = CliRunner().invoke(cli, ["merge", str(tmp_path / "b-old"), "--db", str(tmp_path / "served.db")])
    assert result.exit_code == 1 and f"differs from the catalogue of {tmp_path / 'served.db'}: " in result.output
