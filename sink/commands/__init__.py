"""The `auditcov` subcommands, one module per area, and the option decorators they share."""

from __future__ import annotations

import importlib

import click


class LazyGroup(click.Group):
    """A group whose subcommands are imported when one runs (or help lists them), not when the CLI starts.

    `lazy` maps a command name to "module:attribute". A command then pays only for its own imports: the
    service's aiohttp stack takes a second to import, and `auditcov cover textfmt` must start like a Go tool.
    """

    def __init__(self, *args, lazy: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            module, attribute = self.lazy[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attribute), name)
        return super().get_command(ctx, name)


db_option = click.option(
    "--db",
    "db_path",
    default="auditcov.db",
    show_default=True,
    envvar="AUDITCOV_DB",
    metavar="FILE|URL",
    help="The store: a SQLite file, or a postgresql:// URL (env AUDITCOV_DB).",
)

run_option = click.option("--run", "run", default=None, help="The run (default: every run, or the only one).")
