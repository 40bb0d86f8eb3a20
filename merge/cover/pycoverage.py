"""Read per-test Python line coverage from a coverage.py data file with dynamic contexts.

Reads through coverage.py's own API (`CoverageData`, `measured_contexts`, `set_query_contexts`, `lines`),
never its SQL, so whatever coverage.py's schema becomes, our lines are the ones coverage.py reports.

pytest-cov's `--cov-context=test` records each test three times, as `<node id>|setup`, `|run` and `|teardown`;
coverage.py's `dynamic_context = test_function` records `<module>.<function>`. A test's lines are the union of
its contexts' lines; `owning_test` says which test a context belongs to. The empty context holds lines run
outside any test (imports, collection).

In the shared model a Python line is a one-line `Block` (`file:line.0,line.0`, one statement) that ran once:
coverage.py records whether a line ran, not how often.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from auditcov.merge.cover.model import Block, CoverageError, Profile

#: How every SQLite file, so every coverage.py data file, starts.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: pytest-cov's per-phase suffixes on a test's context.
_PHASE = re.compile(r"\|(setup|run|teardown)$")


@dataclass(frozen=True, slots=True)
class ContextLines:
    """The lines one coverage.py context executed, per measured file."""

    context: str
    lines: dict[str, list[int]]

    @property
    def test(self) -> str:
        return owning_test(self.context)


def owning_test(context: str) -> str:
    """The test a context belongs to: pytest-cov's `|setup`/`|run`/`|teardown` suffix removed."""
    return _PHASE.sub("", context)


def read_contexts(path: str | Path, *, name: str | None = None) -> list[ContextLines]:
    """Each context of the data file at `path` with its executed lines, as coverage.py reports them; errors
    call the file `name` (default its path)."""
    # Imported here: coverage.py takes ~40 ms to import, and every `cover report` imports this module for
    # `add_python_lines` alone.
    from coverage import CoverageData
    from coverage.exceptions import CoverageException

    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise CoverageError(f"{name}: no such coverage.py data file")
    try:
        data = CoverageData(basename=str(path), read_only=True)
        data.read()
        files = sorted(data.measured_files())
        contexts = sorted(data.measured_contexts())
        result = []
        for context in contexts:
            # Anchored: set_query_contexts matches by re.search, and one test's name can prefix another's.
            data.set_query_contexts([f"^{re.escape(context)}$"])
            lines = {}
            for file in files:
                executed = data.lines(file)
                if executed:
                    lines[file] = sorted(executed)
            result.append(ContextLines(context, lines))
    except CoverageException as exc:
        raise CoverageError(f"{name}: not a readable coverage.py data file: {exc}") from exc
    return result


def read_contexts_from_bytes(data: bytes, *, name: str) -> list[ContextLines]:
    """`read_contexts` of a data file given as bytes (a Python agent's upload), through a temporary file."""
    if not data.startswith(SQLITE_MAGIC):
        raise CoverageError(f"{name}: not a coverage.py data file (not SQLite)")
    with tempfile.TemporaryDirectory(prefix="auditcov-pydata-") as directory:
        path = Path(directory) / ".coverage"
        path.write_bytes(data)
        return read_contexts(path, name=name)


def add_python_lines(profile: Profile, lines: dict[str, Iterable[int]]) -> None:
    """Add executed Python lines to `profile` as one-line blocks that ran once (see the module docstring)."""
    for file, numbers in lines.items():
        for number in numbers:
            profile.add(Block(file, number, 0, number, 0), 1, 1)
