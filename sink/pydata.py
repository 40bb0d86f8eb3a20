"""Storing a Python agent's coverage.py data file in the sink: its contexts become per-test Python lines.

The body of `POST /v1/runs/{run}/agents/{process}/data` (`application/vnd.coverage+sqlite`, sent by
merge/cover/pyagent.py at exit) is read off the event loop with coverage.py's own API
(merge/cover/pycoverage.py), and its lines are written by the sink's one writer (merge/cover/snapshots.py), so
they feed the same per-test report as an imported `.coverage` file. A context that was stored before (an
earlier upload of the same process) is replaced: coverage.py's data only grows while a process runs.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

from auditcov.merge.cover.pyagent import DATA_TYPE
from auditcov.merge.cover.pycoverage import read_contexts_from_bytes
from auditcov.merge.cover.snapshots import write_python_lines
from auditcov.merge.events import now_us
from auditcov.sink.writer import Writer

__all__ = ["DATA_TYPE", "StoredData", "store_python_data"]  # DATA_TYPE: what the upload route accepts


@dataclass(frozen=True, slots=True)
class StoredData:
    """What one upload stored: its contexts and the (context, file) rows written."""

    contexts: int
    rows: int

    def as_dict(self) -> dict[str, int]:
        return {"contexts": self.contexts, "rows": self.rows}


async def store_python_data(writer: Writer, *, run: str, process: str, data: bytes) -> StoredData:
    """Store the per-test lines of the coverage.py data file `data` that `process` of `run` sent; a file that
    is not coverage.py data raises CoverageError (a 400 in the sink) naming the process."""
    name = f"the coverage.py data of process {process!r} in run {run!r}"
    loop = asyncio.get_running_loop()
    contexts = await loop.run_in_executor(None, partial(read_contexts_from_bytes, data, name=name))
    rows = await writer.submit(lambda: write_python_lines(writer.db.conn, run=run, contexts=contexts, now_us=now_us()))
    return StoredData(len(contexts), rows)
