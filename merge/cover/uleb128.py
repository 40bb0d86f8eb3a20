"""Decoding unsigned LEB128 integers, the variable-length encoding of Go's binary coverage files.

Each byte carries 7 bits of the value, least significant group first; a byte with its high bit set says another
byte follows. Go writes the shortest encoding, but any encoding decodes to its value here.

Coverage files hold long runs of such numbers (positions, statement counts, counters), and most are below 128,
so `decode_run` decodes a whole byte range at once: runs of one-byte values are copied in C, and only the
longer values go through Python, through a memo of their encodings (the same line numbers recur).
"""

from __future__ import annotations

import re
from itertools import chain

from auditcov.merge.cover.model import CoverageError

# A value longer than one byte: continuation bytes, then the final one. Captured so `split` keeps it.
_MULTI_BYTE = re.compile(rb"([\x80-\xff]+[\x00-\x7f])")


class _Memo(dict[bytes, tuple[int]]):
    """Encoding -> (value,), filled on first sight; only two-byte encodings are kept, so it stays small."""

    def __missing__(self, encoded: bytes) -> tuple[int]:
        value = 0
        for shift, byte in enumerate(encoded):
            value |= (byte & 0x7F) << (7 * shift)
        if len(encoded) == 2:
            self[encoded] = (value,)
        return (value,)


_values = _Memo()


def decode_run(data: bytes | memoryview, start: int = 0, end: int | None = None, *, where: str = "") -> list[int]:
    """Every value encoded in `data[start:end]`, which must end at the end of a value."""
    chunk = bytes(data[start:end])
    if chunk and chunk[-1] & 0x80:
        raise CoverageError(f"{where or 'ULEB128 data'}: ends inside a value at byte {start + len(chunk)}")
    # `split` alternates runs of one-byte values with single multi-byte values: run, multi, run, ..., run.
    # Each multi becomes a 1-tuple; then every part iterates to its values, and `chain` flattens them in C.
    parts = _MULTI_BYTE.split(chunk)
    parts[1::2] = map(_values.__getitem__, parts[1::2])
    return list(chain.from_iterable(parts))


def decode_one(data: bytes | memoryview, offset: int, *, where: str = "") -> tuple[int, int]:
    """The value at `offset` and the offset just past it."""
    value = shift = 0
    position = offset
    try:
        while True:
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, position
            shift += 7
    except IndexError:
        raise CoverageError(f"{where or 'ULEB128 data'}: ends inside a value at byte {offset}") from None
