"""Benchmark: our Go covdata reader against `go tool covdata`, on a coverage directory of a real program.

Where the directory comes from (one of):
- default: builds the Go distribution's own `cmd/go` with `-cover -coverpkg=cmd/go/...,cmd/internal/...`
  (about 18,000 blocks) and runs it a few times with GOCOVERDIR (`go version`, `go env`, `go list std`);
- `--kube-apiserver BIN`: a `go build -cover` kube-apiserver (hack/e2e/build-cover.sh), started `--runs` times
  with GOCOVERDIR beside etcd on 127.0.0.1 (tests/e2e/controlplane.py, the e2e binaries of hack/e2e/build.sh),
  given the e2e tests' kubectl traffic, and stopped with SIGTERM: it shuts down and exits through os.Exit,
  which writes its counters (the meta file is written at start);
- `--covdir DIR`: an existing directory.
Prints the directory's size and its programs' packages, functions and blocks, checks that `auditcov cover
textfmt` prints exactly what `go tool covdata textfmt` prints (and `percent` the same lines), then times, best
and median of `--repeat` runs, with the load average before and after (the machine is shared):
- whole process against whole process: `auditcov cover textfmt` against `go tool covdata textfmt` (the `go`
  command finds and starts the tool) and against the covdata binary itself (`go tool -n covdata`); the same
  for `percent`;
- the reader alone, in this process: `read_covdata`, then with `write_text` and with the percent figures, against
  the covdata binary's whole run (Go's reader has no in-process figure).
Prints the figures and our time as a multiple of Go's. The goal is at most 2x.

Usage: .venv/bin/python bench/covdata.py [--repeat 7] [--mode atomic] [--work DIR]
       .venv/bin/python bench/covdata.py --kube-apiserver "$(hack/e2e/build-cover.sh | tail -1)/kube-apiserver"
       .venv/bin/python bench/covdata.py --covdir DIR
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from auditcov.merge.cover.covdata import parse_meta, read_covdata
from auditcov.merge.cover.gotext import write_text
from auditcov.merge.cover.percent import format_percent, package_coverage

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


def _cmd_go_coverdir(work: Path, mode: str) -> Path:
    """Build an instrumented `cmd/go`, run it three times with GOCOVERDIR; the directory."""
    coverdir = _fresh(work / "coverdir")
    binary = work / "go.cover"
    started = time.perf_counter()
    _run("go", "build", "-cover", f"-covermode={mode}", "-coverpkg=cmd/go/...,cmd/internal/...", "-o", binary, "cmd/go")
    print(f"built {binary} in {time.perf_counter() - started:.1f} s")
    for command in (["version"], ["env"], ["list", "std"]):
        _run(binary, *command, env={**ENV, "GOCOVERDIR": str(coverdir)})
    return coverdir


def _kube_apiserver_coverdir(work: Path, binary: Path, runs: int) -> Path:
    """Start etcd + the instrumented `binary` on loopback `runs` times, each with kubectl traffic and a SIGTERM;
    the GOCOVERDIR they wrote."""
    # The e2e harness: its control plane and its kubectl traffic (test extras: trustme, pytest).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
    from controlplane import Certificates, ControlPlane
    from traffic import KUBECTL_COMMANDS

    coverdir = _fresh(work / "coverdir")
    for run in range(1, runs + 1):
        cluster = work / f"run-{run}"
        shutil.rmtree(cluster, ignore_errors=True)
        cluster.mkdir()
        plane = ControlPlane(cluster, Certificates(cluster / "pki"), [], apiserver=binary)
        started = time.perf_counter()
        # Children inherit the environment; etcd is not instrumented and ignores GOCOVERDIR.
        os.environ["GOCOVERDIR"] = str(coverdir)
        try:
            plane.start()
        finally:
            del os.environ["GOCOVERDIR"]
        ready = time.perf_counter()
        try:
            for args, stdin in KUBECTL_COMMANDS:
                plane.kubectl(*args, stdin=stdin)
            status = plane.stop_apiserver()
        finally:
            plane.stop()
        counters = len(list(coverdir.glob("covcounters.*")))
        print(
            f"kube-apiserver run {run}: ready in {ready - started:.1f} s, then traffic and SIGTERM in"
            f" {time.perf_counter() - ready:.1f} s, exit status {status}, {counters} counter files so far ({cluster})"
        )
        if counters != run:
            sys.exit(f"kube-apiserver run {run} wrote no counter file into {coverdir}; see {cluster}")
    return coverdir


def _fresh(directory: Path) -> Path:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    return directory


def _describe(coverdir: Path) -> None:
    """The directory's files and what its programs can cover."""
    files = list(coverdir.iterdir())
    counters = [path for path in files if path.name.startswith("covcounters.")]
    size = sum(path.stat().st_size for path in files)
    print(f"{coverdir}: {len(files)} files ({len(counters)} counter files), {size / 1024:.0f} KiB")
    for path in sorted(coverdir.glob("covmeta.*")):
        meta = parse_meta(path.read_bytes(), where=str(path))
        functions = sum(len(package.functions) for package in meta.packages)
        print(
            f"  {path.name}: {path.stat().st_size / 1024:.0f} KiB, mode {meta.mode}, {len(meta.packages)} packages,"
            f" {functions} functions, {len(meta.block_files)} blocks"
        )


