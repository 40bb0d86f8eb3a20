"""Go text profiles (merge/cover/gotext.py): the real profiles in fixtures/gocover parse and merge exactly as Go's
own parser merges them (tests/goprograms/textoracle), the writer and reader round-trip, and bad input is named.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from gotool import GOPROGRAMS, goroot, run
from hypothesis import given
from hypothesis import strategies as st

from auditcov.merge.cover.gotext import parse_text, read_text_profiles, write_text
from auditcov.merge.cover.model import Block, CoverageError, Profile
from auditcov.merge.cover.percent import format_percent, package_coverage

GOCOVER = Path(__file__).parent / "fixtures" / "gocover"
SET = GOCOVER / "blocky-set.out"
ATOMIC = GOCOVER / "pbft-consensus-atomic.out"
COUNT1, COUNT2 = GOCOVER / "gocoverutil-package1-count.out", GOCOVER / "gocoverutil-package2-count.out"
TINY = GOCOVER / "golang-cmd-cover-profile.cov"


def _text(profile: Profile) -> str:
    out = io.StringIO()
    write_text(profile, out)
    return out.getvalue()


def _derived(source: Path, directory: Path, change) -> Path:
    """A copy of a real profile with `change(index, fields)` applied to each block line's fields."""
    mode, *lines = source.read_text().splitlines()
    changed = [" ".join(change(i, line.split(" "))) for i, line in enumerate(lines)]
    path = directory / f"derived-{source.name}"
    path.write_text("\n".join([mode, *changed]) + "\n")
    return path


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Path:
    """tests/goprograms/textoracle built with Go's vendored golang.org/x/tools/cover."""
    source = tmp_path_factory.mktemp("textoracle") / "src"
    shutil.copytree(GOPROGRAMS / "textoracle", source)
    (source / "cover").mkdir()
    shutil.copy(goroot() / "src/cmd/vendor/golang.org/x/tools/cover/profile.go", source / "cover")
    run("go", "build", "-o", source.parent / "textoracle", ".", cwd=source)
    return source.parent / "textoracle"


def _sorted_lines(text: str) -> list[str]:
    mode, *blocks = text.splitlines()
    return [mode, *sorted(blocks)]


@pytest.mark.go
@pytest.mark.parametrize(
    "names",
    [
        ["blocky-set.out"],
        ["pbft-consensus-atomic.out"],
        ["golang-cmd-cover-profile.cov"],
        ["gocoverutil-package1-count.out", "gocoverutil-package2-count.out"],
        ["blocky-set.out", "blocky-set.out"],
        ["pbft-consensus-atomic.out", "pbft-consensus-atomic.out", "pbft-consensus-atomic.out"],
    ],
)
def test_fixtures_merge_as_go_merges_them(oracle, names):
    paths = [GOCOVER / name for name in names]
    assert _sorted_lines(_text(read_text_profiles(paths))) == _sorted_lines(run(oracle, *paths))


@pytest.mark.go
def test_set_mode_ors_and_count_modes_add(oracle, tmp_path):
    # Every third block flipped between 0 and 1 (set), every block's count changed (atomic): real overlaps.
    flipped = _derived(SET, tmp_path, lambda i, f: [*f[:2], str(1 - int(f[2])) if i % 3 == 0 else f[2]])
    scaled = _derived(ATOMIC, tmp_path, lambda i, f: [*f[:2], str(int(f[2]) * 7 + i)])
    for paths in ([SET, flipped], [ATOMIC, scaled]):
        merged = read_text_profiles(paths)
        assert _sorted_lines(_text(merged)) == _sorted_lines(run(oracle, *paths))
    merged_set = read_text_profiles([SET, flipped])
    assert set(merged_set.counts.values()) == {0, 1}


@pytest.mark.go
def test_same_block_with_another_statement_count_is_an_error(oracle, tmp_path):
    changed = _derived(COUNT2, tmp_path, lambda i, f: [f[0], str(int(f[1]) + 1) if i == 4 else f[1], f[2]])
    with pytest.raises(AssertionError, match="inconsistent NumStmt"):
        run(oracle, COUNT2, changed)
    with pytest.raises(CoverageError, match=r"derived-gocoverutil-package2-count.out:6: block 18.17,19.36 has 2 "):
        read_text_profiles([COUNT2, changed])


