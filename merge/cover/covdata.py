"""Reading Go's binary coverage directories (`go build -cover`, `GOCOVERDIR`) in pure Python, without Go.

A directory holds one `covmeta.<hash>` per program (what can be covered: packages, functions, their blocks) and
any number of `covcounters.<hash>.<pid>.<nanotime>` (one per process exit or `runtime/coverage.WriteCountersDir`
call: the counters of the functions that ran). The layout is Go's `internal/coverage` (defs.go); in short, all
integers little-endian:

- meta file: header `magic "\\0cvm", version, total length, package count, hash[16], string table offset and
  length, counter mode, granularity`, then package offsets and lengths (uint64 each), then per package a blob:
  header `length, name, path, module (string indexes), hash[16], file count, function count`, function offsets
  (uint32), a string table (ULEB128 count, then ULEB128 length + bytes each), then per function ULEB128s:
  `unit count, name, file, then per unit start line, start column, end line, end column, statements, then
  literal flag`.
- counter file: header `magic "\\0cwm", version, meta hash[16], flavor (1 raw uint32, 2 ULEB128), big endian`,
  then segments, each `function count (uint64), string table length, args length`, the two tables (padded to 4
  bytes), the function records `counter count, package index, function index, counters...`, and a footer
  `magic, segment count`.

Decisions, where Go's tools leave a choice:
- Counters are merged as `go tool covdata` merges them: OR in set mode, saturating uint32 sums otherwise.
  Programs (meta files) are combined by the model's rules (`Profile.add`), so a package in two programs counts
  once (its counts add without Go's uint32 cap there), and two programs of different counter modes are an
  error, as in `go tool covdata textfmt` (its `percent` accepts them).
- Every segment of a counter file is read (Go's reader reads the first; Go writes only one).
- A counter file whose meta file is absent is skipped and reported through `warn` (Go skips it silently);
  anything inconsistent (bad magic, truncation, a counter for a function the meta file does not have, a
  counter count that differs from the function's blocks) is a `CoverageError` naming the file.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import NamedTuple

from auditcov.merge.cover.model import Block, CoverageError, Profile, gc_paused
from auditcov.merge.cover.uleb128 import decode_one, decode_run

META_MAGIC = b"\x00cvm"
COUNTER_MAGIC = b"\x00cwm"
SUPPORTED_VERSION = 1
COUNTER_MODES = {1: "set", 2: "count", 3: "atomic"}
PER_BLOCK_GRANULARITY = 1
FLAVOR_RAW, FLAVOR_ULEB128 = 1, 2
_UINT32_MAX = 0xFFFFFFFF

_META_HEADER = struct.Struct("<4sIQQ16sIIBB6x")
_PACKAGE_HEADER = struct.Struct("<IIII16sx3xII")
_COUNTER_HEADER = struct.Struct("<4sI16sB?6x")
_SEGMENT_HEADER = struct.Struct("<QII")
_FOOTER = struct.Struct("<4s4xI4x")

_META_NAME = re.compile(r"covmeta\.(\S+)")
_COUNTER_NAME = re.compile(r"covcounters\.(\S+)\.(\d+)\.(\d+)")


class Function(NamedTuple):
    """One instrumented function; its blocks are `MetaFile.units[5 * first_block :]`, `block_count` of them."""

    name: str
    file: str
    first_block: int
    block_count: int


@dataclass(frozen=True, slots=True)
class Package:
    path: str
    name: str
    module: str
    functions: list[Function]
    files: list[str]


@dataclass(frozen=True, slots=True)
class MetaFile:
    """What one program can cover. Its blocks are kept flat, in file order, for speed (10^4-10^6 of them)."""

    hash: bytes
    mode: str
    packages: list[Package]
    #: start line, start column, end line, end column, statements; then the next block.
    units: list[int]
    #: the source file of each block.
    block_files: list[str]


#: (package index, function index) -> counters, one per block of that function.
Counters = dict[tuple[int, int], list[int]]
Warn = Callable[[str], None]


def read_covdata(dirs: str | Path | Iterable[str | Path], *, warn: Warn | None = None) -> Profile:
    """Every program's coverage in the directories, merged into one profile (see the module docstring)."""
    with gc_paused():
        return _read_covdata(_as_paths(dirs), warn)


