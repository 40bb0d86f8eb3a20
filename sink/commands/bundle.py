"""`auditcov export` (a run's artifact bundle, for CI), `auditcov merge` (bundles combined into one, or loaded
into a store) and `auditcov drop` (a run removed, archived first as a bundle): merge/bundle.py does the work."""

from __future__ import annotations

from pathlib import Path

import click

from auditcov.merge.bundle import export_bundle, load_bundles, merge_bundles
from auditcov.merge.reports.formats import ReportOptions
from auditcov.merge.store import drop_run, open_store, store_name
from auditcov.sink.commands import db_option, run_option

_FOLDER = click.Path(file_okay=False, path_type=Path)


def _warn(text: str) -> None:
    click.echo(text, err=True)


def _done(bundle) -> None:
    size = sum(entry["size"] for entry in bundle.files.values())
    click.echo(f"{bundle.directory}: bundle of run {bundle.run!r}, {len(bundle.files)} files, {size} bytes")


@click.command("export")
@db_option
@run_option
@click.option(
    "--artifacts",
    "directory",
    envvar="ARTIFACTS",
    required=True,
    type=_FOLDER,
    help="The folder to write (env ARTIFACTS, prow's artifacts folder); it must not hold a bundle yet.",
)
@click.option(
    "--gzip",
    "compress",
    is_flag=True,
    help="Write the store, coverage.lcov and cobertura.xml gzipped (.gz): a bundle to keep in a repository.",
)
def export_command(db_path: str, run: str | None, directory: Path, compress: bool) -> None:
    """Write a run's artifact bundle: its store, summary.json, apisnoop.json, report.html, coverage.lcov,
    cobertura.xml, junit_auditcov.xml and manifest.json (each file's size and sha256).

    SOURCE_DATE_EPOCH, when set, is the reports' time (Cobertura's timestamp).

    Example: auditcov export --db run.db --run e2e-1 --artifacts "$ARTIFACTS"
    """
    _done(export_bundle(db_path, run, directory, ReportOptions(), compress=compress))


@click.command("merge")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "directory", type=_FOLDER, help="The folder of the merged bundle.")
@click.option(
    "--db",
    "db_path",
    metavar="FILE|URL",
    help="Load the bundles into this store instead: a SQLite file (made when missing) or a postgresql:// URL, the "
    "central store of many CI jobs (`auditcov serve --db` serves it).",
)
@click.option("--run", "run", default=None, help="The merged run's name (needed when the bundles' runs differ).")
def merge_command(bundles: tuple[Path, ...], directory: Path | None, db_path: str | None, run: str | None) -> None:
    """Combine bundles (shards of one run, several providers) into one bundle with the same files (-o), or load
    them into a store (--db); give exactly one of the two.

    Merging is idempotent: a bundle given twice counts once, and so does any event two bundles share, or a bundle
    the store already holds. Bundles of differently named runs become the one run --run names; their processes
    are then `<run>:<process>`.

    Examples: auditcov merge shard-1/ shard-2/ -o merged/
              auditcov merge examples/e2e-v1.36.3 --db auditcov.db
              auditcov merge artifacts/*/ --db postgresql://auditcov@db.example/auditcov
    """
    if (directory is None) == (db_path is None):
        raise click.UsageError("give -o DIR (a merged bundle) or --db STORE (load into a store): one of the two")
    if directory is not None:
        _done(merge_bundles(bundles, directory, ReportOptions(), run=run, warn=_warn))
        return
    loaded = load_bundles(bundles, db_path, run=run, warn=_warn)
    click.echo(
        f"{store_name(loaded.store)}: run {loaded.run!r} from {loaded.bundles} bundle(s): {loaded.events} events "
        f"({loaded.new_events} new), {loaded.tests} tests, {loaded.snapshots} coverage snapshots"
    )


@click.command("drop")
@db_option
@click.option("--run", "run", required=True, help="The run to remove.")
@click.option(
    "--archive",
    "directory",
    type=_FOLDER,
    default=None,
    help="First write the run's bundle here (as `auditcov export --gzip`); the run is dropped only once it is written.",
)
def drop_command(db_path: str, run: str, directory: Path | None) -> None:
    """Remove a run from the store: its events, tests, namespaces, markers, quarantine, agents, snapshots and
    Python lines. On PostgreSQL its events are a partition of their own, dropped at once however many they are.

    Examples: auditcov drop --db postgresql://auditcov@db.example/auditcov --run pr-1234 --archive old/pr-1234
              auditcov drop --db auditcov.db --run scratch
    """
    if directory is not None:
        _done(export_bundle(db_path, run, directory, ReportOptions(), compress=True))
    db = open_store(db_path)
    try:
        removed = drop_run(db.conn, run)
    finally:
        db.conn.close()
    counts = ", ".join(f"{count} {table}" for table, count in removed.items() if count)
    click.echo(f"dropped run {run!r} from {store_name(db_path)}: {counts or 'nothing else'}")
