"""Reading a KUBE_COVERAGE_FILE-style text profile while a writer rewrites it in place: never a torn snapshot."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from auditcov.merge.cover.gotext import parse_text
from auditcov.merge.cover.livefile import read_settled
from auditcov.merge.cover.model import CoverageError
from auditcov.merge.cover.snapshots import list_snapshots, load_counters, load_layout
from auditcov.merge.store import open_store
from auditcov.sink.cli import cli


@pytest.fixture
def profiles(fixtures) -> list[str]:
    """Two whole profiles of one binary: the real one, and one with every count doubled (a later flush)."""
    first = (fixtures / "gocover" / "pbft-consensus-atomic.out").read_text()
    later = re.sub(r" (\d+)$", lambda match: f" {2 * int(match.group(1))}", first, flags=re.MULTILINE)
    assert later != first
    return [first, later]


class Rewriter(threading.Thread):
    """Rewrites the file in place (truncate, then chunks with flushes), alternating between `texts`."""

    def __init__(self, path: Path, texts: list[str], *, rest: float):
        super().__init__(daemon=True)
        self.path, self.texts, self.rest = path, [text.encode() for text in texts], rest
        self.stop = threading.Event()
        self.rewrites = 0

    def run(self) -> None:
        while not self.stop.is_set():
            data = self.texts[self.rewrites % len(self.texts)]
            with open(self.path, "r+b") as handle:
                handle.truncate(0)
                for offset in range(0, len(data), 2048):
                    handle.write(data[offset : offset + 2048])
                    handle.flush()
                    time.sleep(0.002)
            self.rewrites += 1
            time.sleep(self.rest)


@pytest.fixture
def live_file(tmp_path, profiles):
    path = tmp_path / "kube-coverage.out"
    path.write_text(profiles[0])
    writers = []

    def start(rest: float) -> Rewriter:
        writer = Rewriter(path, profiles, rest=rest)
        writer.start()
        writers.append(writer)
        return writer

    yield path, start
    for writer in writers:
        writer.stop.set()
        writer.join()


def test_settled_reads_are_whole_while_naive_reads_tear(live_file, profiles):
    path, start = live_file
    wholes = [parse_text(text).counts for text in profiles]
    writer = start(rest=0.15)
    naive_torn = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            torn = parse_text(path.read_text()).counts not in wholes
        except CoverageError:
            torn = True
        naive_torn += torn
    # The hazard is real: reading without care catches the writer mid-rewrite.
    assert naive_torn > 0
    seen = set()
    for _ in range(8):
        profile, _at = read_settled(path, parse_text, quiet=0.05, pause=0.01, attempts=200)
        assert profile.counts in wholes
        seen.add(wholes.index(profile.counts))
        time.sleep(0.05)
    assert writer.rewrites > 2 and seen == {0, 1}


def test_import_of_a_live_file_stores_a_whole_snapshot(live_file, profiles, tmp_path):
    path, start = live_file
    start(rest=0.3)
    db_path = tmp_path / "store.db"
    result = CliRunner().invoke(cli, ["cover", "import", "--db", str(db_path), "--run", "r", str(path)])
    assert result.exit_code == 0, result.output
    db = open_store(db_path)
    (snapshot,) = list_snapshots(db, "r")
    assert snapshot.process == str(path) and snapshot.mode == "atomic"
    layout = load_layout(db, snapshot.layout)
    stored = {layout.block(i): count for i, count in enumerate(load_counters(db, snapshot))}
    assert stored in [parse_text(text).counts for text in profiles]


def test_a_file_that_never_settles_is_an_error(live_file):
    path, start = live_file
    start(rest=0.0)
    with pytest.raises(CoverageError, match=r"no whole read in 5 attempts; last: it (was written|changed|is not)"):
        read_settled(path, parse_text, quiet=0.2, pause=0.0, attempts=5)


def test_a_profile_cut_mid_line_is_not_whole(tmp_path, profiles):
    path = tmp_path / "cut.out"
    path.write_text(profiles[0][: len(profiles[0]) // 2 - 7])
    with pytest.raises(CoverageError, match="not a whole profile"):
        read_settled(path, parse_text, quiet=0.0, pause=0.0, attempts=2)
