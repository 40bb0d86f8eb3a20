"""Go text coverage profiles (`go test -coverprofile`, `go tool covdata textfmt`): read, merge, write.

The format: a first line `mode: set|count|atomic`, then one block a line,
`file:startLine.startCol,endLine.endCol numStmt count`. The file name is everything before the last colon.

Merging follows Go's own parser (golang.org/x/tools/cover, which `go tool cover` uses): the same block twice
is one block, its counts ORed in set mode and added otherwise, and the same position with a different statement
count is an error. Go's parser rejects a second `mode:` line; profiles are often concatenated (`cat a.out
b.out`), so here a repeated `mode:` line naming the same mode is accepted and skipped, and one naming another
mode is an error, as is merging files of different modes. Unlike Go, unknown modes are an error.

Written profiles list blocks in `go tool covdata textfmt`'s order: by package, file, start line, end line,
start column, end column.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from auditcov.merge.cover.model import MODES, Block, CoverageError, Profile, gc_paused

_MODE_PREFIX = "mode: "
_BLOCK_LINE = re.compile(r"(.+):(\d+)\.(\d+),(\d+)\.(\d+) (\d+) (\d+)")


def read_text_profiles(paths: Iterable[str | Path]) -> Profile:
    """The profiles in the files, merged into one; all must be of one mode."""
    profile: Profile | None = None
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CoverageError(f"{path}: not UTF-8 text (byte {exc.start}): not a Go text profile") from None
        profile = parse_text(text, where=str(path), into=profile)
    if profile is None:
        raise CoverageError("no text profiles given")
    return profile


def parse_text(text: str, *, where: str = "text profile", into: Profile | None = None) -> Profile:
    """Parse one profile (possibly several concatenated), merging it into `into` when given."""
    # Lines end at "\n" only, with a "\r" before it dropped, as Go's bufio.ScanLines has it.
    lines = [line.removesuffix("\r") for line in text.removesuffix("\n").split("\n")] if text else []
    if not lines or not lines[0].startswith(_MODE_PREFIX):
        raise CoverageError(f"{where}:1: the first line must be `mode: set|count|atomic`")
    mode = _mode(lines[0], where=f"{where}:1")
    profile = Profile(mode) if into is None else into
    if profile.mode != mode:
        raise CoverageError(f"{where}: mode {mode} cannot be merged into a profile of mode {profile.mode}")
    for number, line in enumerate(lines[1:], start=2):
        match = _BLOCK_LINE.fullmatch(line)
        if match is None:
            if line.startswith(_MODE_PREFIX) and _mode(line, where=f"{where}:{number}") == mode:
                continue
            if line.startswith(_MODE_PREFIX):
                raise CoverageError(f"{where}:{number}: `{line}` conflicts with `mode: {mode}` above")
            raise CoverageError(f"{where}:{number}: not `file:line.col,line.col statements count`: {line!r}")
        file, start_line, start_col, end_line, end_col, num_stmt, count = match.groups()
        block = Block(file, int(start_line), int(start_col), int(end_line), int(end_col))
        profile.add(block, int(num_stmt), int(count), where=f"{where}:{number}")
    return profile


def _mode(line: str, *, where: str) -> str:
    mode = line[len(_MODE_PREFIX) :].strip()
    if mode not in MODES:
        raise CoverageError(f"{where}: unknown mode {mode!r} (expected one of {', '.join(MODES)})")
    return mode


def write_text(profile: Profile, out: TextIO) -> None:
    """Write `profile` as a Go text profile, in `go tool covdata textfmt`'s order."""
    with gc_paused():
        _write_text(profile, out)


def _write_text(profile: Profile, out: TextIO) -> None:
    package = {file: profile.package_of(file) for file in {block.file for block in profile.statements}}
    order = sorted(
        profile.statements,
        key=lambda b: (package[b.file], b.file, b.start_line, b.end_line, b.start_col, b.end_col),
    )
    statements, counts = profile.statements, profile.counts
    lines = [
        f"{b.file}:{b.start_line}.{b.start_col},{b.end_line}.{b.end_col} {statements[b]} {counts[b]}\n" for b in order
    ]
    out.write(f"{_MODE_PREFIX}{profile.mode}\n")
    out.writelines(lines)
