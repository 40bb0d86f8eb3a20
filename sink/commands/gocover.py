"""`auditcov cover textfmt` and `auditcov cover percent`: Go's `go tool covdata` views, without Go.

Both read Go binary coverage directories (`GOCOVERDIR` of a `go build -cover` program) with merge/cover/covdata.py.
This module imports nothing heavy, so these commands start fast.
"""

from __future__ import annotations

from pathlib import Path

import click

from auditcov.merge.cover.covdata import read_covdata
from auditcov.merge.cover.gotext import write_text
from auditcov.merge.cover.percent import format_percent, package_coverage

_dirs_argument = click.argument(
    "dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.command("textfmt")
@_dirs_argument
@click.option("-o", "--output", type=click.File("w", lazy=True), default="-", help="Write here (default: stdout).")
def textfmt_command(dirs: tuple[Path, ...], output) -> None:
    """Print the Go text profile of the covdata directories DIRS, merged, as `go tool covdata textfmt` does.

    Example: auditcov cover textfmt ./coverdir -o cover.out
    """
    write_text(read_covdata(dirs, warn=_warn), output)


@click.command("percent")
@_dirs_argument
def percent_command(dirs: tuple[Path, ...]) -> None:
    """Print each Go package's statement coverage in the covdata directories DIRS, as `go tool covdata percent`.

    Example: auditcov cover percent ./coverdir
    """
    click.echo(format_percent(package_coverage(read_covdata(dirs, warn=_warn))), nl=False)
