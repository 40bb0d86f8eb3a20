"""The text form of endpoint coverage (`auditcov report`, the default format): rich tables by level, the
untested eligible endpoints, and what matched no endpoint."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditcov.merge.openapi.catalogue import LEVELS
from auditcov.merge.reports.endpointcov import EndpointCoverage


def render_endpoint_coverage(console: Console, coverage: EndpointCoverage, *, untested: bool = False) -> None:
    """Counts by level; then, when `untested`, each eligible endpoint no e2e test hit; then unmatched reasons."""
    current = [state for state in coverage.endpoints if not state.endpoint.deprecated]
    table = Table(title=f"Endpoint coverage, run {coverage.run} ({coverage.catalogue_source})")
    for column in ("level", "endpoints", "e2e tested", "conformance tested", "incl. indirect", "eligible",
                   "eligible conf. tested"):  # fmt: skip
        # One word a line: the table then fits 80 columns with every header whole (rich cuts a wrapped one).
        table.add_column(column.replace(" ", "\n"), justify="left" if column == "level" else "right")
    for level in (*LEVELS, None):
        states = [s for s in current if level is None or s.endpoint.level == level]
        if level is None:
            table.add_section()
        ops = [s.endpoint.operation_id for s in states]
        table.add_row(
            level or "all",
            str(len(states)),
            str(sum(bool(coverage.e2e_tests(op)) for op in ops)),
            str(sum(coverage.conformance_tested(op) for op in ops)),
            str(sum(coverage.hit(op) for op in ops)),
            str(sum(s.eligible for s in states)),
            str(sum(s.eligible and coverage.conformance_tested(s.endpoint.operation_id) for s in states)),
        )
    console.print(table)
    if coverage.unmapped:
        console.print(
            f"[yellow]{coverage.unmapped} events are not mapped to endpoints (stored before the catalogue): "
            "run `auditcov remap`[/yellow]"
        )
    if untested:
        missing = [s for s in current if s.eligible and not coverage.conformance_tested(s.endpoint.operation_id)]
        if missing:
            # A list, not a table: each operationId whole on its own line (columns would cut it at 80 columns),
            # its method and path below it.
            console.print(Text(f"Eligible endpoints no conformance test hit ({len(missing)})", style="italic"))
            for state in missing:
                console.print(Text(state.endpoint.operation_id, style="bold"), soft_wrap=True)
                pending = " (pending)" if state.pending else ""
                console.print(Text(f"    {state.endpoint.method} {state.endpoint.path}{pending}"), overflow="fold")
    if coverage.unmatched:
        table = Table(title="Events that matched no endpoint")
        table.add_column("reason", overflow="fold")
        table.add_column("events", justify="right")
        for reason, count in coverage.unmatched.most_common():
            table.add_row(reason, str(count))
        console.print(table)
