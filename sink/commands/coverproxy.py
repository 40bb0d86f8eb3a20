"""`auditcov cover profile` and `auditcov cover clear`: a running sink's coverage proxy from the command line.

Both talk to the sink over HTTP (standard library only, so they start fast): `profile` is
`GET /v1/runs/{run}/coverage` (the run's agents' counters now, or one test's delta), `clear` is
`POST /v1/runs/{run}/clear` (the sink clears its agents' counters). Tokens are read from files, as the sink's are.
"""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

import click

TIMEOUT_S = 120.0

_sink_options = [
    click.option("--sink", "sink", required=True, envvar="AUDITCOV_SINK", help="The sink's URL (env AUDITCOV_SINK)."),
    click.option("--run", "run", required=True, help="The run whose agents to ask."),
    click.option(
        "--token-file",
        "token_file",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="File holding the sink's bearer token (the query token for profile, the ingest token for clear).",
    ),
    click.option(
        "--ca", "ca", type=click.Path(exists=True, dir_okay=False), default=None, help="PEM CA of an https sink."
    ),
]


def _with_sink_options(command):
    for option in reversed(_sink_options):
        command = option(command)
    return command


def _call(sink: str, method: str, path: str, query: dict[str, str], token_file: str | None, ca: str | None):
    """The sink's answer: (status, headers, body); a sink that does not answer is a ClickException."""
    url = sink.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    if token_file:
        with open(token_file) as handle:
            request.add_header("Authorization", f"Bearer {handle.read().strip()}")
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"{url}: the sink did not answer: {getattr(exc, 'reason', exc)}") from None


def _fail(status: int, body: bytes) -> click.ClickException:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        message = body[:300].decode("utf-8", "replace")
    return click.ClickException(f"the sink answered {status}: {message}")


def _quoted(run: str) -> str:
    return urllib.parse.quote(run, safe="")


@click.command("profile")
@_with_sink_options
@click.option("-o", "--output", type=click.File("wb"), default="-", help="Write here (default: stdout).")
@click.option("--format", "output_format", type=click.Choice(["text", "lcov"]), default="text", show_default=True)
@click.option("--test", "test", default=None, help="Only this test's delta (from the sink's stored snapshots).")
def profile_command(sink, run, token_file, ca, output, output_format: str, test: str | None) -> None:
    """Print the coverage of a run's agents now, merged (a Go text profile, or lcov), as a running sink has it.

    Agents that do not answer are left out and named on stderr; with --test, the test's problems are shown.

    Example: auditcov cover profile --sink http://127.0.0.1:8080 --run e2e-1 -o cover.out
    """
    query = {"format": output_format, **({"test": test} if test is not None else {})}
    status, headers, body = _call(sink, "GET", f"/v1/runs/{_quoted(run)}/coverage", query, token_file, ca)
    if status != 200:
        raise _fail(status, body)
    for header, what in (("Auditcov-Missing", "left out"), ("Auditcov-Incomplete", "incomplete")):
        if headers.get(header):
            click.echo(f"warning: {what}: {headers[header]}", err=True)
    output.write(body)


@click.command("clear")
@_with_sink_options
@click.option("--process", "process", default=None, help="Only this agent (default: every live agent of the run).")
def clear_command(sink, run, token_file, ca, process: str | None) -> None:
    """Clear the coverage counters of a run's agents, through the sink.

    A test whose window spans a clear gets no delta (its counters went down), so clear between tests.

    Example: auditcov cover clear --sink http://127.0.0.1:8080 --run e2e-1 --process kube-apiserver
    """
    query = {"process": process} if process is not None else {}
    status, _, body = _call(sink, "POST", f"/v1/runs/{_quoted(run)}/clear", query, token_file, ca)
    try:
        answer = json.loads(body)
    except ValueError:
        raise _fail(status, body) from None
    if "cleared" not in answer:
        raise _fail(status, body)
    for name in answer["cleared"]:
        click.echo(f"cleared {name}")
    for name, reason in answer["failed"].items():
        click.echo(f"not cleared {name}: {reason}", err=True)
    if answer["failed"]:
        sys.exit(1)
