"""Audit files straight into the store, through the sink's own ingest core (`sink.ingest.Ingestor`).

`import_files(ingestor, run, files)` reads the files with `merge.eventfiles`, hands the items to the ingestor in
batches (one transaction each), and adds up what became of them. The ingestor validates, attributes and
deduplicates exactly as the live sink does; the only thing added here is provenance: an item that is not a
valid event is quarantined with a reason that starts with its file and line, so the quarantine says where to
look (only a batch that holds such an item is checked twice to find it). A file that cannot be read at all is
reported to `on_error`, and the other files are still imported. With `jobs` above 1 and an input of at least
`PARALLEL_MIN_BYTES`, worker processes decode and prepare the batches (`sink.parallelimport`, which stores the
same); `prepare_entries` and `commit_prepared` are the two halves of a batch that both ways share.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.decode import Malformed
from auditcov.merge.errors import BadEventError
from auditcov.merge.eventfiles import AuditFile, FileItem, read_files
from auditcov.merge.events import AuditEvent, event_from_json, item_json
from auditcov.sink.ingest import Ingestor, IngestResult, PreparedBatch

#: Items per transaction: large enough that commits are cheap, small enough that progress moves.
IMPORT_BATCH_SIZE = 2000
#: Input (bytes on disk) from which `jobs` > 1 starts worker processes. Starting two costs about 0.9 s (each
#: imports auditcov afresh) and each saves about 30 us an event (bench/import.py): they pay for themselves from
#: about 30,000 events, 50 MB of events with bodies or 20 MB of Metadata-level ones.
PARALLEL_MIN_BYTES = 32 * 1024 * 1024


@dataclass(slots=True)
class ImportSummary:
    """What an import stored, skipped as already stored, and quarantined; and the files it could not read."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    errors: list[str] = field(default_factory=list)  # one line per file that could not be read

    def add(self, result: IngestResult) -> None:
        self.accepted += result.accepted
        self.duplicates += result.duplicates
        self.quarantined += result.quarantined


def import_files(
    ingestor: Ingestor,
    run: str,
    files: Iterable[AuditFile],
    *,
    batch_size: int = IMPORT_BATCH_SIZE,
    on_batch: Callable[[IngestResult], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_bad: Callable[[str], None] | None = None,
    jobs: int = 1,
) -> ImportSummary:
    """Ingest every item of `files` into `run`; see the module docstring.

    `on_batch` hears each committed batch's counts, `on_error` each file that cannot be read, `on_bad` the
    reason of each item about to be quarantined. With `jobs` > 1 and at least `PARALLEL_MIN_BYTES` of input,
    `jobs` worker processes decode and prepare (`sink.parallelimport`), storing exactly the same.
    """
    files = list(files)
    if jobs > 1 and sum(file.size for file in files) >= PARALLEL_MIN_BYTES:
        from auditcov.sink.parallelimport import import_files_parallel  # the pool's imports only when used

        return import_files_parallel(
            ingestor, run, files, jobs=jobs, batch_size=batch_size, on_batch=on_batch, on_error=on_error, on_bad=on_bad
        )
    from auditcov.sink.replay import batches  # here: aiohttp, which replay needs, is no import worker's concern

    summary = ImportSummary()

    def file_failed(message: str) -> None:
        summary.errors.append(message)
        if on_error is not None:
            on_error(message)

    with gc_paused():
        for entries in batches(read_files(files, file_failed), batch_size):
            commit_prepared(ingestor, prepare_entries(ingestor, run, entries), summary, on_batch, on_bad)
    return summary


class PreparedEntries(NamedTuple):
    """A batch ready to commit, and the reasons of its items that will be quarantined (for `on_bad`)."""

    batch: PreparedBatch
    bad_reasons: list[str]


def prepare_entries(ingestor: Ingestor, run: str, entries: Sequence[FileItem]) -> PreparedEntries:
    """`Ingestor.prepare` of the entries' items; when some are not valid events, again, with their origins in
    the quarantine reasons (only then, so that a clean batch is checked once). Pure: no I/O."""
    items = [entry.item for entry in entries]
    malformed = sum(1 for item in items if isinstance(item, Malformed))
    prepared = ingestor.prepare(run, items)
    if len(prepared.quarantine) > malformed:
        items = [located(entry) for entry in entries]
        prepared = ingestor.prepare(run, items)
    return PreparedEntries(prepared, [item.reason for item in items if isinstance(item, Malformed)])


def commit_prepared(
    ingestor: Ingestor,
    prepared: PreparedEntries,
    summary: ImportSummary,
    on_batch: Callable[[IngestResult], None] | None,
    on_bad: Callable[[str], None] | None,
) -> None:
    """Commit one prepared batch and tell the callbacks: its bad items' reasons first, then its counts.

    The caller pauses the automatic collections (`gc_paused`): a batch is thousands of decoded items and rows and
    no reference cycles, and the collections they set off walked them all (60,000 of bench/import.py's events:
    56-60 us of CPU an event instead of 66); a young collection per batch catches any cycle instead."""
    if on_bad is not None:
        for reason in prepared.bad_reasons:
            on_bad(reason)
    result = ingestor.commit(prepared.batch)
    gc.collect(0)
    summary.add(result)
    if on_batch is not None:
        on_batch(result)


def located(entry: FileItem) -> object:
    """The item, or, when it is not a valid event, a `Malformed` whose reason starts with the item's origin."""
    item = entry.item
    if isinstance(item, Malformed | AuditEvent):  # an AuditEvent was checked when it was decoded
        return item
    try:
        event_from_json(item)
    except BadEventError as exc:
        return Malformed(item_json(item), f"{entry.origin}: {exc}")
    return item