def test_repeated_mode_lines_of_concatenated_profiles_are_accepted():
    concatenated = COUNT1.read_text() + COUNT2.read_text() + COUNT1.read_text()
    assert parse_text(concatenated, where="cat").counts == read_text_profiles([COUNT1, COUNT2, COUNT1]).counts
    doubled = read_text_profiles([COUNT1, COUNT1])
    assert doubled.counts[Block("github.com/AlekSi/gocoverutil/internal/test/package1/file1.go", 3, 20, 5, 2)] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: count\na.go:1.1,2.2 1 1\nmode: set\n", r"x.out:3: `mode: set` conflicts with `mode: count` above"),
        ("mode: sometimes\n", r"x.out:1: unknown mode 'sometimes'"),
        ("a.go:1.1,2.2 1 1\n", r"x.out:1: the first line must be `mode: set\|count\|atomic`"),
        ("", r"x.out:1: the first line must be"),
        ("mode: set\na.go:1.1,2.2 1 1\n\na.go:3.1,4.2 1 0\n", r"x.out:3: not `file:line.col,line.col"),
        ("mode: set\na.go:1.1,2.2 1 -1\n", r"x.out:2: not `file:line.col,line.col statements count`: 'a.go:1.1"),
        ("mode: set\n:1.1,2.2 1 1\n", r"x.out:2: not"),
    ],
)
def test_bad_profiles_name_the_line(text, message):
    with pytest.raises(CoverageError, match=message):
        parse_text(text, where="x.out")


def test_a_binary_file_is_not_a_profile(tmp_path):
    covmeta = tmp_path / "covmeta.0a"
    covmeta.write_bytes(b"\x00cvm\x01\x00\x00\x00\xff\xfe")
    with pytest.raises(CoverageError, match=r"covmeta.0a: not UTF-8 text \(byte 8\): not a Go text profile"):
        read_text_profiles([covmeta])


def test_files_of_different_modes_do_not_merge():
    with pytest.raises(CoverageError, match=r"blocky-set.out: mode set cannot be merged into a profile of mode count"):
        read_text_profiles([COUNT1, SET])


def test_file_names_keep_their_colons_and_line_ends_may_be_crlf():
    profile = parse_text("mode: count\r\nC:\\src\\a.go:1.2,3.4 5 6\r\n", where="windows.out")
    assert profile.counts == {Block("C:\\src\\a.go", 1, 2, 3, 4): 6}
    assert profile.statements == {Block("C:\\src\\a.go", 1, 2, 3, 4): 5}


def test_fixtures_parse_into_their_blocks():
    profile = read_text_profiles([SET])
    assert profile.mode == "set"
    assert len(profile.statements) == 3947
    assert len({block.file for block in profile.statements}) == 118
    tiny = read_text_profiles([TINY])
    assert tiny.statements[Block("./testdata/p.go", 10, 10, 12, 2)] == 0
    assert tiny.lines() == {"./testdata/p.go": {25, 26, 27}}


def test_percent_of_a_text_profile_uses_the_file_directories():
    # Hand-checked: package2's blocks hold 11 statements, of which the 2 single-statement blocks counted 0 missed.
    rows = package_coverage(read_text_profiles([COUNT1, COUNT2]))
    base = "github.com/AlekSi/gocoverutil/internal/test"
    assert [(r.package, r.covered, r.total) for r in rows] == [(f"{base}/package1", 2, 3), (f"{base}/package2", 9, 11)]
    assert format_percent(rows) == (
        f"\t{base}/package1\t\tcoverage: 66.7% of statements\n\t{base}/package2\t\tcoverage: 81.8% of statements\n"
    )


# File names as Go writes them: no line ends; anything else, colons and spaces included.
file_names = st.text(st.characters(exclude_characters="\n\r", exclude_categories=("Cs",)), min_size=1, max_size=20)
numbers = st.integers(0, 10**6)
blocks = st.builds(Block, file_names, numbers, numbers, numbers, numbers)


@given(st.sampled_from(["set", "count", "atomic"]), st.dictionaries(blocks, st.tuples(numbers, numbers), max_size=40))
def test_written_profiles_read_back_the_same(mode, spans):
    profile = Profile(mode)
    for block, (statements, count) in spans.items():
        profile.add(block, statements, min(count, 1) if mode == "set" else count)
    again = parse_text(_text(profile), where="round trip")
    assert (again.mode, again.statements, again.counts) == (profile.mode, profile.statements, profile.counts)
