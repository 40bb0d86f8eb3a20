"""Per-test Go coverage deltas from real snapshots of a real instrumented program (tests/gocov_sample).

A long-running atomic-mode build is driven through distinct code paths on stdin and writes its counters on
demand between them; count- and set-mode builds get the same snapshots from successive runs (a run that does
the first k paths, then exits). Markers or events cut the windows. The oracle is `go tool covdata textfmt`
of the same snapshot directories: a test's delta must equal its after-minus-before, block by block.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from gotool import GO_ENV

from auditcov.merge.cover.gotext import parse_text
from auditcov.merge.cover.model import Block
from auditcov.merge.cover.pertest import per_test_coverage
from auditcov.merge.events import format_time
from auditcov.merge.reports.coverjson import report_test_lines
from auditcov.merge.store import open_store
from auditcov.sink.cli import cli

pytestmark = pytest.mark.go

SAMPLE = Path(__file__).parent / "gocov_sample"
#: The code paths, one per test, in the order they run; each test's window is [SECOND * i, SECOND * (i + 1)].
PATHS = [("test-alpha", "alpha"), ("test-beta", "beta 5"), ("test-gamma", "gamma hello")]
SECOND = 1_000_000
BASE_US = 1_700_000_000 * SECOND


def _build(tmp: Path, mode: str) -> Path:
    binary = tmp / f"covsample-{mode}"
    subprocess.run(
        ["go", "build", "-cover", f"-covermode={mode}", "-o", str(binary), "."],
        cwd=SAMPLE,
        env=GO_ENV,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return binary


def _oracle(directory: Path) -> dict[Block, int]:
    """Counts per block of a snapshot directory, as `go tool covdata textfmt` says."""
    text = subprocess.run(
        ["go", "tool", "covdata", "textfmt", "-i", str(directory), "-o", "/dev/stdout"],
        env=GO_ENV,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return parse_text(text).counts


def _atomic_snapshots(tmp: Path) -> list[Path]:
    """One process, snapshots written between the paths by `runtime/coverage.WriteCountersDir`."""
    binary = _build(tmp, "atomic")
    snaps = [tmp / f"atomic-{i}" for i in range(len(PATHS) + 1)]
    commands = [f"snap {snaps[0]}"]
    for (_, path), snap in zip(PATHS, snaps[1:], strict=True):
        commands += [path, f"snap {snap}"]
    done = subprocess.run(
        [str(binary)], input="\n".join(commands) + "\nquit\n", capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["ok"] * len(commands), done.stdout + done.stderr
    return snaps


def _run_snapshots(tmp: Path, mode: str) -> list[Path]:
    """Set/count mode cannot write counters on demand: snapshot k is a run doing the first k paths (GOCOVERDIR)."""
    binary = _build(tmp, mode)
    snaps = []
    for k in range(len(PATHS) + 1):
        snap = tmp / f"{mode}-{k}"
        snap.mkdir()
        commands = "".join(f"{path}\n" for _, path in PATHS[:k])
        subprocess.run(
            [str(binary)],
            input=commands,
            env={"GOCOVERDIR": str(snap), "PATH": "/usr/bin:/bin"},
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        snaps.append(snap)
    return snaps


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, list[Path]]:
    tmp = tmp_path_factory.mktemp("gocov")
    return {"atomic": _atomic_snapshots(tmp), "count": _run_snapshots(tmp, "count"), "set": _run_snapshots(tmp, "set")}


def _import(db_path: Path, run: str, snaps: list[Path], process: str) -> None:
    runner = CliRunner()
    for i, snap in enumerate(snaps):
        result = runner.invoke(
            cli,
            [
                "cover",
                "import",
                "--db",
                str(db_path),
                "--run",
                run,
                "--process",
                process,
                "--at",
                format_time(BASE_US + i * SECOND),
                str(snap),
            ],
        )
        assert result.exit_code == 0, result.output
        assert f"snapshot of {process}" in result.output


def _markers(db_path: Path, run: str) -> None:
    db = open_store(db_path)
    with db.conn:
        for i, (test, _) in enumerate(PATHS):
            db.conn.execute("INSERT INTO markers VALUES (?, ?, 'start', ?)", (run, test, BASE_US + i * SECOND))
            db.conn.execute("INSERT INTO markers VALUES (?, ?, 'end', ?)", (run, test, BASE_US + (i + 1) * SECOND))
    db.conn.close()


def _expected_delta(before: dict[Block, int], after: dict[Block, int], mode: str) -> dict[Block, int]:
    delta = {block: after[block] - before.get(block, 0) for block in after}
    return {block: count for block, count in delta.items() if count}


@pytest.mark.parametrize("mode", ["atomic", "count", "set"])
def test_each_window_gets_exactly_its_delta(snapshots, tmp_path, mode):
    snaps = snapshots[mode]
    db_path = tmp_path / "store.db"
    _import(db_path, "r", snaps, "covsample")
    _markers(db_path, "r")
    results = {result.test: result for result in per_test_coverage(open_store(db_path), "r")}
    assert list(results) == [test for test, _ in PATHS]
    for i, (test, path) in enumerate(PATHS):
        result = results[test]
        expected = _expected_delta(_oracle(snaps[i]), _oracle(snaps[i + 1]), mode)
        assert result.profile.counts == expected, test
        assert result.window.source == "markers" and not result.problems and not result.shared_with
        assert result.first_hit_only == (mode == "set")
        # Exactly this path's file among the three path files, every block of it.
        own = f"{path.split()[0]}.go"
        files = {Path(block.file).name for block in result.profile.counts}
        assert files & {"alpha.go", "beta.go", "gamma.go"} == {own}
    beta = {b.start_line: c for b, c in results["test-beta"].profile.counts.items() if b.file.endswith("beta.go")}
    if mode == "set":
        assert set(beta.values()) == {1}
    else:
        assert beta[7] == 5 and beta[8] == 3 and beta[10] == 2  # loop body, evens (0, 2, 4), odds (1, 3)


def test_report_json_and_text(snapshots, tmp_path):
    db_path = tmp_path / "store.db"
    snaps = snapshots["atomic"]
    _import(db_path, "r", snaps, "covsample")
    _markers(db_path, "r")
    runner = CliRunner()
    result = runner.invoke(cli, ["cover", "report", "--db", str(db_path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["format_version"] == 1 and report["run"] == "r"
    by_test = {entry["test"]: entry for entry in report["tests"]}
    gamma = by_test["test-gamma"]
    gamma_file = next(file for file in gamma["files"] if file.endswith("gamma.go"))
    # gamma("hello") takes the long branch (lines 6-10), never the short one (line 11).
    assert gamma["files"][gamma_file] == [[6, 10]]
    assert gamma["window"]["from"] == "markers" and gamma["first_hit_only"] is False
    union = {
        (file, line)
        for entry in report["tests"]
        for file, spans in entry["files"].items()
        for a, b in spans
        for line in range(a, b + 1)
    }
    assert report["totals"]["lines_covered"] == len(union) and report["totals"]["tests"] == 3
    text = runner.invoke(cli, ["cover", "report", "--db", str(db_path), "--test", "test-gamma"], env={"COLUMNS": "200"})
    assert text.exit_code == 0, text.output
    assert "test-gamma" in text.output and "6-10" in text.output and "test-alpha" not in text.output


def test_windows_from_events_and_overlaps(snapshots, tmp_path):
    db_path = tmp_path / "store.db"
    _import(db_path, "r", snapshots["count"], "covsample")
    db = open_store(db_path)

    def event(audit_id: str, test: str, received: int, stage: int) -> None:
        db.conn.execute(
            "INSERT INTO events (run, audit_id, stage, verb, request_uri, user_agent, username, client, test, "
            "received_us, stage_us) VALUES ('r', ?, 'ResponseComplete', 'get', '/api', 'e2e.test', 'u', 'e2e.test', "
            "?, ?, ?)",
            (audit_id, test, BASE_US + received, BASE_US + stage),
        )

    with db.conn:
        event("a1", "first", 0, 100)  # first: [0, 1s] from its first and last events
        event("a2", "first", SECOND - 100, SECOND)
        event("b1", "second", SECOND, 2 * SECOND)  # second: [1s, 2s]: touches first, no overlap
        event("c1", "wide", SECOND // 2, 3 * SECOND)  # wide: overlaps both
        event("d1", "late", 3 * SECOND, 4 * SECOND)  # late: no snapshot after 3s
    results = {result.test: result for result in per_test_coverage(db, "r")}
    assert results["first"].window.source == "events"
    assert (results["first"].window.start_us, results["first"].window.end_us) == (BASE_US, BASE_US + SECOND)
    assert sorted(results["first"].shared_with) == ["wide"]
    assert sorted(results["wide"].shared_with) == ["first", "second"]
    # wide starts between snapshots 0 and 1: its delta runs from snapshot 0 to snapshot 3.
    everything = _expected_delta(_oracle(snapshots["count"][0]), _oracle(snapshots["count"][3]), "count")
    assert results["wide"].profile.counts == everything
    assert results["late"].problems == ["process 'covsample': no snapshot at or after the test's end"]
    assert not results["late"].profile.counts


def test_counters_that_go_down_are_a_problem_not_a_delta(snapshots, tmp_path):
    db_path = tmp_path / "store.db"
    snaps = snapshots["atomic"]
    # Imported in reverse order: the counters go down over time, as after a restart.
    _import(db_path, "r", list(reversed(snaps)), "covsample")
    _markers(db_path, "r")
    results = per_test_coverage(open_store(db_path), "r")
    assert all("counters went down" in result.problems[0] for result in results)
    assert all(not result.profile.counts for result in results)


def test_a_directory_with_two_snapshots_is_refused(snapshots, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(snapshots["atomic"][1], mixed)
    for counters in snapshots["atomic"][2].glob("covcounters.*"):
        shutil.copy(counters, mixed)
    result = CliRunner().invoke(cli, ["cover", "import", "--db", str(tmp_path / "s.db"), "--run", "r", str(mixed)])
    assert result.exit_code == 1
    assert "exactly one covcounters file; found 2" in result.output and str(mixed) in result.output


def test_auditcov_report_json_has_endpoints_and_lines_side_by_side(snapshots, tmp_path, fixtures):
    """Events from each test's e2e client cut its window; `auditcov report --format json` joins both halves."""
    db_path, events = str(tmp_path / "store.db"), tmp_path / "audit.jsonl"
    resources = {"test-alpha": "pods", "test-beta": "configmaps", "test-gamma": "secrets"}
    operations = {"pods": "Pod", "configmaps": "ConfigMap", "secrets": "Secret"}
    lines = []
    for i, (test, _) in enumerate(PATHS):
        for n, offset in enumerate((SECOND // 10, 9 * SECOND // 10)):  # inside [i s, (i + 1) s]
            moment = format_time(BASE_US + i * SECOND + offset)
            lines.append(
                {
                    "kind": "Event",
                    "apiVersion": "audit.k8s.io/v1",
                    "level": "Metadata",
                    "auditID": f"{test}-{n}",
                    "stage": "ResponseComplete",
                    "verb": "list",
                    "requestURI": f"/api/v1/{resources[test]}",
                    "userAgent": f"e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- {test}",
                    "user": {"username": "admin"},
                    "objectRef": {"resource": resources[test], "apiVersion": "v1"},
                    "responseStatus": {"code": 200},
                    "requestReceivedTimestamp": moment,
                    "stageTimestamp": moment,
                }
            )
    events.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    runner = CliRunner()
    spec = str(fixtures / "openapi" / "swagger-v1.36.json.gz")
    for command in (
        ["import", "--db", db_path, "--run", "r", str(events)],
        ["remap", "--db", db_path, "--run", "r", "--openapi", spec],
    ):
        result = runner.invoke(cli, command)
        assert result.exit_code == 0, result.output
    _import(Path(db_path), "r", snapshots["atomic"], "covsample")
    result = runner.invoke(cli, ["report", "--db", db_path, "--run", "r", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    by_test = {entry["test"]: entry for entry in report["tests"]}
    assert set(by_test) == set(resources)
    for test, resource in resources.items():
        entry = by_test[test]
        assert list(entry["endpoints"]) == [f"listCoreV1{operations[resource]}ForAllNamespaces"]
        assert entry["code"]["window"]["from"] == "events" and not entry["code"]["problems"]
        path_file = f"{test.removeprefix('test-')}.go"
        files = report_test_lines(report, entry)
        assert [Path(file).name for file in files if not file.endswith("main.go")] == [path_file]
    assert report["code_totals"]["tests"] == 3
