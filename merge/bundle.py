"""Artifact bundles: what a CI job uploads (`auditcov export`), and bundles combined into one (`auditcov merge`).

A bundle is a folder, in prow's conventions (it goes to `$ARTIFACTS`; JUnit files are `junit_*.xml`):
- `auditcov.db`: a store (merge/store.py's one schema) holding the bundle's run and nothing else: its events,
  tests, namespaces, markers, quarantine, coverage agents, snapshots and Python lines, the layouts and meta-data
  its snapshots use, and the store's catalogue;
- the reports, rendered from that store (merge/reports/formats.py): `summary.json` (the json report's totals and
  what nothing tested), `apisnoop.json`, `report.html`, `coverage.lcov`, `cobertura.xml`, `junit_auditcov.xml`;
- `manifest.json`: the run, the store's file name, and each other file's size and sha256.

`export --gzip` writes the store and the code-coverage reports, the files that grow with the code under test,
gzipped (`auditcov.db.gz`, `coverage.lcov.gz`, `cobertura.xml.gz`): a kube-apiserver run's bundle is then a
fifth of its size (examples/e2e-v1.36.3: 10 MB, against 51 MB plain). The page, the JSON and JUnit files stay
as they are, so that a browser and prow's viewers open them from the folder.

Merging copies each bundle's store into a new one, table by table (as coverage.py's `CoverageData.update` does),
and renders the reports again; `load_bundles` copies them the same way into a store of the caller's, new or not,
SQLite or PostgreSQL (the central store of many CI jobs), that `auditcov serve` then serves (a gzipped store is
first decompressed into a temporary file). It is idempotent: events keep their identity (run, receive time, auditID,
stage) and every other table its key, so rows a store already has are skipped, and a bundle given twice (the
same store, by its sha256) is read once. Bundles of different runs (several providers, differently named
shards) become one run, named by the caller; their processes are then named `<run>:<process>` so that each
cluster's coverage stays its own.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import sqlite3
import tempfile
import zlib
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
from auditcov.merge.store import (
    DERIVED_TABLES,
    SCHEMA_VERSION,
    choose_run,
    ensure_run,
    insert_or_ignore,
    is_database_error,
    open_store,
    open_store_readonly,
    schema_tables,
    schema_version,
    store_name,
    transaction,
)

FORMAT_VERSION = 1
STORE = "auditcov.db"
STORE_GZ = f"{STORE}.gz"
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
#: The files `export --gzip` writes gzipped, with `.gz` added to their names (see the module docstring).
GZIPPED = (STORE, "coverage.lcov", "cobertura.xml")
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


@dataclass(frozen=True, slots=True)
class Loaded:
    """What `load_bundles` left in a store: the run, its events (and how many of them the load added), tests and
    coverage snapshots."""

    store: str  # the store's path or URL
    run: str
    bundles: int
    events: int
    new_events: int
    tests: int
    snapshots: int


@dataclass(frozen=True, slots=True)
class _Input:
    """A bundle to merge: its folder, run, and store file (plain or gzipped)."""

    directory: Path
    run: str
    store: Path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


#: Rows read from the source store, and inserted into the target, at a time.
_COPY_CHUNK = 10_000


def _copy_run(source: sqlite3.Connection, conn: sqlite3.Connection, run: str, target: str) -> None:
    """Copy run `run` of the store `source` into the store `conn` as run `target` (one transaction of `conn`).
    Either store may be SQLite or PostgreSQL: rows go through `insert_or_ignore`, which skips those `conn` has."""
    created_us, duplicates = source.execute("SELECT created_us, duplicates FROM runs WHERE name = ?", (run,)).fetchone()
    with transaction(conn):
        ensure_run(conn, target, created_us)
        conn.execute(
            "UPDATE runs SET created_us = CASE WHEN created_us > ? THEN ? ELSE created_us END, "
            "duplicates = CASE WHEN duplicates < ? THEN ? ELSE duplicates END WHERE name = ?",
            (created_us, created_us, duplicates, duplicates, target),
        )
        for table, spec in schema_tables().items():
            if table in ("meta", "runs", *DERIVED_TABLES):  # event_groups: kept as insert_or_ignore stores events
                continue
            columns = tuple(column for column in spec.columns if column != "id")
            if table in _USED_BY_SNAPSHOTS:
                where, params = (
                    f"WHERE hash IN (SELECT {_USED_BY_SNAPSHOTS[table]} FROM cover_snapshots WHERE run = ?)",
                    (run,),
                )
            elif "run" in columns:
                where, params = "WHERE run = ?", (run,)
            else:
                where, params = "", ()
            order = "ORDER BY id" if spec.has_id else ""
            rows = source.execute(f"SELECT {', '.join(columns)} FROM {table} {where} {order}", params)
            renamed = _renamer(columns, run, target)
            while chunk := rows.fetchmany(_COPY_CHUNK):
                insert_or_ignore(conn, table, columns, chunk if renamed is None else [renamed(row) for row in chunk])
        catalogue = source.execute("SELECT value FROM meta WHERE key = ?", (CATALOGUE_SOURCE_KEY,)).fetchone()
        if catalogue is not None:
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (CATALOGUE_SOURCE_KEY, catalogue[0]))


def _renamer(columns: tuple[str, ...], run: str, target: str) -> Callable[[tuple], tuple] | None:
    """How a row of a run's table changes when the run is copied as `target`: its run renamed, and its process
    named `<run>:<process>` so that each cluster's coverage stays its own; None when nothing changes."""
    if "run" not in columns or run == target:
        return None
    at_run = columns.index("run")
    at_process = columns.index("process") if "process" in columns else None

    def renamed(row: tuple) -> tuple:
        values = list(row)
        values[at_run] = target
        if at_process is not None:
            values[at_process] = f"{run}:{values[at_process]}"
        return tuple(values)

    return renamed


