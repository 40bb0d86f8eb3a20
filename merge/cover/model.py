"""The one in-memory code-coverage model that every reader fills and every report reads.

A `Profile` maps each `Block` (a Go basic block, or a single Python line) to how often it ran. The rule for
lines: a line is covered when any block that contains it ran. Go blocks may share a line (one ends where the
next starts), so a line can be covered by one block and missed by another; it counts as covered.

Modes are Go's: `set` (a count is 0 or 1), `count` and `atomic` (cumulative counts).
"""

from __future__ import annotations

import gc
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from auditcov.merge.errors import AuditcovError

MODES = ("set", "count", "atomic")


class CoverageError(AuditcovError):
    """Coverage input that cannot be read or combined; the message names the file and the block."""


class Block(NamedTuple):
    """A span of source: `file:start_line.start_col,end_line.end_col` as Go writes it.

    A named tuple, not a dataclass: readers build 10^5-10^6 of them and use them as dict keys, and a tuple is
    several times faster to build and to hash.
    """

    file: str
    start_line: int
    start_col: int
    end_line: int
    end_col: int


@dataclass(slots=True)
class Profile:
    """Blocks with their statement counts and hit counts, in one mode."""

    mode: str
    statements: dict[Block, int] = field(default_factory=dict)
    counts: dict[Block, int] = field(default_factory=dict)
    #: The Go import path of each source file, when the reader knows it (binary covdata does, text profiles
    #: do not); per-package summaries fall back to the file's directory.
    packages: dict[str, str] = field(default_factory=dict)

    def add(self, block: Block, num_stmt: int, count: int, *, where: str = "") -> None:
        """Merge one block in with Go's rules: OR in set mode, sum otherwise; a statement count must agree."""
        known = self.statements.get(block)
        if known is None:
            self.statements[block] = num_stmt
            self.counts[block] = count
            return
        if known != num_stmt:
            raise CoverageError(
                f"{where or block.file}: block {_describe(block)} has {num_stmt} statements here but {known} before"
            )
        if self.mode == "set":
            self.counts[block] = 1 if (count or self.counts[block]) else 0
        else:
            self.counts[block] += count

    def add_all(self, blocks: list[Block], statements: list[int], counts: list[int], *, where: str = "") -> None:
        """`add` for many blocks (aligned lists); when all are distinct and new here, in bulk, at C speed."""
        fresh = dict(zip(blocks, statements, strict=True))
        if len(fresh) == len(blocks) and self.statements.keys().isdisjoint(fresh):
            self.statements.update(fresh)
            self.counts.update(zip(blocks, counts, strict=True))
            return
        for block, num_stmt, count in zip(blocks, statements, counts, strict=True):
            self.add(block, num_stmt, count, where=where)

    def package_of(self, file: str) -> str:
        """The Go import path of `file`: as the reader recorded it, else its directory (right for module paths)."""
        return self.packages.get(file) or posixpath.dirname(file)

    def lines(self) -> dict[str, set[int]]:
        """Covered lines per file, by the rule in the module docstring."""
        covered: dict[str, set[int]] = {}
        for block, count in self.counts.items():
            if count:
                covered.setdefault(block.file, set()).update(range(block.start_line, block.end_line + 1))
        return covered

    def line_counts(self) -> dict[str, dict[int, int]]:
        """Every line of every block, per file, with the highest count of the blocks on it (0: none ran), as line
        reports (lcov, Cobertura) give them; covered lines are exactly those of `lines`."""
        result: dict[str, dict[int, int]] = {}
        for block, count in self.counts.items():
            lines = result.setdefault(block.file, {})
            for line in range(block.start_line, block.end_line + 1):
                if count > lines.get(line, -1):
                    lines[line] = count
        return result


def _describe(block: Block) -> str:
    return f"{block.start_line}.{block.start_col},{block.end_line}.{block.end_col}"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a profile is read or written: a profile is a few hundred thousand
    small objects and no cycles, and the collections they trigger (each full one walking all that came before)
    took a third of a kube-apiserver-sized read."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
