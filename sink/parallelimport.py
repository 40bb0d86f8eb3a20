"""`auditcov import` of a large input on every core: worker processes decode and prepare, one process commits.

`import_files_parallel(ingestor, run, files, jobs=N)` stores exactly what `sink.importer.import_files` stores: the
same events in the same order (so with the same ids), the same duplicates, the same quarantine rows with the
same reasons (file and line first). It splits the work so:

- the main process reads each file (`merge.eventfiles.AuditFile.pieces`: decompressing, splitting and numbering
  lines, which is cheap) and sends blocks of raw lines to `jobs` worker processes;
- a worker decodes a block (`merge.linedecode.line_event`, else `merge.eventfiles.line_items`) and prepares it
  (`sink.importer.prepare_entries`: validation, user agents, endpoint matching), which is most of an import's
  CPU, and sends the `PreparedBatch`es back;
- the main process commits them with `Ingestor.commit`, in input order: one writer, whatever the store (SQLite
  or PostgreSQL), and no worker ever opens it.

A file that is not JSON lines from its first line on (a pretty-printed document, a file that starts with junk)
is decoded and prepared in the main process, in its place in the order, as `import_files` would.

Workers are spawned (a fresh interpreter each), never forked from the main process, which may hold threads and
an open store; as its children, their CPU time counts in its own (`bench/import.py` reads it). At most a few
blocks per worker are in flight, so memory stays flat on a log of any size. Errors keep their shape: a file that
cannot be read is reported to `on_error` as `import_files` reports it and the others are still read; a worker
that fails raises `ImportWorkerError` naming the file and lines of its block; a worker that dies (killed, out of
memory) raises it too, instead of leaving the pool hung. Either way the blocks not yet started are cancelled.
"""

from __future__ import annotations

import gc
import marshal
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields

from auditcov.merge.cover.model import gc_paused
from auditcov.merge.errors import AuditcovError, BadBodyError
from auditcov.merge.eventfiles import AuditFile, FileItem, LineBlock, line_items
from auditcov.merge.linedecode import line_event
from auditcov.sink.importer import (
    IMPORT_BATCH_SIZE,
    ImportSummary,
    PreparedEntries,
    commit_prepared,
    prepare_entries,
)
from auditcov.sink.ingest import Ingestor, IngestResult, PreparedBatch

#: Bytes of lines a worker is sent at a time (about 1,100 events with bodies, 3,500 without).
BLOCK_BYTES = 2 * 1024 * 1024
#: Blocks in flight per worker: enough that a worker never waits for the next one while the main process commits.
_BLOCKS_PER_WORKER = 3


class ImportWorkerError(AuditcovError):
    """A worker process failed on a block of lines, or died while it held one."""