def _check_catalogues(conn: sqlite3.Connection, source: sqlite3.Connection, where: Path, against: str) -> None:
    """A merged store holds one catalogue: the bundles' catalogues (and the store's) must list the same
    operations; `against` names what the main store's catalogue came from, for the message."""
    mine = {row[0] for row in conn.execute("SELECT operation_id FROM endpoints")}
    theirs = {row[0] for row in source.execute("SELECT operation_id FROM endpoints")}
    if mine and theirs and mine != theirs:
        named = source.execute("SELECT value FROM meta WHERE key = ?", (CATALOGUE_SOURCE_KEY,)).fetchone()
        raise BundleError(
            f"{where}: its catalogue ({named[0] if named else 'unnamed'}) differs from {against}: "
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


def write_reports(directory: Path, run: str, options: ReportOptions, *, compress: bool = False) -> Bundle:
    """Render the reports of the bundle store in `directory` and write its manifest; with `compress`, the files
    of GZIPPED are then gzipped."""
    db = open_store_readonly(directory / STORE)
    try:
        models = RunModels(db, run, successful_only=options.successful_only)
        for name, output_format in REPORTS.items():
            render = _summary if output_format is None else partial(render_report, db, run, output_format, options)
            (directory / name).write_bytes(render(models))
    finally:
        db.conn.close()
    names = [STORE, *REPORTS]
    if compress:
        names = [_gzip(directory / name) if name in GZIPPED else name for name in names]
    files = {
        name: {"size": (directory / name).stat().st_size, "sha256": _sha256(directory / name)} for name in sorted(names)
    }
    store = STORE_GZ if compress else STORE
    manifest = {"format_version": FORMAT_VERSION, "run": run, "store": store, "files": files}
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return Bundle(directory, run, files)


def _gzip(path: Path) -> str:
    """Replace the file at `path` by its gzip (`<name>.gz`, with no time or name in its header, so that the same
    file gives the same bytes); return the new name."""
    target = path.with_name(f"{path.name}.gz")
    with path.open("rb") as source, target.open("wb") as raw, gzip.GzipFile("", "wb", 6, raw, mtime=0) as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    path.unlink()
    return target.name


def _new_store(directory: Path) -> sqlite_utils.Database:
    directory.mkdir(parents=True, exist_ok=True)
    for name in (STORE, STORE_GZ):
        if (directory / name).exists():
            raise BundleError(f"{directory}: already holds a bundle ({name}); write to a new folder")
    db = open_store(directory / STORE)
    db.conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    return db


def export_bundle(
    db_path: str | Path, run: str | None, directory: Path, options: ReportOptions, *, compress: bool = False
) -> Bundle:
    """Write the bundle of `run` (the store's only run when None) of the store at `db_path` into `directory`;
    with `compress`, its big files gzipped (see the module docstring)."""
    source = open_store_readonly(db_path)
    try:
        run = choose_run(source, run)
    finally:
        source.conn.close()
    db = _new_store(directory)
    with _removed_on_error(directory):
        source = open_store_readonly(db_path)
        try:
            _copy_run(source.conn, db.conn, run, run)
        finally:
            source.conn.close()
            db.conn.close()
        return write_reports(directory, run, options, compress=compress)


def read_manifest(directory: Path) -> dict:
    """A bundle's manifest, after checking that its store (`auditcov.db` or `auditcov.db.gz`, the manifest's
    `store`) is the one the manifest describes."""
    path = directory / MANIFEST
    try:
        manifest = orjson.loads(path.read_bytes())
        name = manifest.get("store", STORE)  # bundles written before `store` was added hold auditcov.db
        store = manifest["files"][name]
        run = manifest["run"]
    except FileNotFoundError:
        raise BundleError(f"{directory}: not a bundle (no {MANIFEST})") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path}: not a bundle manifest ({exc!r})") from None
    if not isinstance(run, str):
        raise BundleError(f"{path}: 'run' must be a string")
    if name not in (STORE, STORE_GZ):
        raise BundleError(f"{path}: 'store' must be {STORE} or {STORE_GZ}, not {name!r}")
    if not (directory / name).is_file() or _sha256(directory / name) != store.get("sha256"):
        raise BundleError(f"{directory}: {name} is missing or does not match the sha256 in {MANIFEST}")
    return manifest