def _go_percent(text: str) -> str:
    """Go's percent output without the packages it prints bare (no statements: name, no figure, no line end)."""
    return re.sub(r"\t[^\t\n]+\t\t(?=\t|\Z)", "", text)


def _check_same(coverdir: Path, covdata: str, work: Path) -> None:
    go_text, our_text = work / "go.txt", work / "ours.txt"
    _run(covdata, "textfmt", "-i", coverdir, "-o", go_text)
    _run(AUDITCOV, "cover", "textfmt", coverdir, "-o", our_text)
    if go_text.read_bytes() != our_text.read_bytes():
        same_lines = sorted(go_text.read_text().splitlines()) == sorted(our_text.read_text().splitlines())
        sys.exit(f"textfmt outputs differ ({'only in order' if same_lines else 'in lines'}): diff {go_text} {our_text}")
    blocks = go_text.read_text().count("\n") - 1
    go_percent = _go_percent(_run(covdata, "percent", "-i", coverdir))
    our_percent = _run(AUDITCOV, "cover", "percent", coverdir)
    if go_percent != our_percent:
        (work / "go-percent.txt").write_text(go_percent)
        (work / "ours-percent.txt").write_text(our_percent)
        sys.exit(f"percent outputs differ: diff {work / 'go-percent.txt'} {work / 'ours-percent.txt'}")
    print(
        f"outputs identical: textfmt ({blocks} lines, {go_text.stat().st_size / 2**20:.1f} MiB),"
        f" percent ({our_percent.count(chr(10))} packages with statements)"
    )


def _load() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mode", choices=["set", "count", "atomic"], default="atomic", help="cmd/go's counter mode.")
    parser.add_argument("--work", type=Path, help="Build and run here (default: a temporary directory).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--covdir", type=Path, help="Time this existing coverage directory instead.")
    source.add_argument("--kube-apiserver", type=Path, help="A `go build -cover` kube-apiserver to run instead.")
    parser.add_argument("--runs", type=int, default=2, help="kube-apiserver starts, one counter file each.")
    args = parser.parse_args()
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-covdata-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.covdir:
        coverdir = args.covdir.resolve()
    elif args.kube_apiserver:
        coverdir = _kube_apiserver_coverdir(work, args.kube_apiserver.resolve(), args.runs)
    else:
        coverdir = _cmd_go_coverdir(work, args.mode)
    covdata = _run("go", "tool", "-n", "covdata").strip()
    _describe(coverdir)
    _check_same(coverdir, covdata, work)

    go_text, our_text = work / "go.txt", work / "ours.txt"
    print(f"whole process, {args.repeat} runs each (load average {_load()} on {os.cpu_count()} cores):")
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
    text = _times(lambda: write_text(read_covdata(coverdir), io.StringIO()), args.repeat)
    _row("read_covdata + write_text  vs the tool binary", text, go_binary)
    percent = _times(lambda: format_percent(package_coverage(read_covdata(coverdir))), args.repeat)
    _row("read_covdata + percent     vs the tool binary", percent, go_percent)
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
