"""Audit files straight into the store, through the sink's own ingest core (`sink.ingest.Ingestor`).

`import_files(ingestor, run, files)` reads the files with `merge.eventfiles`, hands the items to the ingestor in
batches (one transaction each), and adds up what became of them. The ingestor validates, attributes and
deduplicates exactly as the live sink does; the only thing added here is provenance: an item that is not a
valid event is quarantined with a reason that starts with its file and line, so the quarantine says where to
look (only a batch that holds such an item is checked twice to find it). A file that cannot be read at all is
reported to `on_error`, and the other files are still imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import BadEventError
from auditcov.merge.eventfiles import AuditFile, FileItem, read_files
from auditcov.merge.events import event_from_json, item_json
from auditcov.sink.ingest import Ingestor, IngestResult
from auditcov.sink.replay import batches

#: Items per transaction: large enough that commits are cheap, small enough that progress moves.
IMPORT_BATCH_SIZE = 2000


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
) -> ImportSummary:
    """Ingest every item of `files` into `run`; see the module docstring.

    `on_batch` hears each committed batch's counts, `on_error` each file that cannot be read, `on_bad` the
    reason of each item about to be quarantined.
    """
    summary = ImportSummary()

    def file_failed(message: str) -> None:
        summary.errors.append(message)
        if on_error is not None:
            on_error(message)

    for entries in batches(read_files(files, file_failed), batch_size):
        items = [entry.item for entry in entries]
        malformed = sum(1 for item in items if isinstance(item, Malformed))
        prepared = ingestor.prepare(run, items)
        if len(prepared.quarantine) > malformed:
            # Some items are not valid events: prepare again with their origins in the quarantine reasons.
            items = [located(entry) for entry in entries]
            prepared = ingestor.prepare(run, items)
        if on_bad is not None:
            for item in items:
                if isinstance(item, Malformed):
                    on_bad(item.reason)
        result = ingestor.commit(prepared)
        summary.add(result)
        if on_batch is not None:
            on_batch(result)
    return summary


def located(entry: FileItem) -> object:
    """The item, or, when it is not a valid event, a `Malformed` whose reason starts with the item's origin."""
    item = entry.item
    if isinstance(item, Malformed):
        return item
    try:
        event_from_json(item)
    except BadEventError as exc:
        return Malformed(item_json(item), f"{entry.origin}: {exc}")
    return item