def _read_covdata(dirs: list[Path], warn: Warn | None) -> Profile:
    profile: Profile | None = None
    for meta_path, counter_paths in _collect(dirs, warn):
        meta = parse_meta(meta_path.read_bytes(), where=str(meta_path))
        if profile is None:
            profile = Profile(meta.mode)
        elif profile.mode != meta.mode:
            raise CoverageError(
                f"{meta_path}: counter mode {meta.mode} clashes with mode {profile.mode} of the programs before it"
            )
        counters: Counters = {}
        for counter_path in counter_paths:
            more = parse_counters(counter_path.read_bytes(), meta, where=str(counter_path))
            merge_counters(counters, more, meta.mode)
        add_to_profile(profile, meta, counters, where=str(meta_path))
    assert profile is not None  # _collect raises when there is no meta file
    return profile


def _as_paths(dirs: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(dirs, str | Path):
        return [Path(dirs)]
    return [Path(d) for d in dirs]


def _collect(dirs: list[Path], warn: Warn | None) -> list[tuple[Path, list[Path]]]:
    """Each meta file (the first of a hash wins, by directory order) with its counter files, sorted by name."""
    metas: dict[str, Path] = {}
    counters: list[tuple[str, Path]] = []
    for directory in dirs:
        if not directory.is_dir():
            raise CoverageError(f"{directory}: not a directory")
        for path in sorted(directory.iterdir()):
            if match := _META_NAME.fullmatch(path.name):
                metas.setdefault(match[1], path)
            elif match := _COUNTER_NAME.fullmatch(path.name):
                counters.append((match[1], path))
    if not metas:
        names = ", ".join(str(d) for d in dirs)
        raise CoverageError(f"{names}: no covmeta.* file (is this a GOCOVERDIR of a `go build -cover` program?)")
    pods: dict[str, list[Path]] = {tag: [] for tag in metas}
    for tag, path in counters:
        if tag in pods:
            pods[tag].append(path)
        elif warn is not None:
            warn(f"{path}: no covmeta.{tag} beside it; skipped")
    return sorted(((metas[tag], paths) for tag, paths in pods.items()), key=lambda pod: pod[0].name)


def parse_meta(data: bytes, *, where: str) -> MetaFile:
    """Decode a `covmeta.*` file."""
    if len(data) < _META_HEADER.size or data[:4] != META_MAGIC:
        raise CoverageError(f"{where}: not a Go coverage meta-data file (no \\0cvm magic)")
    _, version, total_length, count, file_hash, _, _, mode, granularity = _META_HEADER.unpack_from(data)
    if version > SUPPORTED_VERSION:
        raise CoverageError(f"{where}: meta-data file version {version}; this reader knows {SUPPORTED_VERSION}")
    if total_length > len(data):
        raise CoverageError(f"{where}: truncated: {len(data)} bytes of {total_length}")
    if mode not in COUNTER_MODES:
        raise CoverageError(f"{where}: unknown counter mode {mode}")
    if _META_HEADER.size + 16 * count > total_length:
        raise CoverageError(f"{where}: {count} packages do not fit in the file")
    if granularity != PER_BLOCK_GRANULARITY:
        raise CoverageError(f"{where}: counter granularity {granularity} is not per-block, which this reader needs")
    tables = struct.unpack_from(f"<{2 * count}Q", data, _META_HEADER.size)
    meta = MetaFile(file_hash, COUNTER_MODES[mode], [], [], [])
    for index, (offset, length) in enumerate(zip(tables[:count], tables[count:], strict=True)):
        if offset + length > total_length:
            raise CoverageError(f"{where}: package {index} lies outside the file")
        meta.packages.append(_parse_package(data, offset, length, meta, where=f"{where}: package {index}"))
    return meta


def _parse_package(data: bytes, base: int, length: int, meta: MetaFile, *, where: str) -> Package:
    """Decode one package blob, appending its blocks to `meta.units` and `meta.block_files`."""
    end = base + length
    if length < _PACKAGE_HEADER.size:
        raise CoverageError(f"{where}: {length} bytes, too short for a package")
    _, name_at, path_at, module_at, _, _, function_count = _PACKAGE_HEADER.unpack_from(data, base)
    offsets_at = base + _PACKAGE_HEADER.size
    if offsets_at + 4 * function_count > end:
        raise CoverageError(f"{where}: {function_count} functions do not fit in the package")
    function_offsets = struct.unpack_from(f"<{function_count}I", data, offsets_at)
    strings, strings_end = _parse_strings(data, offsets_at + 4 * function_count, end, where=where)
    try:
        path, name, module = strings[path_at], strings[name_at], strings[module_at]
    except IndexError:
        raise CoverageError(f"{where}: package name refers past the string table") from None
    if not function_count:
        return Package(path, name, module, [], [])
    # Go writes the functions back to back after the string table: decode them in one run, then walk it.
    if base + function_offsets[0] != strings_end:
        raise CoverageError(f"{where}: first function at {function_offsets[0]}, not after the string table")
    values = decode_run(data, strings_end, end, where=where)
    functions = []
    units, block_files = meta.units, meta.block_files
    at = 0
    try:
        for _ in range(function_count):
            size, file = values[at], strings[values[at + 2]]
            functions.append(Function(strings[values[at + 1]], file, len(block_files), size))
            units_end = at + 3 + 5 * size
            units += values[at + 3 : units_end]
            block_files += repeat(file, size)
            at = units_end + 1  # past the literal flag
    except IndexError:
        raise CoverageError(f"{where}: function {len(functions)} runs past the package or its string table") from None
    if at != len(values) or len(units) != 5 * len(block_files):
        raise CoverageError(f"{where}: the functions do not fill the package ({len(values) - at} values left)")
    return Package(path, name, module, functions, list(dict.fromkeys(f.file for f in functions)))


def _parse_strings(data: bytes, offset: int, end: int, *, where: str) -> tuple[list[str], int]:
    count, offset = decode_one(data, offset, where=where)
    strings = []
    for _ in range(count):
        size, offset = decode_one(data, offset, where=where)
        if offset + size > end:
            raise CoverageError(f"{where}: string table runs past the end")
        strings.append(data[offset : offset + size].decode("utf-8", "surrogateescape"))
        offset += size
    return strings, offset


def parse_counters(data: bytes, meta: MetaFile, *, where: str) -> Counters:
    """Decode a `covcounters.*` file (or `runtime/coverage.WriteCounters` output) written for `meta`."""
    if len(data) < _COUNTER_HEADER.size + _FOOTER.size or data[:4] != COUNTER_MAGIC:
        raise CoverageError(f"{where}: not a Go coverage counter file (no \\0cwm magic)")
    _, version, meta_hash, flavor, big_endian = _COUNTER_HEADER.unpack_from(data)
    if version > SUPPORTED_VERSION:
        raise CoverageError(f"{where}: counter file version {version}; this reader knows {SUPPORTED_VERSION}")
    if meta_hash != meta.hash:
        raise CoverageError(f"{where}: written for meta-data {meta_hash.hex()}, not {meta.hash.hex()}")
    if flavor not in (FLAVOR_RAW, FLAVOR_ULEB128):
        raise CoverageError(f"{where}: unknown counter flavor {flavor}")
    footer_at = len(data) - _FOOTER.size
    magic, segment_count = _FOOTER.unpack_from(data, footer_at)
    if magic != COUNTER_MAGIC or not segment_count:
        raise CoverageError(f"{where}: no footer (truncated file?)")
    counters: Counters = {}
    offset = _COUNTER_HEADER.size
    for segment in range(segment_count):
        if offset + _SEGMENT_HEADER.size > footer_at:
            raise CoverageError(f"{where}: segment {segment} of {segment_count} is missing")
        function_count, strings_length, args_length = _SEGMENT_HEADER.unpack_from(data, offset)
        # Records start on a 4-byte boundary of the segment (Go's writer pads the args table; for the first
        # segment this is also the file's boundary, which is where Go's reader looks).
        preamble = _SEGMENT_HEADER.size + strings_length + args_length
        offset += preamble + -preamble % 4
        if offset > footer_at:
            raise CoverageError(f"{where}: segment {segment}'s tables run past the end of the file")
        if flavor == FLAVOR_RAW:
            values = list(struct.unpack_from(f"{'>' if big_endian else '<'}{(footer_at - offset) // 4}I", data, offset))
        else:
            values = decode_run(data, offset, footer_at, where=where)
        used = _walk_records(values, function_count, meta, counters, where=where)
        # Later segments follow this one's footer; only a multi-segment file needs to know where it ends.
        if segment + 1 < segment_count:
            offset = _skip(data, offset, used, flavor, where=where) + _FOOTER.size
    return counters


def _walk_records(values: list[int], function_count: int, meta: MetaFile, counters: Counters, *, where: str) -> int:
    """Merge `function_count` records from the start of `values` into `counters`; returns the values used."""
    at = 0
    for _ in range(function_count):
        if at + 3 > len(values) or at + 3 + values[at] > len(values):
            raise CoverageError(f"{where}: truncated: fewer function records than the {function_count} announced")
        size, package, function = values[at], values[at + 1], values[at + 2]
        at += 3
        ran = values[at : at + size]
        at += size
        try:
            blocks = meta.packages[package].functions[function].block_count
        except IndexError:
            raise CoverageError(
                f"{where}: counters for package {package} function {function}, which the meta-data does not have"
            ) from None
        if size != blocks:
            raise CoverageError(
                f"{where}: package {package} function {function} has {size} counters for {blocks} blocks"
            )
        _merge_one(counters, (package, function), ran, meta.mode)
    return at


def _skip(data: bytes, offset: int, count: int, flavor: int, *, where: str) -> int:
    if flavor == FLAVOR_RAW:
        return offset + 4 * count
    for _ in range(count):
        _, offset = decode_one(data, offset, where=where)
    return offset


def merge_counters(into: Counters, more: Counters, mode: str) -> None:
    """Add `more` into `into` by Go's rules: OR in set mode, saturating uint32 sums otherwise."""
    for key, values in more.items():
        _merge_one(into, key, values, mode)


def _merge_one(into: Counters, key: tuple[int, int], values: list[int], mode: str) -> None:
    known = into.get(key)
    if known is None:
        into[key] = [1 if v else 0 for v in values] if mode == "set" else values
    elif mode == "set":
        into[key] = [1 if (a or b) else 0 for a, b in zip(known, values, strict=True)]
    else:
        into[key] = [min(a + b, _UINT32_MAX) for a, b in zip(known, values, strict=True)]


def add_to_profile(profile: Profile, meta: MetaFile, counters: Counters, *, where: str) -> None:
    """Add every block of `meta` to `profile`, with its count from `counters` (0 for functions that never ran)."""
    counts = [0] * len(meta.block_files)
    for (package, function), ran in counters.items():
        first = meta.packages[package].functions[function].first_block
        counts[first : first + len(ran)] = ran
    for package in meta.packages:
        profile.packages.update(dict.fromkeys(package.files, package.path))
    units = meta.units
    blocks = list(map(Block, meta.block_files, units[0::5], units[1::5], units[2::5], units[3::5]))
    profile.add_all(blocks, units[4::5], counts, where=where)
