"""The `auditcov` subcommands, one module per area, and the option decorators they share."""

from __future__ import annotations

import click

db_option = click.option(
    "--db",
    "db_path",
    default="auditcov.db",
    show_default=True,
    envvar="AUDITCOV_DB",
    type=click.Path(dir_okay=False),
    help="The SQLite store (env AUDITCOV_DB).",
)

run_option = click.option("--run", "run", default=None, help="The run (default: every run, or the only one).")
