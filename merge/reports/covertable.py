"""The text form of per-test code coverage: rich tables (`auditcov cover report`)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from auditcov.merge.cover.pertest import PerTestCoverage
from auditcov.merge.reports.coverjson import line_ranges, totals


def _notes(result: PerTestCoverage) -> str:
    notes = []
    if result.first_hit_only:
        notes.append("set mode: first hits in this window only")
    if result.shared_with:
        others = sorted(result.shared_with)
        named = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        notes.append(f"window overlaps {named}: coverage shared")
    if result.coarse:
        notes.append("coarse: from a profile file that lags the test's edges")
    if result.incomplete:
        notes.append("INCOMPLETE:")
    notes.extend(result.problems)
    return "\n".join(notes)


def render_tests(console: Console, run: str, results: list[PerTestCoverage]) -> None:
    """One row per test (its window, files, lines, statements and caveats) and a totals row."""
    table = Table(title=f"Code coverage per test, run {run}")
    for column in ("test", "window from", "files", "lines", "statements"):
        table.add_column(column, justify="right" if column in ("files", "lines", "statements") else "left")
    table.add_column("notes")
    for result in results:
        lines = result.lines()
        table.add_row(
            result.test or "(outside any test)",
            result.window.source if result.window else "-",
            str(len(lines)),
            str(sum(len(numbers) for numbers in lines.values())),
            str(result.statements_run()),
            _notes(result),
        )
    summary = totals(results)
    table.add_section()
    table.add_row(f"any of {summary['tests']} tests", "", str(summary["files"]), str(summary["lines_covered"]), "", "")
    console.print(table)


def render_test_files(console: Console, result: PerTestCoverage) -> None:
    """The covered lines of one test, file by file."""
    table = Table(title=f"Lines covered by {result.test or '(outside any test)'}")
    table.add_column("file")
    table.add_column("lines", justify="right")
    table.add_column("covered")
    lines = result.lines()
    for file in sorted(lines):
        spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in line_ranges(lines[file]))
        table.add_row(file, str(len(lines[file])), spans)
    console.print(table)
