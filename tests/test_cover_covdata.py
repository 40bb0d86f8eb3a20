"""Go binary coverage directories (merge/cover/covdata.py, `auditcov cover textfmt|percent`) against the oracle.

Real programs (tests/goprograms/shapes) are built with `go build -cover` in set, count and atomic modes and run
several times with different inputs; `go tool covdata textfmt` and `percent` on the same directories are the
expected output. Other counter-file shapes Go can read (raw flavor, big-endian, several segments) are made from
real counter files by re-encoding them, and `go tool covdata` reads those too where it can.
"""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from gotool import GOPROGRAMS, run
from hypothesis import given, settings
from hypothesis import strategies as st

from auditcov.merge.cover.covdata import parse_counters, parse_meta, read_covdata
from auditcov.merge.cover.model import CoverageError
from auditcov.merge.cover.uleb128 import decode_run
from auditcov.sink.cli import cli

pytestmark = pytest.mark.go

SHAPES = GOPROGRAMS / "shapes"
MODES = ["set", "count", "atomic"]
#: Inputs to the two programs: each run takes different paths, so counts differ between counter files.
AREA_RUNS = [
    ["square", "2", "circle", "1"],
    ["rect", "3", "hex", "1", "triangle", "4", "square", "40"],
    ["circle", "-1"],
]
WORDS_RUNS = [["a", "b", "A", "c"], ["Go", "go", "GO", "gopher", "x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]]


@pytest.fixture(scope="module")
def programs(tmp_path_factory) -> Path:
    """bin/<mode>/{area,words} in every mode, and bin/atomic/snapshot."""
    bin_dir = tmp_path_factory.mktemp("bin")
    for mode in MODES:
        out = f"{bin_dir / mode}/"  # a directory: one binary per main package
        run("go", "build", "-cover", f"-covermode={mode}", "-o", out, "./cmd/area", "./cmd/words", cwd=SHAPES)
    run("go", "build", "-cover", "-covermode=atomic", "-o", bin_dir / "atomic", "./cmd/snapshot", cwd=SHAPES)
    return bin_dir


def _runs(programs: Path, directory: Path, mode: str, *, program: str, inputs: list[list[str]]) -> Path:
    directory.mkdir(exist_ok=True)
    for args in inputs:
        run(programs / mode / program, *args, env={"GOCOVERDIR": str(directory)})
    return directory


def _go_textfmt(*dirs: Path, output: Path) -> str:
    run("go", "tool", "covdata", "textfmt", "-i", ",".join(map(str, dirs)), "-o", output)
    return output.read_text()


def _go_percent(*dirs: Path) -> str:
    # Go prints a package without statements as "\tpath\t\t" with no figure and no line end; ours leaves it out.
    return re.sub(
        r"\t[^\t\n]+\t\t(?=\t|\Z)", "", run("go", "tool", "covdata", "percent", "-i", ",".join(map(str, dirs)))
    )


def _ours(*args: str | Path) -> str:
    result = CliRunner().invoke(cli, ["cover", *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("mode", MODES)
def test_one_program_run_several_times_matches_go(programs, tmp_path, mode):
    coverdir = _runs(programs, tmp_path / "cov", mode, program="area", inputs=AREA_RUNS)
    assert len(list(coverdir.glob("covcounters.*"))) == len(AREA_RUNS)
    expected = _go_textfmt(coverdir, output=tmp_path / "go.txt")
    _ours("textfmt", coverdir, "-o", tmp_path / "ours.txt")
    # Same lines in the same order (the oracle contract is equal after sorting; the order matches too).
    assert (tmp_path / "ours.txt").read_text() == expected
    assert _ours("percent", coverdir) == _go_percent(coverdir)
    counts = {int(line.rsplit(" ", 1)[1]) for line in expected.splitlines()[1:]}
    if mode == "set":
        assert counts == {0, 1}
    else:
        assert max(counts) > len(AREA_RUNS)


@pytest.mark.parametrize("mode", MODES)
def test_two_programs_in_one_directory_match_go(programs, tmp_path, mode):
    coverdir = _runs(programs, tmp_path / "cov", mode, program="area", inputs=AREA_RUNS)
    _runs(programs, coverdir, mode, program="words", inputs=WORDS_RUNS)
    assert len(list(coverdir.glob("covmeta.*"))) == 2
    assert _ours("textfmt", coverdir) == _go_textfmt(coverdir, output=tmp_path / "go.txt")
    percent = _ours("percent", coverdir)
    assert percent == _go_percent(coverdir)
    # geometry is in both programs: one line for it, its statements counted once.
    assert percent.count("example.com/shapes/geometry\t") == 1
    assert "example.com/shapes/units" not in percent


def test_several_directories_merge_like_go(programs, tmp_path):
    first = _runs(programs, tmp_path / "one", "count", program="area", inputs=AREA_RUNS[:1])
    second = _runs(programs, tmp_path / "two", "count", program="area", inputs=AREA_RUNS[1:])
    assert _ours("textfmt", first, second) == _go_textfmt(first, second, output=tmp_path / "go.txt")


def test_counters_written_by_a_running_process_match_go(programs, tmp_path):
    coverdir = tmp_path / "snap"
    coverdir.mkdir()
    run(programs / "atomic" / "snapshot", coverdir, "7")
    counter_files = sorted(coverdir.glob("covcounters.*"))
    # Two WriteCountersDir calls of one process: same meta hash and pid, different times.
    assert len(counter_files) == 2
    assert len({name.name.rsplit(".", 1)[0] for name in counter_files}) == 1
    assert _ours("textfmt", coverdir) == _go_textfmt(coverdir, output=tmp_path / "go.txt")
    assert _ours("percent", coverdir) == _go_percent(coverdir)
    # The second file holds only what ran after ClearCounters: must() once, then Classify(-1)'s two blocks.
    only_second = tmp_path / "second"
    only_second.mkdir()
    shutil.copy(next(coverdir.glob("covmeta.*")), only_second)
    shutil.copy(counter_files[1], only_second)
    assert [line for line in _ours("textfmt", only_second).splitlines() if not line.endswith(" 0")] == [
        "mode: atomic",
        "example.com/shapes/cmd/snapshot/main.go:32.22,33.16 1 1",
        "example.com/shapes/geometry/geometry.go:29.29,30.9 1 1",
        "example.com/shapes/geometry/geometry.go:31.13,32.20 1 1",
    ]


def _split_counter_file(data: bytes) -> tuple[bytes, bytes, list[int]]:
    """A real one-segment ULEB128 counter file as (file header, segment preamble, record values)."""
    function_count, strings_length, args_length = struct.unpack_from("<QII", data, 32)
    preamble_end = 32 + 16 + strings_length + args_length
    preamble_end += -preamble_end % 4
    assert function_count > 0 and data[24] == 2
    return data[:32], data[32:preamble_end], decode_run(data, preamble_end, len(data) - 16)


def _footer(segments: int) -> bytes:
    return struct.pack("<4s4xI4x", b"\x00cwm", segments)


@pytest.mark.parametrize("big_endian", [False, True])
def test_raw_counter_flavor_reads_like_uleb128(programs, tmp_path, big_endian):
    coverdir = _runs(programs, tmp_path / "cov", "count", program="area", inputs=AREA_RUNS)
    expected = _ours("textfmt", coverdir)
    for path in coverdir.glob("covcounters.*"):
        header, preamble, values = _split_counter_file(path.read_bytes())
        # Flavor 1 is raw uint32s, byte 25 says big-endian.
        raw = struct.pack(f"{'>' if big_endian else '<'}{len(values)}I", *values)
        path.write_bytes(header[:24] + bytes([1, big_endian]) + header[26:] + preamble + raw + _footer(1))
    assert _ours("textfmt", coverdir) == expected
    # Go reads the re-encoded files the same way.
    assert _go_textfmt(coverdir, output=tmp_path / "go.txt") == expected


def test_every_segment_of_a_counter_file_is_read(programs, tmp_path):
    coverdir = _runs(programs, tmp_path / "cov", "count", program="area", inputs=AREA_RUNS[:2])
    expected = _ours("textfmt", coverdir)
    first, second = sorted(coverdir.glob("covcounters.*"))
    # Two segments in one file, each followed by a footer, as Go's encoder appends them.
    one, two = first.read_bytes(), second.read_bytes()
    first.write_bytes(one[:-16] + _footer(1) + two[32:-16] + _footer(2))
    second.unlink()
    assert _ours("textfmt", coverdir) == expected
    # Go's own reader stops after the first segment, so it sees less.
    assert _go_textfmt(coverdir, output=tmp_path / "go.txt") != expected


def test_counts_past_uint32_saturate_as_in_go(programs, tmp_path):
    coverdir = _runs(programs, tmp_path / "cov", "count", program="area", inputs=AREA_RUNS[:1])
    path = next(coverdir.glob("covcounters.*"))
    header, preamble, values = _split_counter_file(path.read_bytes())
    # Re-encode in the raw flavor with every counter near the top, then merge the file with itself.
    at, big = 0, []
    while at < len(values):
        size = values[at]
        big += values[at : at + 3] + [0xFFFFFFF0 if v else 0 for v in values[at + 3 : at + 3 + size]]
        at += 3 + size
    data = header[:24] + bytes([1, 0]) + header[26:] + preamble + struct.pack(f"<{len(big)}I", *big) + _footer(1)
    path.write_bytes(data)
    (coverdir / f"{path.name}0").write_bytes(data)
    expected = _go_textfmt(coverdir, output=tmp_path / "go.txt")
    assert _ours("textfmt", coverdir) == expected
    assert " 4294967295\n" in expected


def test_programs_of_different_modes_are_an_error(programs, tmp_path):
    coverdir = _runs(programs, tmp_path / "cov", "set", program="area", inputs=AREA_RUNS[:1])
    _runs(programs, coverdir, "count", program="words", inputs=WORDS_RUNS[:1])
    with pytest.raises(CoverageError, match=r"covmeta\.\w+: counter mode \w+ clashes with mode \w+"):
        read_covdata(coverdir)


@pytest.fixture(scope="module")
def sample(programs, tmp_path_factory) -> Path:
    """A read-only count-mode directory of two runs; tests that damage files copy it first."""
    return _runs(programs, tmp_path_factory.mktemp("sample") / "cov", "count", program="area", inputs=AREA_RUNS[:2])


@pytest.fixture
def damaged(sample, tmp_path) -> Path:
    return Path(shutil.copytree(sample, tmp_path / "cov"))


def _meta(directory: Path) -> Path:
    return next(directory.glob("covmeta.*"))


def _counters(directory: Path) -> Path:
    return sorted(directory.glob("covcounters.*"))[0]


def _edit(which, change):
    """A damage: rewrite the file `which(directory)` picks with `change(its bytes)`."""
    return lambda directory: (path := which(directory)).write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (_edit(_counters, lambda data: data[:-5]), r"covcounters\.\S+: no footer"),
        (_edit(_counters, lambda data: b"PK\x03\x04" + data[4:]), r"no \\0cwm magic"),
        (_edit(_meta, lambda data: data[:200]), r"covmeta\.\w+: truncated: 200 bytes of \d+"),
        (_edit(_meta, lambda data: b"\x00cvx" + data[4:]), r"not a Go coverage meta-data file"),
        # The records cut short but the footer kept: the file announces more functions than it holds.
        (
            _edit(_counters, lambda data: data[:-40] + _footer(1)),
            r"covcounters\.\S+: truncated: fewer function records than the \d+ announced",
        ),
        # A counter file of another build of the program (another meta hash) under this one's name.
        (
            _edit(_counters, lambda data: data[:8] + bytes(16) + data[24:]),
            r"covcounters\.\S+: written for meta-data 0{32}, not [0-9a-f]{32}",
        ),
    ],
)
def test_damaged_files_are_named(damaged, damage, message):
    damage(damaged)
    result = CliRunner().invoke(cli, ["cover", "textfmt", str(damaged)])
    assert result.exit_code == 1
    assert re.search(message, result.output), result.output
    with pytest.raises(CoverageError, match=message):
        read_covdata(damaged)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_damage_is_a_coverage_error_or_nothing(sample, data):
    """Truncated or flipped bytes anywhere in real files: a `CoverageError`, or a profile; never a crash."""
    meta = parse_meta(_meta(sample).read_bytes(), where="meta")
    for which in (_meta(sample), _counters(sample)):
        damaged = bytearray(which.read_bytes())
        if data.draw(st.booleans(), label="truncate"):
            del damaged[data.draw(st.integers(0, len(damaged) - 1), label="cut at") :]
        # Headers are where a flip does the most harm, so half the flips land in the first 64 bytes.
        anywhere = st.integers(0, len(damaged) - 1)
        for _ in range(data.draw(st.integers(0, 4), label="flips") if damaged else 0):
            at = data.draw(st.one_of(st.integers(0, min(63, len(damaged) - 1)), anywhere), label="at")
            damaged[at] = data.draw(st.integers(0, 255))
        try:
            if which.name.startswith("covmeta"):
                parse_meta(bytes(damaged), where="meta")
            else:
                parse_counters(bytes(damaged), meta, where="counters")
        except CoverageError:
            pass


def test_a_counter_file_without_its_meta_file_is_skipped_with_a_warning(sample, damaged, tmp_path):
    orphan = damaged / "covcounters.00ff.123.456"
    shutil.copy(_counters(damaged), orphan)
    result = CliRunner().invoke(cli, ["cover", "textfmt", str(damaged)])
    assert result.exit_code == 0
    assert result.stderr == f"warning: {orphan}: no covmeta.00ff beside it; skipped\n"
    assert result.stdout == _ours("textfmt", sample)


def test_a_directory_without_coverage_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not coverage")
    result = CliRunner().invoke(cli, ["cover", "percent", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path}: no covmeta.* file" in result.output


def test_textfmt_writes_no_file_when_reading_fails(tmp_path):
    result = CliRunner().invoke(cli, ["cover", "textfmt", str(tmp_path), "-o", str(tmp_path / "out.txt")])
    assert result.exit_code == 1
    assert not (tmp_path / "out.txt").exists()
