"""`auditcov serve` (the live sink) and `auditcov stats` (what a store holds)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from auditcov.merge.stats import store_stats
from auditcov.merge.store import open_store_readonly
from auditcov.sink.commands import db_option, run_option
from auditcov.sink.server import serve as serve_sink
from auditcov.sink.settings import DEFAULT_CONFIG, SETTINGS, SYNCHRONOUS_CHOICES, load_settings


def _setting_options(command):
    """One flag per setting (`--tls-cert`, `--keep-bodies/--no-keep-bodies`, ...), env AUDITCOV_<KEY>."""
    for setting in reversed(SETTINGS):
        if setting.name == "db":
            command = db_option(command)
            continue
        flag = "--" + setting.name.replace("_", "-")
        kind = type(setting.default)
        options = {
            "default": None,
            "envvar": f"AUDITCOV_{setting.name.upper()}",
            "help": f"{_sentence(setting.metadata['help'])} [config: {setting.name}; default: {setting.default!r}].",
        }
        if kind is bool:
            decls = [f"{flag}/--no-{flag[2:]}"]
        elif kind is tuple:  # agents: a list, as JSON text (settings.py parses it)
            decls = [flag]
            options["type"] = str
            options["help"] = f"{_sentence(setting.metadata['help'])} [config: {setting.name}; default: none]."
        elif setting.name == "synchronous":
            decls = [flag]
            options["type"] = click.Choice(SYNCHRONOUS_CHOICES, case_sensitive=False)
        else:
            decls = [flag]
            options["type"] = kind
        command = click.option(*decls, setting.name, **options)(command)
    return command


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@click.command()
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"TOML settings file (default: {DEFAULT_CONFIG} when it exists).",
)
@_setting_options
@click.pass_context
def serve(ctx: click.Context, config: Path | None, db_path: str, **flags) -> None:
    """Run the audit webhook sink until SIGTERM or SIGINT.

    Flags override the config file, which overrides the defaults. At start it prints its URL and a webhook
    kubeconfig for kube-apiserver.

    Example: auditcov serve --config config/sink.toml --listen 127.0.0.1:8443 --db run.db
    """
    if config is None and DEFAULT_CONFIG.is_file():
        config = DEFAULT_CONFIG
    if ctx.get_parameter_source("db_path") is not click.core.ParameterSource.DEFAULT:
        flags["db"] = db_path
    if flags.get("synchronous"):
        flags["synchronous"] = flags["synchronous"].upper()
    serve_sink(load_settings(config, flags), out=lambda text: click.echo(text))


@click.command()
@db_option
@run_option
def stats(db_path: str, run: str | None) -> None:
    """Print what the store holds as JSON: events, duplicates, quarantined, runs, tests, ...

    Example: auditcov stats --db auditcov.db --run e2e-1
    """
    db = open_store_readonly(db_path)
    try:
        click.echo(orjson.dumps(store_stats(db, run), option=orjson.OPT_INDENT_2).decode())
    finally:
        db.conn.close()
