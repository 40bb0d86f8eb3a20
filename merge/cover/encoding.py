"""The byte encodings of stored coverage: a snapshot's counters and a layout's blocks (no store, no SQLite:
merge/cover/snapshots.py reads and writes the blobs these functions make).

A layout is the sorted, distinct blocks of one program with their statement counts; a snapshot's counters are
one count per block of its layout, in the same order. Snapshots of one binary share one layout, so a delta
between two of them is found by comparing their counter arrays (`changed_counts`, in numpy).

The layouts of the bytes are private to this module: callers pass and get blocks, `Layout`s, `Counters` and
lists of counts, and use its functions. They are:

- Counters (`pack_counters`): one typecode byte, `I` (uint32) or `Q` (uint64, when a count does not fit in 32
  bits), then the counts as a little-endian array of that type, zlib-compressed at level 1 (a kube-apiserver's
  330,000 counts are 1.3 MB packed, 150 KB compressed, and decompress in a few milliseconds; its msgpack list
  was 320 KB and took 14 ms to unpack). The first encoding, a msgpack list of integers (first byte 0x90-0x9f,
  0xdc or 0xdd, never a typecode), is still read.
- Layouts (`encode_blocks`): msgpack `[files, columns, "zlib"]`, `files` the sorted file names and `columns`
  six zlib-compressed (level 1) little-endian uint32 arrays, one entry per block: file index, start line, start
  column, end line, end column, statements. A kube-apiserver's layout (6 x 330,000 numbers, 7.9 MB as arrays)
  is then 440 KB, which SQLite reads in a millisecond where the 7.9 MB took 10-35 ms. The earlier encodings,
  `[files, columns]` with the columns as msgpack lists of integers or as uncompressed arrays, are still read.
- A layout's hash is the SHA-256 (hex) of msgpack `[files, columns]` with the columns as lists of integers (the
  first encoding), so one program's layout has one hash whatever its encoding.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

import msgpack
import numpy as np

from auditcov.merge.cover.model import Block, CoverageError, Profile

#: The first byte of a counter blob of the packed encoding: the array typecode of its counts. msgpack, the first
#: encoding, starts a list with 0x90-0x9f, 0xdc or 0xdd, never these.
_PACKED_TYPECODES = (b"I", b"Q")
#: The numpy type of a counter array's elements, by its typecode.
_COUNT_DTYPES = {"I": np.dtype("<u4"), "Q": np.dtype("<u8")}


@dataclass(frozen=True, slots=True)
class Layout:
    """The blocks of a layout in stored order; `block(i)` builds one on demand (layouts can hold 10^6)."""

    files: list[str]
    #: Six columns, one entry per block: file index, start line, start col, end line, end col, statements.
    columns: list[Sequence[int]]

    def block(self, index: int) -> Block:
        file, start_line, start_col, end_line, end_col, _ = (column[index] for column in self.columns)
        return Block(self.files[file], start_line, start_col, end_line, end_col)

    def blocks(self, indexes: list[int]) -> list[Block]:
        """`block(i)` for each of `indexes`, in bulk (a test's delta can touch 10^4 blocks)."""
        if not indexes:
            return []
        pick = itemgetter(*indexes) if len(indexes) > 1 else lambda column: (column[indexes[0]],)
        files, *positions = (pick(column) for column in self.columns[:5])
        return list(map(Block, map(self.files.__getitem__, files), *positions))

    def statements(self, index: int) -> int:
        return self.columns[5][index]

    def column_array(self, number: int) -> np.ndarray:
        """Column `number` (as in `columns`) as a numpy uint32 array over the same memory (no copy)."""
        return np.frombuffer(self.columns[number], dtype=np.uint32)


def encode_layout(profile: Profile) -> tuple[list[Block], str, bytes]:
    """The sorted blocks of `profile`, and the hash and blob of their layout (`encode_blocks`)."""
    blocks = sorted(profile.statements)
    return blocks, *encode_blocks(blocks, list(map(profile.statements.__getitem__, blocks)))


def encode_blocks(blocks: list[Block], statements: list[int]) -> tuple[str, bytes]:
    """The hash and the blob of the layout of sorted, distinct `blocks` with their statement counts."""
    file_of = itemgetter(0)
    files = sorted(set(map(file_of, blocks)))
    index = {file: number for number, file in enumerate(files)}
    # Column by column, with map/itemgetter running in C: several times faster than a list per block.
    columns = [
        list(map(index.__getitem__, map(file_of, blocks))),
        *(list(map(itemgetter(field), blocks)) for field in range(1, 5)),
        statements,
    ]
    layout_hash = hashlib.sha256(msgpack.packb([files, columns])).hexdigest()
    try:
        arrays = [array("I", column) for column in columns]
    except OverflowError:
        raise CoverageError("a block's line, column or statement count is beyond 4294967295") from None
    if sys.byteorder == "big":
        for column in arrays:
            column.byteswap()
    return layout_hash, msgpack.packb([files, [zlib.compress(column.tobytes(), 1) for column in arrays], "zlib"])


def decode_layout(blob: bytes) -> Layout:
    """The layout of a blob of any of its encodings."""
    files, columns, *compression = msgpack.unpackb(blob)
    return Layout(files, _decode_columns(columns, compression[0] if compression else None))


def _decode_columns(columns: list, compression: str | None) -> list:
    if not columns or not isinstance(columns[0], bytes):
        # The first encoding's lists of integers, as arrays like the others' (`column_array` reads their memory).
        try:
            return [array("I", column) for column in columns]
        except OverflowError:
            raise CoverageError("a layout's line, column or statement count is beyond 4294967295") from None
    if compression == "zlib":
        columns = list(map(zlib.decompress, columns))
    if sys.byteorder == "little":
        return [memoryview(column).cast("I") for column in columns]  # no copy: 7.9 MB at kube-apiserver size
    arrays = [array("I", column) for column in columns]
    for column in arrays:
        column.byteswap()
    return arrays


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot's counters with the mode and layout they belong to, as a little-endian array's bytes."""

    mode: str
    layout: str
    typecode: str  # of the array: "I" (uint32) or "Q" (uint64)
    packed: bytes

    @property
    def counts(self) -> list[int]:
        """The counts, one per block of the layout (`changed_counts` compares two without making these lists)."""
        return _as_array(self.typecode, self.packed).tolist()


def _little_endian(counts: Sequence[int]) -> tuple[str, bytes]:
    """`counts` as the bytes of a little-endian array of uint32 if that holds them all, else of uint64, with
    that typecode."""
    for typecode in "IQ":
        try:
            packed = array(typecode, counts)
        except OverflowError:
            continue
        if sys.byteorder == "big":
            packed.byteswap()
        return typecode, packed.tobytes()
    raise CoverageError("a counter is negative or beyond 2**64 - 1")


def _as_array(typecode: str, data: bytes) -> array:
    """The counts of little-endian array bytes."""
    counts = array(typecode, data)
    if sys.byteorder == "big":
        counts.byteswap()
    return counts


def pack_counters(counts: Sequence[int]) -> bytes:
    """The blob of a snapshot's counters, one per block of its layout."""
    typecode, data = _little_endian(counts)
    return typecode.encode() + zlib.compress(data, 1)


def unpack_counters(blob: bytes, *, mode: str, layout: str) -> Counters:
    """The counters of a blob of either encoding, belonging to `mode` and the layout hashed `layout`."""
    if blob[:1] in _PACKED_TYPECODES:
        return Counters(mode, layout, blob[:1].decode(), zlib.decompress(memoryview(blob)[1:]))
    return Counters(mode, layout, *_little_endian(msgpack.unpackb(blob)))


def changed_counts(before: Counters, after: Counters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blocks whose counts differ between two aligned counter arrays: their indexes, ascending, and their
    counts before and after, as numpy arrays (a kube-apiserver build has 3 * 10^5 blocks, a test changes a few
    thousand: compared element by element in numpy, not in Python)."""
    old, new = (np.frombuffer(c.packed, dtype=_COUNT_DTYPES[c.typecode]) for c in (before, after))
    if len(old) != len(new):
        raise CoverageError(f"counter lists of {len(old)} and {len(new)} blocks cannot be compared")
    if old.dtype != new.dtype:  # a count beyond uint32 in one of them: compare both as uint64
        old, new = old.astype("<u8"), new.astype("<u8")
    indexes = np.flatnonzero(old != new)
    return indexes, old[indexes], new[indexes]
