"""Building a Go main package with the coverage agent in it, without touching the package (`auditcov cover build`).

`go list` finds the package's directory (it must be a main package); the agent source (goagent/, package data)
and an overlay JSON that adds it to that directory go to a temporary folder; then
`go build -cover -covermode=atomic -overlay <json> -toolexec <wrapper> -o BIN <flags> PKG`. Nothing in the user's
tree or go.mod is written. Go runs in `directory` (like `go build -C`); BIN is taken relative to the caller's
working directory and defaults to the package's command name there.

The `-toolexec` wrapper (a POSIX shell script) works around golang/go#73802: with -cover, go hands Go's cover tool
the on-disk paths of an instrumented package's files, not the overlay's, so a file the overlay adds "does not
exist" (and a replaced one is read unreplaced). The wrapper swaps in the overlay's paths for the cover tool and
runs every other tool as it is. It passes `-V=full` through untouched, so the build cache keys (go derives them
from the tools' `-V=full` answers) are those of a build without it: a rebuild after a first one is fast.

A main package beneath GOMODCACHE (a command of a dependency, as kube-apiserver is for hack/e2e/kube) cannot take
the file: go refuses any overlay there. It is then built as a copy, under `<main module>/auditcov-cover-build/
<command name>`, a folder that exists only in the overlay (so its own files have that path in coverage), with
a copy of go.mod and go.sum given by -modfile: go adds requirements for the copy's imports to the copy, and may
need to download the go.mod files those bring in.

The flags are go build's own, passed through (`-coverpkg=...`, `-tags`, `-ldflags`, ...). `-coverpkg` gets the
main package added: only an instrumented main package's init starts Go's coverage runtime (runtime/coverage's
init hook), and without it the agent has no meta-data to serve. The build decides the others: `-o` and `-C`
(options of the build itself), `-covermode` (the agent needs atomic), `-toolexec` (the wrapper) and `-overlay`
(merged with the agent's: a user's overlay keeps working). `-tags`, `-mod`, `-modfile` and that overlay also go
to `go list`, since they decide which package PKG is.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from auditcov.merge.cover.goagent import AGENT_FILE, agent_source
from auditcov.merge.errors import AuditcovError

#: go build's flags that take a value; any other flag is a switch (`-race`, `-trimpath`, `-buildvcs=false`).
_VALUE_FLAGS = {
    *("C", "o", "p", "asmflags", "buildmode", "compiler", "covermode", "coverpkg", "gccgoflags", "gcflags"),
    *("installsuffix", "ldflags", "mod", "modfile", "overlay", "pgo", "pkgdir", "tags", "toolexec"),
}
#: The flags that choose which package a path names, so `go list` gets them too.
_LIST_FLAGS = ("tags", "mod", "modfile", "overlay")


class GoBuildError(AuditcovError):
    """The Go package cannot be built with the agent: no Go, not a main package, bad flags, or go build failed."""


@dataclass(frozen=True, slots=True)
class MainPackage:
    import_path: str
    dir: Path
    #: The executable's name `go build` would choose (`kube-apiserver` for .../cmd/kube-apiserver).
    command_name: str
    #: Its source files (Go, cgo, embedded, assembly, ...), relative to `dir`, as this build selects them.
    files: list[str]


@dataclass(frozen=True, slots=True)
class Build:
    package: MainPackage
    binary: Path
    command: list[str]
    #: The import path the package was built under: its own, or, for a package in the module cache, its copy's
    #: in the main module (see `_relocate`); coverage names its files under this path.
    built_as: str


#: Where a main package of the module cache is built: `<main module>/RELOCATED/<command name>`, in the overlay only.
RELOCATED = "auditcov-cover-build"
#: The `go list -json` fields read; the `*Files` ones are the package's sources.
_LIST_FIELDS = (
    "Name,ImportPath,Dir,Target,GoFiles,CgoFiles,EmbedFiles,CFiles,CXXFiles,HFiles,FFiles,SFiles,MFiles,SysoFiles,"
    "SwigFiles,SwigCXXFiles"
)


def build_with_agent(
    package: str, *, output: Path | None = None, directory: Path | None = None, flags: Sequence[str] = ()
) -> Build:
    """Build `package` (a path or import path, as go takes it, resolved in `directory`) with the agent."""
    if os.name == "nt":
        raise GoBuildError("auditcov cover build needs a POSIX shell for its -toolexec wrapper; Windows has none")
    go = shutil.which("go")
    if go is None:
        raise GoBuildError("go: not found on PATH; `auditcov cover build` needs a Go toolchain (1.20 or later)")
    cwd = Path(directory) if directory is not None else Path.cwd()
    if not cwd.is_dir():
        raise GoBuildError(f"{cwd}: not a directory")
    chosen, passed = _split_flags(flags)
    with tempfile.TemporaryDirectory(prefix="auditcov-cover-build-") as scratch:
        list_flags = [f"-{name}={chosen[name]}" for name in _LIST_FLAGS if name in chosen]
        main = find_main_package(go, package, cwd=cwd, flags=list_flags)
        replace = _user_overlay(chosen["overlay"], cwd) if "overlay" in chosen else {}
        module_cache, go_mod = _go_env(go, cwd, "GOMODCACHE", "GOMOD")
        folder, built_as, target = main.dir, main.import_path, package
        if module_cache and main.dir.is_relative_to(module_cache):
            folder, built_as, modfile = _relocate(go, main, cwd, go_mod, chosen.get("modfile"), Path(scratch))
            replace.update({str(folder / name): str(main.dir / name) for name in main.files})
            # The copy's go.mod may gain requirements for the package's imports; the module's own stays as it is.
            passed += [f"-modfile={modfile}", "-mod=mod"]
            target = built_as
        agent = Path(scratch, AGENT_FILE)
        agent.write_bytes(agent_source())
        replace[str(folder / AGENT_FILE)] = str(agent)
        overlay = Path(scratch, "overlay.json")
        overlay.write_text(json.dumps({"Replace": replace}))
        wrapper = Path(scratch, "toolexec.sh")
        wrapper.write_text(_toolexec_script(replace))
        binary = (Path(output) if output is not None else Path(main.command_name)).absolute()
        command = [
            *(go, "build", "-cover", "-covermode=atomic", f"-overlay={overlay}", f"-toolexec=/bin/sh '{wrapper}'"),
            *("-o", str(binary), *passed),
        ]
        if "coverpkg" in chosen:
            command.append(f"-coverpkg={chosen['coverpkg']},{built_as}")
        command.append(target)
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GoBuildError(f"go build of {package} failed (exit status {done.returncode}):\n{done.stderr.rstrip()}")
    return Build(main, binary, command, built_as)


def find_main_package(go: str, package: str, *, cwd: Path, flags: Sequence[str] = ()) -> MainPackage:
    """`go list` of one main package, or a `GoBuildError` saying why `package` is not one."""
    done = subprocess.run(
        [go, "list", *flags, f"-json={_LIST_FIELDS}", package], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise GoBuildError(f"go list {package} (in {cwd}) failed:\n{done.stderr.rstrip()}")
    found = _json_values(done.stdout)
    if len(found) != 1:
        paths = ", ".join(listed["ImportPath"] for listed in found)
        raise GoBuildError(f"{package}: names {len(found)} packages ({paths}); name one main package")
    (listed,) = found
    if listed["Name"] != "main":
        raise GoBuildError(
            f"{package}: {listed['ImportPath']} is package {listed['Name']}, not a main package; cover build needs"
            " a command"
        )
    files = [name for field in _LIST_FIELDS.split(",") if field.endswith("Files") for name in listed.get(field, ())]
    command_name = Path(listed.get("Target") or listed["Dir"]).name
    return MainPackage(listed["ImportPath"], Path(listed["Dir"]), command_name, files)


def _json_values(text: str) -> list[dict]:
    """The JSON objects `go list -json` prints one after another."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def _go_env(go: str, cwd: Path, *names: str) -> list[str]:
    done = subprocess.run([go, "env", *names], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GoBuildError(f"go env (in {cwd}) failed:\n{done.stderr.rstrip()}")
    return done.stdout.splitlines()


def _relocate(
    go: str, main: MainPackage, cwd: Path, go_mod: str, modfile: str | None, scratch: Path
) -> tuple[Path, str, Path]:
    """Where to build a main package that lives beneath GOMODCACHE, where go's -overlay may add no file.

    It is built as a copy in a folder of the main module that exists only in the overlay (`RELOCATED`), with a
    copy of the module's go.mod and go.sum: go may add requirements for the package's imports (a module only
    needed indirectly so far), and those land in the copy. Returns the folder, its import path, the go.mod copy.
    """
    if not go_mod or go_mod == os.devnull:
        raise GoBuildError(
            f"{main.import_path} is in the module cache ({main.dir}), where go build -overlay cannot add the agent, "
            f"and {cwd} is in no module to build it from: run cover build in (or -C) a module that requires it"
        )
    source = cwd / modfile if modfile else Path(go_mod)
    done = subprocess.run([go, "mod", "edit", "-json", str(source)], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise GoBuildError(f"go mod edit -json {source} failed:\n{done.stderr.rstrip()}")
    module_path = json.loads(done.stdout)["Module"]["Path"]
    copy = scratch / "go.mod"
    shutil.copyfile(source, copy)
    if source.with_suffix(".sum").exists():
        shutil.copyfile(source.with_suffix(".sum"), copy.with_suffix(".sum"))
    folder = Path(go_mod).parent / RELOCATED / main.command_name
    return folder, f"{module_path}/{RELOCATED}/{main.command_name}", copy


def _split_flags(flags: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The flags this module reads (`_LIST_FLAGS` and coverpkg, by name) and those that go on to go build."""
    chosen: dict[str, str] = {}
    passed: list[str] = []
    tokens = list(flags)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("-") or token in ("-", "--"):
            raise GoBuildError(
                f"{token!r} after --: only go build flags go there (PKG comes before --; write flags as -name=value)"
            )
        name, has_value, value = token.lstrip("-").partition("=")
        if name in _VALUE_FLAGS and not has_value:
            if not tokens:
                raise GoBuildError(f"{token}: go build flag without its value")
            value = tokens.pop(0)
        if name in ("o", "C"):
            raise GoBuildError(f"-{name}: give it to auditcov cover build itself (before PKG), not after --")
        if name == "toolexec":
            raise GoBuildError("-toolexec: cover build runs go with a -toolexec of its own (see golang/go#73802)")
        if name == "covermode" and value != "atomic":
            raise GoBuildError(
                f"-covermode={value}: the agent needs -covermode=atomic (runtime/coverage.WriteCounters); drop it"
            )
        if name in (*_LIST_FLAGS, "coverpkg"):
            chosen[name] = value
        # The build sets -cover and -covermode itself, and passes the merged overlay and its own -coverpkg.
        if name not in ("overlay", "coverpkg", "covermode", "cover"):
            passed.append(f"-{name}={value}" if name in _VALUE_FLAGS else token)
    return chosen, passed


def _user_overlay(path: str, cwd: Path) -> dict[str, str]:
    """The Replace map of the user's own -overlay file (relative paths in it are go's: from the go directory)."""
    overlay = cwd / path
    try:
        replace = json.loads(overlay.read_text())["Replace"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoBuildError(f"-overlay={path}: not a go build overlay file ({exc})") from None
    return {str(cwd / old): str(cwd / new) if new else new for old, new in replace.items()}


def _toolexec_script(replace: dict[str, str]) -> str:
    """The -toolexec wrapper: the cover tool gets each overlaid file's backing path (see the module docstring)."""
    cases = "".join(f"\t{shlex.quote(old)}) arg={shlex.quote(new)} ;;\n" for old, new in replace.items() if new)
    return f"""# auditcov cover build: Go's cover tool gets the overlay's files (golang/go#73802).
# Every other tool runs as it is.
case "$1" in
*/cover | */cover.exe) ;;
*) exec "$@" ;;
esac
for arg do
\tshift
\tcase "$arg" in
{cases}\tesac
\tset -- "$@" "$arg"
done
exec "$@"
"""
