"""Per-test Python lines: pytest-cov with `--cov-context=test` runs a small package in a subprocess; what we
read, store and report per test must equal what coverage.py's own `set_query_contexts` + `lines()` returns."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from coverage import CoverageData

from auditcov.merge.cover.model import CoverageError
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.cover.pycoverage import owning_test, read_contexts
from auditcov.merge.cover.snapshots import save_python_lines
from auditcov.merge.store import open_store
from auditcov.sink.cli import cli

SAMPLE = Path(__file__).parent / "pyproject_sample"


@pytest.fixture(scope="module", params=["lines", "branches"])
def coverage_file(request, tmp_path_factory) -> Path:
    """A real `.coverage` file with one context per test phase, made by pytest-cov; with branches, coverage.py
    records arcs and derives lines from them."""
    workdir = tmp_path_factory.mktemp("pysample") / "sample"
    shutil.copytree(SAMPLE, workdir)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--cov=shapes",
            "--cov-context=test",
            "--cov-report=",
            *(["--cov-branch"] if request.param == "branches" else []),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir / ".coverage"


def _coverage_lines(path: Path, pattern: str) -> dict[str, set[int]]:
    data = CoverageData(basename=str(path))
    data.read()
    data.set_query_contexts([pattern])
    return {file: set(data.lines(file)) for file in data.measured_files() if data.lines(file)}


def test_each_context_equals_coverage_py(coverage_file):
    contexts = read_contexts(coverage_file)
    assert {c.context for c in contexts} >= {
        "check_shapes.py::test_square|run",
        "check_shapes.py::test_registry|setup",
        "check_shapes.py::test_registry|teardown",
    }
    for item in contexts:
        expected = _coverage_lines(coverage_file, f"^{re.escape(item.context)}$")
        assert {file: set(lines) for file, lines in item.lines.items()} == expected, item.context


def test_stored_per_test_lines_equal_coverage_py(coverage_file, tmp_path):
    db = open_store(tmp_path / "store.db")
    save_python_lines(db, run="r1", contexts=read_contexts(coverage_file), now_us=1)
    results = {result.test: result for result in per_test_coverage(db, "r1")}
    assert set(results) == {owning_test(item.context) for item in read_contexts(coverage_file)}
    assert "check_shapes.py::test_registry" in results
    for test, result in results.items():
        # A test's lines are the union of its setup, run and teardown contexts.
        expected = _coverage_lines(coverage_file, f"^{re.escape(test)}(\\|(setup|run|teardown))?$")
        assert result.profile.lines() == expected, test
        assert result.window is None and not result.problems


def test_lines_follow_the_code_paths(coverage_file, tmp_path):
    db = open_store(tmp_path / "store.db")
    save_python_lines(db, run="r1", contexts=read_contexts(coverage_file), now_us=1)
    results = {result.test: result.profile.lines() for result in per_test_coverage(db, "r1")}
    area = str(coverage_file.parent / "shapes" / "area.py")
    registry = str(coverage_file.parent / "shapes" / "registry.py")
    square = results["check_shapes.py::test_square"][area]
    assert 8 in square and 10 not in square  # the square branch, not the circle one
    circle = results["check_shapes.py::test_circle_big"][area]
    assert {10, 15, 17} <= circle and 8 not in circle
    # The fixture's teardown calls Registry.close: its lines belong to the test through the teardown context.
    assert {12, 13, 14} <= results["check_shapes.py::test_registry"][registry]
    assert registry not in results["check_shapes.py::test_square"]


def test_a_file_that_is_not_coverage_data(tmp_path):
    bogus = tmp_path / ".coverage"
    bogus.write_text("mode: set\n")
    with pytest.raises(CoverageError, match=re.escape(str(bogus))):
        read_contexts(bogus)
    with pytest.raises(CoverageError, match="no such"):
        read_contexts(tmp_path / "missing")


def test_cli_import_and_json_report(coverage_file, tmp_path):
    db_path = str(tmp_path / "store.db")
    runner = CliRunner()
    imported = runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "py", str(coverage_file)])
    assert imported.exit_code == 0, imported.output
    assert "9 coverage.py contexts stored as per-test Python lines" in imported.output
    report = runner.invoke(cli, ["cover", "report", "--db", db_path, "--format", "json"])
    assert report.exit_code == 0, report.output
    tests = {entry["test"]: entry for entry in orjson.loads(report.output)["tests"]}
    for test, entry in tests.items():
        expected = _coverage_lines(coverage_file, f"^{re.escape(test)}(\\|(setup|run|teardown))?$")
        got = {file: {n for a, b in spans for n in range(a, b + 1)} for file, spans in entry["files"].items()}
        assert got == expected, test
        assert entry["lines_covered"] == entry["statements_run"] == sum(map(len, expected.values()))
        assert entry["window"] is None and entry["first_hit_only"] is False
    # Importing the same file again replaces its rows: nothing counts twice.
    again = runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "py", str(coverage_file)])
    assert again.exit_code == 0
    assert runner.invoke(cli, ["cover", "report", "--db", db_path, "--format", "json"]).output == report.output


def test_cli_errors_name_the_input(tmp_path, coverage_file):
    runner = CliRunner()
    db_path = str(tmp_path / "store.db")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    result = runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "r", str(junk)])
    assert result.exit_code == 1 and f"{junk}: not a Go covdata directory" in result.output
    result = runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "r", "--at", "noon", str(junk)])
    assert result.exit_code == 2 and "'noon' is not an RFC 3339 time" in result.output
    with_process = ["cover", "import", "--db", db_path, "--run", "a", "--process", "x", str(coverage_file)]
    result = runner.invoke(cli, with_process)
    assert result.exit_code == 1 and "holds per-test lines, not a snapshot" in result.output
    runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "a", str(coverage_file)])
    runner.invoke(cli, ["cover", "import", "--db", db_path, "--run", "b", str(coverage_file)])
    result = runner.invoke(cli, ["cover", "report", "--db", db_path])
    assert result.exit_code == 1 and "the store has 2 runs (a, b): pick one with --run" in result.output
    result = runner.invoke(cli, ["cover", "report", "--db", db_path, "--run", "a", "--test", "nope"])
    assert result.exit_code == 1 and "run 'a' has no test 'nope'" in result.output