def _read_inputs(
    bundles: Iterable[Path], run: str | None, warn: Callable[[str], None]
) -> tuple[dict[str, _Input], str]:
    """The distinct bundles (by their store's sha256) and the merged run's name (`run`, or the bundles' one run)."""
    inputs: dict[str, _Input] = {}
    for bundle in bundles:
        manifest = read_manifest(bundle)
        name = manifest.get("store", STORE)
        digest = manifest["files"][name]["sha256"]
        if digest in inputs:
            warn(f"{bundle}: the same store as {inputs[digest].directory}; read once")
            continue
        inputs[digest] = _Input(bundle, manifest["run"], bundle / name)
    if not inputs:
        raise BundleError("no bundles to merge")
    runs = sorted({source.run for source in inputs.values()})
    if run is None:
        if len(runs) > 1:
            raise BundleError(f"the bundles hold runs {', '.join(runs)}: name the merged run with --run")
        run = runs[0]
    return inputs, run


def merge_bundles(
    bundles: Iterable[Path],
    directory: Path,
    options: ReportOptions,
    *,
    run: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Bundle:
    """Combine `bundles` into one bundle in `directory` (see the module docstring)."""
    inputs, run = _read_inputs(bundles, run, warn)
    db = _new_store(directory)
    with _removed_on_error(directory):
        try:
            _merge_into(db.conn, inputs, run, "the bundles' before it")
        finally:
            db.conn.close()
        return write_reports(directory, run, options)


def load_bundles(
    bundles: Iterable[Path],
    db_path: str | Path,
    *,
    run: str | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Loaded:
    """Copy `bundles` into the store at `db_path` (made when missing) as one run, as `merge_bundles` combines
    them: loading the same bundles again adds nothing."""
    inputs, run = _read_inputs(bundles, run, warn)
    db = open_store(db_path)
    try:
        before = _count(db.conn, "events", run)
        _merge_into(db.conn, inputs, run, f"the catalogue of {store_name(db_path)}")
        events = _count(db.conn, "events", run)
        # A test is known by its client's user agent (tests) or by its markers.
        (tests,) = db.conn.execute(
            "SELECT count(*) FROM "
            "(SELECT name FROM tests WHERE run = ? UNION SELECT test FROM markers WHERE run = ?) AS named",
            (run, run),
        ).fetchone()
        snapshots = _count(db.conn, "cover_snapshots", run)
    finally:
        db.conn.close()
    return Loaded(str(db_path), run, len(inputs), events, events - before, tests, snapshots)


def _count(conn: sqlite3.Connection, table: str, run: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table} WHERE run = ?", (run,)).fetchone()[0]


def _merge_into(conn: sqlite3.Connection, inputs: dict[str, _Input], run: str, against: str) -> None:
    for bundle in inputs.values():
        with _readable(bundle.store) as path:
            source = open_store_readonly(path)
            try:
                _check_catalogues(conn, source.conn, bundle.directory, against)
                _copy_run(source.conn, conn, bundle.run, run)
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                raise StoreError(f"{bundle.store}: cannot merge it: {exc}") from exc
            finally:
                source.conn.close()


@contextmanager
def _readable(store: Path) -> Iterator[Path]:
    """A bundle's store as a file of this schema version SQLite can open: itself, or a copy in a temporary folder
    (removed afterwards), decompressed when gzipped and upgraded when an older auditcov wrote it (the bundle's
    own files are never changed)."""
    if store.name != STORE_GZ and schema_version(store) in (None, SCHEMA_VERSION):
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="auditcov-bundle-") as folder:
        plain = Path(folder) / STORE
        try:
            with gzip.open(store) if store.name == STORE_GZ else store.open("rb") as source, plain.open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        except (OSError, EOFError, zlib.error) as exc:
            raise BundleError(
                f"{store}: cannot {'decompress' if store.name == STORE_GZ else 'copy'} it: {exc}"
            ) from None
        if schema_version(plain) not in (None, SCHEMA_VERSION):
            open_store(plain).conn.close()
        yield plain


@contextmanager
def _removed_on_error(directory: Path) -> Iterator[None]:
    """A bundle that could not be finished leaves nothing behind (so that the folder can be written again)."""
    try:
        yield
    except BaseException:
        for name in (STORE, f"{STORE}-wal", f"{STORE}-shm", *REPORTS, *(f"{name}.gz" for name in GZIPPED), MANIFEST):
            (directory / name).unlink(missing_ok=True)
        raise
