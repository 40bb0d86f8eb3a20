"""Benchmark: our Go covdata reader against `go tool covdata` on the Go distribution's own `cmd/go`.

Builds `cmd/go` with `-cover -coverpkg=cmd/go/...,cmd/internal/...` (about 18,000 blocks), runs it a few times
with GOCOVERDIR (`go version`, `go env`, `go list std`), checks that `auditcov cover textfmt` prints exactly
what `go tool covdata textfmt` prints, then times, best and median of `--repeat` runs:
- whole process against whole process: `auditcov cover textfmt` against `go tool covdata textfmt` (the `go`
  command finds and starts the tool) and against the covdata binary itself (`go tool -n covdata`); the same
  for `percent`;
- the reader alone, in this process: `read_covdata`, and `read_covdata` + `write_text`.
Prints the figures and our time as a multiple of Go's. The goal is at most 2x.

Usage: .venv/bin/python bench/covdata.py [--repeat 7] [--mode atomic] [--work DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from merge.cover.covdata import read_covdata
from merge.cover.gotext import write_text

ENV = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOPROXY": "off", "GOTOOLCHAIN": "local"}
AUDITCOV = Path(sys.executable).with_name("auditcov")


def _run(*command: str | Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in command], env=env or ENV, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{done.stderr}")
    return done.stdout


def _times(action: Callable[[], object], repeat: int) -> list[float]:
    action()  # warm: page cache, Go's tool cache, imports
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


def _row(name: str, seconds: list[float], base: list[float] | None = None) -> None:
    ratio = f"  {statistics.median(seconds) / statistics.median(base):5.2f}x Go" if base else ""
    print(f"  {name:<52} best {1000 * min(seconds):7.1f} ms  median {1000 * statistics.median(seconds):7.1f} ms{ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mode", choices=["set", "count", "atomic"], default="atomic")
    parser.add_argument("--work", type=Path, help="Build and run here (default: a temporary directory).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-covdata-"))
    work.mkdir(parents=True, exist_ok=True)
    coverdir = work / "coverdir"
    shutil.rmtree(coverdir, ignore_errors=True)
    coverdir.mkdir()

    binary = work / "go.cover"
    started = time.perf_counter()
    _run(
        "go",
        "build",
        "-cover",
        f"-covermode={args.mode}",
        "-coverpkg=cmd/go/...,cmd/internal/...",
        "-o",
        binary,
        "cmd/go",
    )
    print(f"built {binary} in {time.perf_counter() - started:.1f} s")
    for command in (["version"], ["env"], ["list", "std"]):
        _run(binary, *command, env={**ENV, "GOCOVERDIR": str(coverdir)})
    covdata = _run("go", "tool", "-n", "covdata").strip()

    go_text, our_text = work / "go.txt", work / "ours.txt"
    _run(covdata, "textfmt", "-i", coverdir, "-o", go_text)
    _run(AUDITCOV, "cover", "textfmt", coverdir, "-o", our_text)
    if go_text.read_bytes() != our_text.read_bytes():
        sys.exit(f"textfmt outputs differ: diff {go_text} {our_text}")
    blocks = len(go_text.read_text().splitlines()) - 1
    sizes = sum(path.stat().st_size for path in coverdir.iterdir())
    print(
        f"{coverdir}: {len(list(coverdir.iterdir()))} files, {sizes / 1024:.0f} KiB, {blocks} blocks, mode {args.mode}"
    )
    print("outputs identical (textfmt)")

    print(f"whole process, {args.repeat} runs each:")
    go_tool = _times(lambda: _run("go", "tool", "covdata", "textfmt", "-i", coverdir, "-o", go_text), args.repeat)
    go_binary = _times(lambda: _run(covdata, "textfmt", "-i", coverdir, "-o", go_text), args.repeat)
    ours = _times(lambda: _run(AUDITCOV, "cover", "textfmt", coverdir, "-o", our_text), args.repeat)
    _row("go tool covdata textfmt", go_tool)
    _row("covdata textfmt (the tool binary itself)", go_binary)
    _row("auditcov cover textfmt  vs go tool covdata", ours, go_tool)
    _row("auditcov cover textfmt  vs the tool binary", ours, go_binary)
    go_percent = _times(lambda: _run(covdata, "percent", "-i", coverdir), args.repeat)
    our_percent = _times(lambda: _run(AUDITCOV, "cover", "percent", coverdir), args.repeat)
    _row("covdata percent (the tool binary itself)", go_percent)
    _row("auditcov cover percent  vs the tool binary", our_percent, go_percent)
    startup = _times(lambda: _run(sys.executable, "-c", "import sink.cli"), args.repeat)
    _row("(python start + import sink.cli, included above)", startup)

    print("in process:")
    _row("read_covdata", _times(lambda: read_covdata(coverdir), args.repeat))
    _row("read_covdata + write_text", _times(lambda: write_text(read_covdata(coverdir), io.StringIO()), args.repeat))


if __name__ == "__main__":
    main()
