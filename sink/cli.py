"""The `auditcov` command line: a thin layer over the library; each command opens a library object and calls it.

Errors from the library (`AuditcovError`) become a one-line message and exit status 1.
"""

from __future__ import annotations

import click

from merge.errors import AuditcovError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AuditcovError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group)
@click.version_option(package_name="auditcov")
def cli() -> None:
    """Per-test Kubernetes API endpoint and code coverage from live audit events."""


def _register() -> None:
    from sink.commands.cover import cover
    from sink.commands.events import import_command, replay_command
    from sink.commands.gocover import percent_command, textfmt_command
    from sink.commands.service import serve, stats

    cli.add_command(serve)
    cli.add_command(stats)
    cli.add_command(import_command)
    cli.add_command(replay_command)
    cli.add_command(cover)
    cover.add_command(textfmt_command)
    cover.add_command(percent_command)


_register()


def main() -> None:
    cli()
