"""Import one coverage source into the store (`auditcov cover import`).

What a source is, by its shape:
- a directory: Go binary coverage (`covmeta.*` + `covcounters.*`) holding the counters of one process at one
  moment, so exactly one counter file; its process defaults to `<meta hash>.<pid>` from the counter file's
  name, its time to that file's modification time;
- a file starting with `mode:`: a Go text profile, possibly a KUBE_COVERAGE_FILE being rewritten (read with
  merge/cover/livefile.py); its process defaults to the file's path, its time to its modification time;
- a SQLite file: a coverage.py data file; each context's lines are stored as per-test Python lines.

A snapshot's moment matters: windows are cut at snapshot times, so pass `at_us` when the file's modification
time is not when the counters were taken (a copied file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from auditcov.merge.cover import covdata, gotext
from auditcov.merge.cover.livefile import read_settled
from auditcov.merge.cover.model import CoverageError, Profile
from auditcov.merge.cover.pycoverage import SQLITE_MAGIC, read_contexts
from auditcov.merge.cover.snapshots import save_python_lines, save_snapshot


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import stored: a snapshot (`blocks` of `process` at `at_us`) or Python contexts."""

    kind: str
    source: str
    process: str | None = None
    at_us: int | None = None
    blocks: int = 0
    contexts: int = 0


def _mtime_us(path: Path) -> int:
    return os.stat(path).st_mtime_ns // 1000


def _counter_file(directory: Path) -> Path:
    counters = sorted(directory.glob("covcounters.*"))
    if len(counters) != 1:
        names = ", ".join(path.name for path in counters) or "none"
        raise CoverageError(
            f"{directory}: a snapshot directory holds the counters of one process at one moment, so exactly one "
            f"covcounters file; found {len(counters)} ({names}). Write each snapshot to its own directory."
        )
    return counters[0]


def _read_directory(directory: Path) -> tuple[Profile, str, int]:
    counter_file = _counter_file(directory)
    # covcounters.<meta hash>.<pid>.<nanotime>
    _, meta_hash, pid, _ = counter_file.name.split(".", 3)
    return covdata.read_covdata(directory), f"{meta_hash[:12]}.{pid}", _mtime_us(counter_file)


def import_coverage(
    db: sqlite_utils.Database,
    source: str | Path,
    *,
    run: str,
    now_us: int,
    process: str | None = None,
    at_us: int | None = None,
) -> Imported:
    """Store the snapshot or the per-test Python lines in `source` under `run` (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        profile, default_process, default_at = _read_directory(path)
    else:
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise CoverageError(f"{path}: cannot read: {exc}") from exc
        if head == SQLITE_MAGIC:
            if process is not None or at_us is not None:
                raise CoverageError(
                    f"{path}: a coverage.py file holds per-test lines, not a snapshot: it takes no --process or --at"
                )
            contexts = read_contexts(path)
            save_python_lines(db, run=run, contexts=contexts, now_us=now_us)
            return Imported("python", str(path), contexts=len(contexts))
        if not head.startswith(b"mode:"):
            raise CoverageError(
                f"{path}: not a Go covdata directory, a Go text profile (first line `mode: ...`) "
                f"or a coverage.py data file"
            )
        profile, default_at = read_settled(path, gotext.parse_text)
        default_process = str(path)
    process = process or default_process
    at_us = default_at if at_us is None else at_us
    save_snapshot(db, run=run, process=process, at_us=at_us, profile=profile, source=str(path), now_us=now_us)
    return Imported("snapshot", str(path), process=process, at_us=at_us, blocks=len(profile.statements))