def import_files_parallel(
    ingestor: Ingestor,
    run: str,
    files: Iterable[AuditFile],
    *,
    jobs: int,
    batch_size: int = IMPORT_BATCH_SIZE,
    block_bytes: int = BLOCK_BYTES,
    on_batch: Callable[[IngestResult], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    on_bad: Callable[[str], None] | None = None,
) -> ImportSummary:
    """`sink.importer.import_files` with the decoding and preparing done by `jobs` worker processes; see the
    module docstring."""
    summary = ImportSummary()
    in_flight: deque[tuple[Future, LineBlock | None]] = deque()

    def commit_ready(limit: int) -> None:
        while len(in_flight) > limit:
            future, block = in_flight.popleft()
            for prepared in _outcome(future, block):
                commit_prepared(ingestor, prepared, summary, on_batch, on_bad)

    pool = ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(ingestor.keep_bodies, ingestor.matcher),
    )
    with gc_paused():  # see commit_prepared
        try:
            for piece in _pieces(files, block_bytes, batch_size, summary, on_error):
                if isinstance(piece, LineBlock):
                    in_flight.append((_submit(pool, run, piece, batch_size), piece))
                else:  # items read in this process: prepared here, committed in their place
                    done: Future = Future()
                    done.set_result([prepare_entries(ingestor, run, piece)])
                    in_flight.append((done, None))
                commit_ready(jobs * _BLOCKS_PER_WORKER)
            commit_ready(0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return summary


def _pieces(
    files: Iterable[AuditFile],
    block_bytes: int,
    batch_size: int,
    summary: ImportSummary,
    on_error: Callable[[str], None] | None,
) -> Iterator[LineBlock | list[FileItem]]:
    """Every file's blocks of lines, or its items in batches; a file that fails is reported as `import_files`
    reports it, after the pieces read before the failure."""
    for file in files:
        items: list[FileItem] = []
        try:
            for piece in file.pieces(block_bytes):
                if isinstance(piece, LineBlock):
                    yield piece
                    continue
                items.append(piece)
                if len(items) == batch_size:
                    yield items
                    items = []
        except BadBodyError as exc:
            summary.errors.append(str(exc))
            if on_error is not None:
                on_error(str(exc))
        if items:
            yield items


def _submit(pool: ProcessPoolExecutor, run: str, block: LineBlock, batch_size: int) -> Future:
    """The block's preparing on the pool; a pool that broke before it was handed over fails it the same way, in
    its place (the blocks before it are still committed)."""
    try:
        return pool.submit(_prepare_block, run, block, batch_size)
    except BrokenProcessPool as exc:
        broken: Future = Future()
        broken.set_exception(exc)
        return broken


def _outcome(future: Future, block: LineBlock | None) -> list[PreparedEntries]:
    try:
        result = future.result()
    except BrokenProcessPool:
        assert block is not None  # only pool futures can break
        raise ImportWorkerError(
            f"{_where(block)}: not prepared: a worker process ended abruptly (killed, or out of memory?)"
        ) from None
    if isinstance(result, list):  # prepared in this process
        return result
    return [PreparedEntries(PreparedBatch(**batch), bad_reasons) for batch, bad_reasons in marshal.loads(result)]


# The worker process's side. `_ingestor` prepares only: it has no store (db is None) and never writes.
_ingestor: Ingestor | None = None


def _start_worker(keep_bodies: bool, matcher: object) -> None:
    global _ingestor
    _ingestor = Ingestor(None, keep_bodies=keep_bodies, matcher=matcher)
    # A block is thousands of decoded items and no reference cycles: the automatic collections they set off
    # walked every one of them, a third of the worker's time (bench/import.py); one young collection per
    # block catches any cycle instead.
    gc.disable()


def _prepare_block(run: str, block: LineBlock, batch_size: int) -> bytes:
    """A block's lines decoded (straight to events when `merge.linedecode` can, which gives the same) and
    prepared, in batches of at most `batch_size` items; each batch's fields and bad reasons, marshalled (plain
    tuples, strings and numbers: marshal writes them in a third of pickle's time, bench/import.py)."""
    try:
        entries = []
        keep_bodies = _ingestor.keep_bodies
        for number, line in block.numbered_lines():
            event = line_event(line, keep_bodies=keep_bodies)
            if event is None:
                entries.extend(line_items(block.path, number, line))
            else:
                entries.append(FileItem(f"{block.path}:{number}", event))
        chunks = [entries[at : at + batch_size] for at in range(0, len(entries), batch_size)]
        prepared = [prepare_entries(_ingestor, run, chunk) for chunk in chunks]
    except Exception as exc:
        raise ImportWorkerError(f"{_where(block)}: {type(exc).__name__}: {exc}") from None
    del entries
    gc.collect(0)
    names = [field.name for field in fields(PreparedBatch)]
    return marshal.dumps(
        [({name: getattr(entries.batch, name) for name in names}, entries.bad_reasons) for entries in prepared]
    )


def _where(block: LineBlock) -> str:
    return f"{block.path}: lines {block.start}-{block.end}"
