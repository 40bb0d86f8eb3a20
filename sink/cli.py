"""The `auditcov` command line: a thin layer over the library; each command opens a library object and calls it.

Errors from the library (`AuditcovError`) and from the store's database become a one-line message and exit
status 1.
"""

from __future__ import annotations

import click

from auditcov.merge.errors import AuditcovError
from auditcov.merge.store import is_database_error
from auditcov.sink.commands import LazyGroup

#: Every command, as "module:attribute", imported only when it runs (see `LazyGroup`). Add new ones here.
COMMANDS = {
    "serve": "auditcov.sink.commands.service:serve",
    "stats": "auditcov.sink.commands.service:stats",
    "import": "auditcov.sink.commands.events:import_command",
    "replay": "auditcov.sink.commands.events:replay_command",
    "cover": "auditcov.sink.commands.cover:cover",
    "spec": "auditcov.sink.commands.spec:spec_command",
    "remap": "auditcov.sink.commands.spec:remap_command",
    "report": "auditcov.sink.commands.spec:report_command",
    "export": "auditcov.sink.commands.bundle:export_command",
    "merge": "auditcov.sink.commands.bundle:merge_command",
    "drop": "auditcov.sink.commands.bundle:drop_command",
}


class _Group(LazyGroup):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AuditcovError as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            if not is_database_error(exc):
                raise
            raise click.ClickException(f"the store failed: {type(exc).__name__}: {exc}") from exc


@click.group(cls=_Group, lazy=COMMANDS)
@click.version_option(package_name="auditcov")
def cli() -> None:
    """Per-test Kubernetes API endpoint and code coverage from live audit events."""


def main() -> None:
    cli()
