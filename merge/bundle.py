"""Artifact bundles: what a CI job uploads (`auditcov export`), and bundles combined into one (`auditcov merge`).

A bundle is a folder, in prow's conventions (it goes to `$ARTIFACTS`; JUnit files are `junit_*.xml`):
- `auditcov.db`: a store (merge/store.py's one schema) holding the bundle's run and nothing else: its events,
  tests, namespaces, markers, quarantine, coverage agents, snapshots and Python lines, the layouts and meta-data
  its snapshots use, and the store's catalogue;
- the reports, rendered from that store (merge/reports/formats.py): `summary.json` (the json report's totals and
  what nothing tested), `apisnoop.json`, `report.html`, `coverage.lcov`, `cobertura.xml`, `junit_auditcov.xml`;
- `manifest.json`: the run, and each other file's size and sha256.

Merging copies each bundle's store into a new one inside SQLite (ATTACH, then one INSERT ... SELECT per table,
as coverage.py's `CoverageData.update` does) and renders the reports again. It is idempotent: events keep their
identity (run, receive time, auditID, stage) and every other table its key, so rows a store already has are
skipped, and a bundle given twice (the same store, by its sha256) is read once. Bundles of different runs (several
providers, differently named shards) become one run, named by the caller; their processes are then named
`<run>:<process>` so that each cluster's coverage stays its own.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import orjson
import sqlite_utils

from auditcov.merge.errors import AuditcovError, StoreError
from auditcov.merge.openapi.stored import CATALOGUE_SOURCE_KEY
from auditcov.merge.reports.coverjson import totals as code_totals
from auditcov.merge.reports.endpointjson import endpoint_report
from auditcov.merge.reports.formats import ReportOptions, RunModels, render_report
from auditcov.merge.reports.junit import untested_eligible
from auditcov.merge.store import choose_run, open_store, open_store_readonly, transaction

FORMAT_VERSION = 1
STORE = "auditcov.db"
MANIFEST = "manifest.json"
#: The report files of a bundle and the format each is rendered in (None: the summary, built here).
REPORTS = {
    "summary.json": None,
    "apisnoop.json": "apisnoop",
    "report.html": "html",
    "coverage.lcov": "lcov",
    "cobertura.xml": "cobertura",
    "junit_auditcov.xml": "junit",
}
#: Tables shared by all runs, copied only as far as the run's snapshots use them.
_USED_BY_SNAPSHOTS = {"cover_layouts": "layout", "cover_meta": "meta"}


class BundleError(AuditcovError):
    """A bundle that cannot be written, read or merged; the message names the folder or file."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A written bundle: its folder, run and files (name -> size, sha256)."""

    directory: Path
    run: str
    files: dict[str, dict]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """The table's columns but a rowid alias (`id INTEGER PRIMARY KEY`): ids are per store, never copied."""
    return [row[1] for row in conn.execute(f"PRAGMA main.table_info({table})") if not (row[1] == "id" and row[5])]


