"""`auditcov spec` (a catalogue's summary), `auditcov remap` (match stored events again) and `auditcov report`
(a run's coverage: text, and the file formats of merge/reports/formats.py)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from auditcov.merge.openapi.eligibility import load_conformance_tests, load_eligibility
from auditcov.merge.openapi.live import load_source
from auditcov.merge.openapi.matcher import Matcher
from auditcov.merge.openapi.stored import remap, save_catalogue, stored_catalogue
from auditcov.merge.reports.endpointtable import render_endpoint_coverage
from auditcov.merge.reports.formats import FILE_FORMATS, ReportOptions, RunModels, render_report
from auditcov.merge.reports.junit import untested_eligible
from auditcov.merge.store import choose_run, open_store, open_store_readonly
from auditcov.sink.commands import db_option, run_option

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _cluster_options(command):
    command = click.option("--context", default=None, help="The kubeconfig context (default: its current one).")(
        command
    )
    return click.option(
        "--kubeconfig",
        type=_FILE,
        default=None,
        help="Kubeconfig of the cluster for `auto` (default: $KUBECONFIG, else ~/.kube/config).",
    )(command)


def _eligibility_options(command):
    command = click.option(
        "--pending", "pending_file", type=_FILE, help="pending_eligible_endpoints.yaml (default: shipped)."
    )(command)
    return click.option(
        "--ineligible", "ineligible_file", type=_FILE, help="ineligible_endpoints.yaml (default: shipped)."
    )(command)


@click.command("spec")
@click.argument("source")
@_cluster_options
@_eligibility_options
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def spec_command(
    source: str,
    kubeconfig: Path | None,
    context: str | None,
    ineligible_file: Path | None,
    pending_file: Path | None,
    output_format: str,
) -> None:
    """Print an endpoint catalogue's summary: counts by level, group and action; with json, every endpoint.

    SOURCE is an OpenAPI v2 file (swagger.json, .json.gz), a folder of OpenAPI v3 documents laid out as under
    /openapi/v3/, or `auto` (also `cluster`, `cluster:v3`, `cluster:v2`): the spec of the --kubeconfig cluster.

    Example: auditcov spec api/openapi-spec/swagger.json --format json
    """
    catalogue = load_source(source, kubeconfig, context)
    eligibility = load_eligibility(ineligible_file, pending_file)
    summary = catalogue.summary()
    current = [e for e in catalogue.endpoints.values() if not e.deprecated]
    summary["eligible"] = sum(eligibility.is_eligible(e) for e in current)
    summary["pending"] = sum(eligibility.is_eligible(e) and eligibility.is_pending(e) for e in current)
    if output_format == "json":
        endpoints = [
            {**e.to_json(), "eligible": eligibility.is_eligible(e), "pending": eligibility.is_pending(e)}
            for _, e in sorted(catalogue.endpoints.items())
        ]
        click.echo(orjson.dumps({"summary": summary, "endpoints": endpoints}, option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    console.print(
        f"{summary['source']}: {summary['endpoints']} operations, {summary['deprecated']} deprecated; "
        f"{summary['eligible']} eligible for conformance ({summary['pending']} of them pending). "
        "Not deprecated:",
        soft_wrap=True,
    )
    for title, key in (("level", "by_level"), ("group", "by_group"), ("action", "by_action")):
        table = Table(title=f"by {title}")
        table.add_column(title)
        table.add_column("endpoints", justify="right")
        for name, count in summary[key].items():
            table.add_row(name, str(count))
        console.print(table)


@click.command("remap")
@db_option
@run_option
@click.option("--openapi", "source", default=None, help="A new catalogue SOURCE (default: the store's).")
@_cluster_options
@_eligibility_options
def remap_command(
    db_path: str,
    run: str | None,
    source: str | None,
    kubeconfig: Path | None,
    context: str | None,
    ineligible_file: Path | None,
    pending_file: Path | None,
) -> None:
    """Map stored events to endpoints again, against a new catalogue or the store's own.

    For when the spec arrived after the events, or changed. Without --run, every run is re-mapped. --openapi
    takes a SOURCE as `auditcov spec` does; the new catalogue replaces the store's.

    Example: auditcov remap --db run.db --openapi swagger.json
    """
    db = open_store(db_path)
    try:
        if source is not None:
            catalogue = load_source(source, kubeconfig, context)
            save_catalogue(db, catalogue, load_eligibility(ineligible_file, pending_file))
        else:
            catalogue = stored_catalogue(db)
        if run is not None:
            run = choose_run(db, run)
        columns = (TextColumn("remapping"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("remap", total=None)
            result = remap(
                db, Matcher(catalogue), run, lambda done, total: progress.update(task, completed=done, total=total)
            )
    finally:
        db.conn.close()
    click.echo(
        f"{result.events} events against {catalogue.source}: {result.matched} matched, {result.unmatched} unmatched, "
        f"{result.changed} changed"
    )


@click.command("report")
@db_option
@run_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", *FILE_FORMATS]),
    default="text",
    show_default=True,
    help="text: tables; json: per test, its endpoints (how they were hit, hits by status class) and its code "
    "lines; apisnoop: APISnoop's coverage JSON; html: the report page; lcov, cobertura: code coverage; junit: "
    "one testcase per conformance-eligible endpoint.",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: stdout).")
@click.option("--test", "test", default=None, help="lcov, cobertura: this test's code coverage, not the run's.")
@click.option("--untested", is_flag=True, help="text: also list the eligible endpoints no conformance test hit.")
@click.option("--success-only", "successful_only", is_flag=True, help="Count only hits answered 1xx-3xx as tested.")
@click.option("--gate", is_flag=True, help="Exit 1 when an eligible, not pending endpoint has no conformance test hit.")
@click.option("--release", default=None, help="apisnoop: the release (default: from the e2e.test user agents).")
@click.option(
    "--since",
    "previous_source",
    default=None,
    help="apisnoop: the previous release's spec (a SOURCE), to count new eligible endpoints.",
)
@click.option("--conformance", "conformance_file", type=_FILE, help="apisnoop: conformance.yaml (default: shipped).")
@click.option("--diff-base", default=None, metavar="RUN", help="html: compare with this run of the store (Diff tab).")
def report_command(
    db_path: str,
    run: str | None,
    output_format: str,
    output: Path | None,
    test: str | None,
    untested: bool,
    successful_only: bool,
    gate: bool,
    release: str | None,
    previous_source: str | None,
    conformance_file: Path | None,
    diff_base: str | None,
) -> None:
    """Report a run's endpoint coverage (which endpoints its tests hit, and which they did not), or its code
    coverage (lcov, cobertura).

    The apisnoop format follows APISnoop's rules (e2e.test user agents only, with or without a test name); json
    adds the hits a test caused through other clients (namespace ownership, marker windows). A hit answered 4xx
    or 5xx counts, as in APISnoop, unless --success-only. --gate fails the command, after the report is
    written, when an eligible endpoint is untested (as the junit format's failures).

    Example: auditcov report --db run.db --run e2e-1 --format junit --gate -o junit_conformance.xml
    """
    if output_format == "text" and test is not None:
        raise click.UsageError("--test applies to lcov and cobertura only")
    db = open_store_readonly(db_path)
    try:
        run = choose_run(db, run)
        models = RunModels(db, run, successful_only=successful_only)  # the gate reuses the report's coverage
        if output_format != "text":
            options = ReportOptions(
                test=test,
                successful_only=successful_only,
                release=release,
                previous=None if previous_source is None else frozenset(load_source(previous_source).endpoints),
                conformance=load_conformance_tests(conformance_file),
                diff_base=diff_base,
            )
            data = render_report(db, run, output_format, options, models)
        coverage = models.coverage if output_format == "text" or gate else None
    finally:
        db.conn.close()
    failures = untested_eligible(coverage) if gate else []
    if output_format == "text":
        if output is None:
            render_endpoint_coverage(Console(), coverage, untested=untested)
        else:
            with output.open("w") as stream:
                render_endpoint_coverage(Console(file=stream, width=160), coverage, untested=untested)
    elif output is None:
        click.echo(data.decode(), nl=False)
    else:
        output.write_bytes(data)
    if failures:
        shown = ", ".join(state.endpoint.operation_id for state in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise click.ClickException(f"gate: {len(failures)} eligible endpoints no conformance test hit: {shown}{more}")
