"""ULEB128 decoding (merge/cover/uleb128.py): round trips against a reference encoder, and truncated input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditcov.merge.cover.model import CoverageError
from auditcov.merge.cover.uleb128 import decode_one, decode_run


def encode(value: int, *, padding: int = 0) -> bytes:
    """The reference encoder (Go's AppendUleb128), optionally with `padding` redundant zero groups."""
    groups = [value & 0x7F]
    while value := value >> 7:
        groups.append(value & 0x7F)
    groups += [0] * padding
    return bytes([group | 0x80 for group in groups[:-1]] + groups[-1:])


# Small values dominate real files; large ones (uint64 counters, long lines) must still decode.
values = st.one_of(st.integers(0, 127), st.integers(128, 2**14), st.integers(0, 2**64 - 1))


@given(st.lists(values, max_size=300))
def test_decode_run_round_trips(numbers):
    assert decode_run(b"".join(encode(n) for n in numbers)) == numbers


@given(st.lists(values, max_size=50), st.binary(max_size=8), st.binary(max_size=8))
def test_decode_run_reads_only_its_range(numbers, before, after):
    encoded = b"".join(encode(n) for n in numbers)
    data = before + encoded + after
    assert decode_run(data, len(before), len(before) + len(encoded)) == numbers


@given(st.lists(st.tuples(values, st.integers(0, 3)), max_size=50))
def test_redundant_groups_decode_to_the_same_value(numbers_and_padding):
    data = b"".join(encode(n, padding=p) for n, p in numbers_and_padding)
    assert decode_run(data) == [n for n, _ in numbers_and_padding]


@given(st.lists(values, min_size=1, max_size=50))
def test_decode_one_walks_the_same_values(numbers):
    data = b"".join(encode(n) for n in numbers)
    offset, seen = 0, []
    while offset < len(data):
        value, offset = decode_one(data, offset)
        seen.append(value)
    assert seen == numbers
    assert offset == len(data)


def test_known_encodings():
    # From the LEB128 definition: 624485 is E5 8E 26.
    assert decode_run(bytes([0xE5, 0x8E, 0x26, 0x00, 0x7F, 0x80, 0x01])) == [624485, 0, 127, 128]
    assert encode(624485) == bytes([0xE5, 0x8E, 0x26])


@pytest.mark.parametrize("data", [b"\x80", b"\x05\xff\xff"])
def test_a_value_cut_short_is_an_error(data):
    with pytest.raises(CoverageError, match="ends inside a value"):
        decode_run(data, where="covcounters.x")
    with pytest.raises(CoverageError, match="ends inside a value"):
        offset = 0
        while True:
            _, offset = decode_one(data, offset)
