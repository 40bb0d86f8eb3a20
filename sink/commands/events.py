"""`auditcov import` and `auditcov replay`: audit files into the store directly, or to a sink over HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from auditcov.merge.decode import Malformed
from auditcov.merge.eventfiles import AuditFile, audit_files, read_files
from auditcov.merge.openapi.stored import stored_matcher
from auditcov.merge.store import open_store, store_name
from auditcov.sink.commands import db_option
from auditcov.sink.importer import import_files
from auditcov.sink.ingest import Ingestor, check_run_name
from auditcov.sink.replay import DEFAULT_BATCH_SIZE, Backoff, Target, replay, sendable
from auditcov.sink.settings import Settings

_DEFAULT_BACKOFF = Backoff()

#: Bad items printed one by one before only their number is given.
_SHOWN_BAD_ITEMS = 20

_FILE = click.Path(dir_okay=False)
_AT_LEAST_1 = click.IntRange(1)

files_argument = click.argument("files", nargs=-1, required=True, type=click.Path())


class _FileProgress:
    """A progress bar over the bytes of the input files, plus the messages about bad files and items."""

    def __init__(self, files: list[AuditFile], verb: str):
        self.files = files
        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn(verb),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[events]} events"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task(verb, total=sum(file.size for file in files), events=0)
        self.events = 0
        self.bad_items = 0
        self.file_errors: list[str] = []

    def __enter__(self) -> _FileProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.progress.stop()
        hidden = self.bad_items - _SHOWN_BAD_ITEMS
        if hidden > 0:
            self.console.print(f"... and {hidden} more items that are not audit events")

    def advance(self, events: int) -> None:
        self.events += events
        self.progress.update(self.task, completed=sum(file.bytes_read for file in self.files), events=self.events)

    def file_error(self, message: str) -> None:
        self.file_errors.append(message)
        self.console.print(Text(f"error: {message}", style="red"), soft_wrap=True)

    def bad_item(self, reason: str) -> None:
        self.bad_items += 1
        if self.bad_items <= _SHOWN_BAD_ITEMS:
            self.console.print(Text(f"quarantined: {reason}", style="yellow"), soft_wrap=True)


@click.command("import")
@files_argument
@db_option
@click.option("--run", default=Settings().default_run, show_default=True, help="The run the events belong to.")
@click.option("--keep-bodies", is_flag=True, help="Keep requestObject/responseObject (they may hold Secrets).")
@click.option(
    "--jobs",
    default=os.cpu_count() or 1,
    show_default="the number of CPUs",
    type=_AT_LEAST_1,
    help="Worker processes that decode and prepare events (inputs of 32 MiB or more); one process writes.",
)
def import_command(files: tuple[str, ...], db_path: str, run: str, keep_bodies: bool, jobs: int) -> None:
    """Read audit files straight into the store, exactly as the sink would have stored them.

    FILES are audit logs: JSON lines, EventList or Event documents, JSON arrays, AKS diagnostic records;
    plain or gzip-compressed (.log, .json, .jsonl, .gz). A directory stands for every file under it.
    Items that are not valid events are quarantined with their file and line; a file that is not audit data
    is reported and the others are still read. Events are mapped to endpoints when the store holds a
    catalogue (`auditcov remap --openapi SOURCE` stores one). Exits 1 if any file could not be read.
    With --jobs above 1, large inputs are decoded on that many cores; what is stored is the same.

    \b
    Example:
        auditcov import --db auditcov.db --run e2e-1 kube-apiserver-audit.log audit-*.log.gz
    """
    check_run_name(run)
    files_to_read = audit_files(files)
    db = open_store(db_path)
    ingestor = Ingestor(db, keep_bodies=keep_bodies, matcher=stored_matcher(db))
    with _FileProgress(files_to_read, "importing") as progress:

        def on_batch(result) -> None:
            progress.advance(result.accepted + result.duplicates + result.quarantined)

        summary = import_files(
            ingestor,
            run,
            files_to_read,
            on_batch=on_batch,
            on_error=progress.file_error,
            on_bad=progress.bad_item,
            jobs=jobs,
        )
    click.echo(
        f"imported into run {run!r} of {store_name(db_path)}: {summary.accepted} events stored, "
        f"{summary.duplicates} duplicates, {summary.quarantined} quarantined, "
        f"{len(summary.errors)} of {len(files_to_read)} files unreadable"
    )
    if summary.errors:
        raise SystemExit(1)


@click.command("replay")
@files_argument
@click.option("--to", "url", required=True, help="The sink's webhook URL: https://HOST:PORT/v1/audit/RUN.")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=_AT_LEAST_1, help="Events per POST.")
@click.option("--concurrency", default=4, show_default=True, type=_AT_LEAST_1, help="POSTs in flight at once.")
@click.option("--token", "token_file", type=_FILE, help="File holding a bearer token.")
@click.option("--cert", "cert_file", type=_FILE, help="PEM client certificate (mTLS).")
@click.option("--key", "key_file", type=_FILE, help="PEM private key of --cert.")
@click.option("--ca", "ca_file", type=_FILE, help="PEM CA bundle that signed the sink's certificate.")
@click.option(
    "--backoff",
    default=_DEFAULT_BACKOFF.initial,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds before the first retry.",
)
@click.option(
    "--backoff-factor",
    default=_DEFAULT_BACKOFF.factor,
    show_default=True,
    type=click.FloatRange(1),
    help="Each further wait is this many times the last.",
)
@click.option(
    "--attempts",
    default=_DEFAULT_BACKOFF.attempts,
    show_default=True,
    type=_AT_LEAST_1,
    help="Attempts per batch before it is dropped.",
)
@click.option(
    "--timeout",
    default=_DEFAULT_BACKOFF.timeout,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds per attempt.",
)
def replay_command(
    files: tuple[str, ...],
    url: str,
    batch_size: int,
    concurrency: int,
    token_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    ca_file: str | None,
    backoff: float,
    backoff_factor: float,
    attempts: int,
    timeout: float,
) -> None:
    """Send audit files to a sink as the kube-apiserver's webhook would: EventList batches, retried on failure.

    Every non-2xx answer and every connection error is retried (the apiserver's rule: wait 10 s, then 1.5
    times longer each time, 5 attempts of 30 s at most); a batch that fails them all is dropped and counted.
    FILES are read as by `auditcov import`. Exits 1 if a file could not be read or a batch was dropped.

    \b
    Example:
        auditcov replay --to https://127.0.0.1:8443/v1/audit/e2e-1 --ca ca.pem \\
            --cert client.pem --key client-key.pem kube-apiserver-audit.log
    """
    target = Target.from_files(url, token_file=token_file, cert_file=cert_file, key_file=key_file, ca_file=ca_file)
    retry = Backoff(initial=backoff, factor=backoff_factor, attempts=attempts, timeout=timeout)
    files_to_read = audit_files(files)
    with _FileProgress(files_to_read, "replaying") as progress:

        def items() -> Iterator[object]:
            for entry in read_files(files_to_read, progress.file_error):
                if isinstance(entry.item, Malformed):
                    progress.bad_item(entry.item.reason)
                yield sendable(entry.item)

        summary = asyncio.run(
            replay(
                items(),
                target,
                batch_size=batch_size,
                concurrency=concurrency,
                backoff=retry,
                on_batch=progress.advance,
            )
        )
    for error in summary.errors:
        progress.console.print(Text(f"error: {error}", style="red"), soft_wrap=True)
    click.echo(
        f"replayed to {url}: {summary.batches} batches, {summary.events} events sent, {summary.retries} retries, "
        f"{summary.failures} batches dropped ({summary.failed_events} events), "
        f"{len(progress.file_errors)} of {len(files_to_read)} files unreadable"
    )
    if summary.sink_counts:
        counts = summary.sink_counts
        click.echo(
            f"the sink stored {counts.get('accepted', 0)} events, {counts.get('duplicates', 0)} duplicates, "
            f"{counts.get('quarantined', 0)} quarantined"
        )
    if summary.failures or progress.file_errors:
        raise SystemExit(1)