def _copy_run(conn: sqlite3.Connection, run: str, target: str) -> None:
    """Copy run `run` of the attached store `src` into the main store as run `target` (one transaction)."""
    rename = run != target
    tables = [row[0] for row in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")]
    with transaction(conn):
        conn.execute(
            "INSERT INTO main.runs (name, created_us, duplicates) SELECT ?, created_us, duplicates FROM src.runs "
            "WHERE name = ? ON CONFLICT (name) DO UPDATE SET created_us = min(created_us, excluded.created_us), "
            "duplicates = max(duplicates, excluded.duplicates)",
            (target, run),
        )
        for table in tables:
            if table in ("meta", "runs"):
                continue
            columns = _columns(conn, table)
            if table in _USED_BY_SNAPSHOTS:
                column = _USED_BY_SNAPSHOTS[table]
                where, params = f"WHERE hash IN (SELECT {column} FROM src.cover_snapshots WHERE run = ?)", [run]
                selected = columns
            elif "run" in columns:
                where, params = "WHERE run = ?", [run]
                selected = ["? AS run" if c == "run" else c for c in columns]
                params.insert(0, target)
                if rename and "process" in columns:
                    selected = ["? || ':' || process" if c == "process" else c for c in selected]
                    params.insert(1, run)
            else:
                where, params, selected = "", [], columns
            conn.execute(
                f"INSERT OR IGNORE INTO main.{table} ({', '.join(columns)}) "
                f"SELECT {', '.join(selected)} FROM src.{table} {where}",
                params,
            )
        conn.execute(
            "INSERT OR IGNORE INTO main.meta (key, value) SELECT key, value FROM src.meta WHERE key = ?",
            (CATALOGUE_SOURCE_KEY,),
        )


def _check_catalogues(conn: sqlite3.Connection, where: Path) -> None:
    """A merged store holds one catalogue: the bundles' catalogues must list the same operations."""
    mine = {row[0] for row in conn.execute("SELECT operation_id FROM main.endpoints")}
    theirs = {row[0] for row in conn.execute("SELECT operation_id FROM src.endpoints")}
    if mine and theirs and mine != theirs:
        source = conn.execute("SELECT value FROM src.meta WHERE key = ?", (CATALOGUE_SOURCE_KEY,)).fetchone()
        raise BundleError(
            f"{where}: its catalogue ({source[0] if source else 'unnamed'}) differs from the bundles' before it: "
            f"{len(theirs - mine)} operations only in it, {len(mine - theirs)} only in the others"
        )


def _summary(models: RunModels) -> bytes:
    coverage = models.coverage
    document = {
        "format_version": FORMAT_VERSION,
        "run": models.run,
        "catalogue": coverage.catalogue_source,
        "totals": endpoint_report(coverage)["totals"],
        "code_totals": code_totals(models.per_test),
        "untested_eligible": [state.endpoint.operation_id for state in untested_eligible(coverage)],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def write_reports(directory: Path, run: str, options: ReportOptions) -> Bundle:
    """Render the reports of the bundle store in `directory` and write its manifest."""
    db = open_store_readonly(directory / STORE)
    try:
        models = RunModels(db, run, successful_only=options.successful_only)
        for name, output_format in REPORTS.items():
            render = _summary if output_format is None else partial(render_report, db, run, output_format, options)
            (directory / name).write_bytes(render(models))
    finally:
        db.conn.close()
    files = {
        name: {"size": (directory / name).stat().st_size, "sha256": _sha256(directory / name)}
        for name in sorted([STORE, *REPORTS])
    }
    manifest = {"format_version": FORMAT_VERSION, "run": run, "files": files}
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return Bundle(directory, run, files)


def _new_store(directory: Path) -> sqlite_utils.Database:
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STORE).exists():
        raise BundleError(f"{directory}: already holds a bundle ({STORE}); write to a new folder")
    db = open_store(directory / STORE)
    db.conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    return db


def export_bundle(db_path: str | Path, run: str | None, directory: Path, options: ReportOptions) -> Bundle:
    """Write the bundle of `run` (the store's only run when None) of the store at `db_path` into `directory`."""
    source = open_store_readonly(db_path)
    try:
        run = choose_run(source, run)
    finally:
        source.conn.close()
    db = _new_store(directory)
    with _removed_on_error(directory):
        try:
            db.conn.execute("ATTACH DATABASE ? AS src", (str(db_path),))
            _copy_run(db.conn, run, run)
            db.conn.execute("DETACH DATABASE src")
        finally:
            db.conn.close()
        return write_reports(directory, run, options)


def read_manifest(directory: Path) -> dict:
    """A bundle's manifest, after checking that its store is the one the manifest describes."""
    path = directory / MANIFEST
    try:
        manifest = orjson.loads(path.read_bytes())
        store = manifest["files"][STORE]
        run = manifest["run"]
    except FileNotFoundError:
        raise BundleError(f"{directory}: not a bundle (no {MANIFEST})") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: not a bundle manifest ({exc})") from None
    if not isinstance(run, str):
        raise BundleError(f"{path}: 'run' must be a string")
    if not (directory / STORE).is_file() or _sha256(directory / STORE) != store.get("sha256"):
        raise BundleError(f"{directory}: {STORE} is missing or does not match the sha256 in {MANIFEST}")
    return manifest


def merge_bundles(
    bundles: Iterable[Path],
    directory: Path,
    options: ReportOptions,
    *,
    run: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Bundle:
    """Combine `bundles` into one bundle in `directory` (see the module docstring)."""
    inputs: dict[str, tuple[Path, str]] = {}  # store sha256 -> (bundle, its run)
    for bundle in bundles:
        manifest = read_manifest(bundle)
        digest = manifest["files"][STORE]["sha256"]
        if digest in inputs:
            warn(f"{bundle}: the same store as {inputs[digest][0]}; read once")
            continue
        inputs[digest] = (bundle, manifest["run"])
    if not inputs:
        raise BundleError("no bundles to merge")
    runs = sorted({name for _, name in inputs.values()})
    if run is None:
        if len(runs) > 1:
            raise BundleError(f"the bundles hold runs {', '.join(runs)}: name the merged run with --run")
        run = runs[0]
    db = _new_store(directory)
    with _removed_on_error(directory):
        _merge_into(db, inputs, run)
        return write_reports(directory, run, options)


def _merge_into(db: sqlite_utils.Database, inputs: dict[str, tuple[Path, str]], run: str) -> None:
    try:
        for bundle, bundle_run in inputs.values():
            db.conn.execute("ATTACH DATABASE ? AS src", (str(bundle / STORE),))
            try:
                _check_catalogues(db.conn, bundle)
                _copy_run(db.conn, bundle_run, run)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{bundle / STORE}: cannot merge it: {exc}") from exc
            finally:
                db.conn.execute("DETACH DATABASE src")
    finally:
        db.conn.close()


@contextmanager
def _removed_on_error(directory: Path) -> Iterator[None]:
    """A bundle that could not be finished leaves nothing behind (so that the folder can be written again)."""
    try:
        yield
    except BaseException:
        for name in (STORE, f"{STORE}-wal", f"{STORE}-shm", *REPORTS, MANIFEST):
            (directory / name).unlink(missing_ok=True)
        raise
