"""`auditcov cover ...`: code coverage commands (snapshots and per-test reports; Go profile tools)."""

from __future__ import annotations

from pathlib import Path

import click

from auditcov.sink.commands import LazyGroup, db_option, run_option

# `textfmt`, `percent` and `build` must start fast, so the store, rich, the event model and the readers are imported
# inside the commands that use them.
GO_TOOLS = {
    "textfmt": "auditcov.sink.commands.gocover:textfmt_command",
    "percent": "auditcov.sink.commands.gocover:percent_command",
    "build": "auditcov.sink.commands.coverbuild:build_command",
    "profile": "auditcov.sink.commands.coverproxy:profile_command",
    "clear": "auditcov.sink.commands.coverproxy:clear_command",
}


@click.group(cls=LazyGroup, lazy=GO_TOOLS)
def cover() -> None:
    """Code coverage: Go profiles, coverage.py data, per-test snapshots and reports."""


def _moment(_ctx, _param, value: str | None) -> int | None:
    from auditcov.merge.events import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time (e.g. 2026-01-31T12:00:00.5Z)") from None


@cover.command("import")
@db_option
@click.option("--run", "run", required=True, help="The run the coverage belongs to.")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--process", default=None, help="Which process the counters are from (default: from the source).")
@click.option("--at", "at_us", callback=_moment, help="When the counters were taken, RFC 3339 (default: mtime).")
def import_command(db_path: str, run: str, source: Path, process: str | None, at_us: int | None) -> None:
    """Store one coverage snapshot, or a coverage.py file's per-test lines.

    SOURCE is a Go covdata directory holding one counter file, a Go text profile (also a live
    KUBE_COVERAGE_FILE, read once it is whole), or a coverage.py `.coverage` file with contexts.

    Example: auditcov cover import --run e2e-1 --process kube-apiserver --at 2026-01-31T12:00:00Z snaps/0001
    """
    from auditcov.merge.cover.importer import import_coverage
    from auditcov.merge.events import format_time, now_us
    from auditcov.merge.store import open_store

    db = open_store(db_path)
    try:
        done = import_coverage(db, source, run=run, process=process, at_us=at_us, now_us=now_us())
    finally:
        db.conn.close()
    if done.kind == "python":
        click.echo(f"{done.source}: {done.contexts} coverage.py contexts stored as per-test Python lines")
    else:
        click.echo(f"{done.source}: snapshot of {done.process} at {format_time(done.at_us)}, {done.blocks} blocks")


@cover.command("report")
@db_option
@run_option
@click.option("--test", "test", default=None, help="Only this test, with its lines file by file.")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def report_command(db_path: str, run: str | None, test: str | None, output_format: str) -> None:
    """Print each test's covered lines (Go snapshot deltas over its window, Python contexts) and totals.

    Example: auditcov cover report --run e2e-1 --test "[sig-api-machinery] Watchers should observe add"
    """
    import orjson
    from rich.console import Console

    from auditcov.merge.cover.pertest import per_test_coverage
    from auditcov.merge.reports.coverjson import coverage_report
    from auditcov.merge.reports.covertable import render_test_files, render_tests
    from auditcov.merge.store import choose_run, open_store_readonly

    db = open_store_readonly(db_path)
    try:
        run = choose_run(db, run)
        results = per_test_coverage(db, run, test=test)
    finally:
        db.conn.close()
    if test is not None and not results:
        raise click.ClickException(f"run {run!r} has no test {test!r} (no window and no Python lines)")
    if output_format == "json":
        click.echo(orjson.dumps(coverage_report(run, results), option=orjson.OPT_INDENT_2).decode())
        return
    console = Console()
    render_tests(console, run, results)
    if test is not None:
        render_test_files(console, results[0])


@cover.command("run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--run", "run", default=None, help="The run it belongs to (env AUDITCOV_RUN; default `default`).")
@click.option("--process", default=None, help="Its process name (env AUDITCOV_PROCESS; default the module or script).")
@click.option(
    "--agent",
    "listen",
    default=None,
    help="Where the agent listens: 127.0.0.1:PORT, [::1]:PORT or unix:/path (env AUDITCOV_AGENT; default "
    "127.0.0.1:0, any free port).",
)
@click.option("--sink", default=None, help="The sink to register with and send data to at exit (env AUDITCOV_SINK).")
@click.option("--source", "sources", multiple=True, help="Measure only this directory or package (repeatable).")
@click.argument("program", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run_command(
    ctx: click.Context,
    run: str | None,
    process: str | None,
    listen: str | None,
    sink: str | None,
    sources: tuple[str, ...],
    program: tuple[str, ...],
) -> None:
    """Run a Python program under coverage.py with the live coverage agent, as `coverage run` would.

    PROGRAM is `python -m MODULE ARGS` or `SCRIPT.py ARGS`; it runs in this process and its exit status is
    this command's. The agent serves its API (health, context, data, clear) on a loopback port, registers with
    the sink, which switches its context to each test at the test's boundaries, and sends its data file to the
    sink at exit (also on SIGTERM). The other settings are the Go agent's environment variables:
    AUDITCOV_AGENT_TOKEN_FILE, AUDITCOV_AGENT_ALLOW_REMOTE, AUDITCOV_SINK_CA, AUDITCOV_SINK_CERT and
    AUDITCOV_SINK_KEY (a client certificate for an mTLS sink), AUDITCOV_TOKEN_FILE.

    Example: auditcov cover run --sink http://127.0.0.1:8080 --run e2e-1 -- python -m myservice --port 9000
    """
    import os

    from coverage.exceptions import CoverageException

    from auditcov.merge.cover.pyagent import AgentConfig, parse_listen, parse_program, program_name, run_program

    args, as_module = parse_program(list(program))
    config = AgentConfig.from_env(os.environ, process=program_name(args, as_module=as_module))
    for name, value in {"run": run, "process": process, "listen": listen, "sink": sink}.items():
        if value is not None:
            setattr(config, name, value)
    config.sources = list(sources)
    parse_listen(config.listen, allow_remote=config.allow_remote)  # a bad address is a usage error, said now
    try:
        status = run_program(list(program), config)
    except CoverageException as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.exit(status)
