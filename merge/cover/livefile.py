"""Read a coverage text profile that its process may be rewriting right now (Kubernetes' KUBE_COVERAGE_FILE).

A Kubernetes coverage build rewrites its whole text profile every few seconds. Kubernetes itself writes a
temporary file and renames it over the old one, but other writers truncate and rewrite in place, and a copy
made by a sidecar can be caught half done. A read is accepted only when all of these hold:

1. the file did not change while we read it: its inode, size and modification time (ns) are the same before
   the read, on the open file after the read, and on the path after the read (a rename or rewrite shows);
2. it has been quiet: its modification time is at least `quiet` seconds old when we start, so a writer that
   stalls between two writes is not taken for finished;
3. it is well-formed: `parse` accepts it (a Go text profile starts with a `mode:` line, and a cut-off last
   line lacks its count or newline).

A read that fails any of these is torn: wait and read again, up to `attempts` times; then raise
`CoverageError` saying what was wrong on the last attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from auditcov.merge.cover.model import CoverageError

T = TypeVar("T")


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def read_settled(
    path: str | Path,
    parse: Callable[[str], T],
    *,
    quiet: float = 0.2,
    attempts: int = 20,
    pause: float = 0.1,
) -> tuple[T, int]:
    """Read the text file at `path` once it is whole (see the module docstring).

    Returns `parse(text)` and the file's modification time in microseconds since the epoch: when the writer
    finished it, so when its counters were taken.
    """
    path = Path(path)
    problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause)
        try:
            before = os.stat(path)
            age = time.time() - before.st_mtime_ns / 1e9
            if age < quiet:
                problem = f"it was written {age:.3f}s ago (less than {quiet}s): the writer may not be done"
                time.sleep(quiet - age)
                continue
            with open(path, "rb") as handle:
                data = handle.read()
                during = os.fstat(handle.fileno())
            after = os.stat(path)
        except FileNotFoundError:
            # Between a writer's unlink and rename there may briefly be no file at all.
            problem = "the file does not exist"
            continue
        except OSError as exc:
            raise CoverageError(f"{path}: cannot read: {exc}") from exc
        if not (_identity(before) == _identity(during) == _identity(after)) or len(data) != before.st_size:
            problem = "it changed while being read"
            continue
        try:
            return parse(data.decode()), before.st_mtime_ns // 1000
        except (CoverageError, UnicodeDecodeError) as exc:
            problem = f"it is not a whole profile: {exc}"
    raise CoverageError(f"{path}: no whole read in {attempts} attempts; last: {problem}")
