"""`auditcov cover build`: `go build` a main package with the coverage agent added (merge/cover/gobuild.py)."""

from __future__ import annotations

from pathlib import Path

import click

from auditcov.merge.cover.gobuild import build_with_agent


@click.command("build")
@click.option(
    "-o", "output", type=click.Path(dir_okay=False, path_type=Path), help="The binary (default: the command's name)."
)
@click.option(
    "-C",
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Run go in this directory (the module of PKG); -o stays relative to the current one.",
)
@click.argument("package", metavar="PKG")
@click.argument("go_flags", nargs=-1, metavar="[-- GO BUILD FLAGS...]")
def build_command(output: Path | None, directory: Path | None, package: str, go_flags: tuple[str, ...]) -> None:
    """Build the Go main package PKG with -cover -covermode=atomic and the auditcov coverage agent.

    The agent is added with go build -overlay: nothing in the package's folder or go.mod changes. Run the binary
    with AUDITCOV_AGENT=127.0.0.1:0 (or unix:/path) to serve its coverage, and AUDITCOV_SINK=URL to register it
    with a sink. Flags after -- go to go build (e.g. -coverpkg=./..., -tags=...).

    Example: auditcov cover build -C ~/src/kubernetes -o kube-apiserver ./cmd/kube-apiserver -- -coverpkg=k8s.io/...
    """
    build = build_with_agent(package, output=output, directory=directory, flags=go_flags)
    click.echo(f"{build.binary}: {build.package.import_path} with the auditcov coverage agent")
    if build.built_as != build.package.import_path:
        click.echo(
            f"(its folder is in the module cache, where go build -overlay adds no file: built as {build.built_as},"
            " so its own files have that path in coverage)"
        )
