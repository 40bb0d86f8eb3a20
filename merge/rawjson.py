"""Where the values inside a JSON array or object lie in its bytes, found without decoding it.

A batch that a full decode refuses (one item with invalid UTF-8, nested deeper than the decoder goes, or not
JSON at all) is still split into its items here, so that each item is decoded, stored or quarantined on its own,
byte for byte. The scan only tells strings, brackets, commas and colons apart (a regular expression skips whole
strings, escapes included), keeps a stack of open brackets instead of recursing, so any depth is fine, and never
builds a value. What lies between the separators is left for the caller to decode.

    children(data, start) -> (list of Child, end)   the elements of the array, or the members of the object, that
                                                    opens at data[start]; `end` is just past its closing bracket.

A child's `key` is the raw key of an object member (None for array elements), its value spans
`data[start:end]` with surrounding whitespace left out, and `depth` is how deeply the value nests (0 for a
scalar, 1 for `[]` or `{"a": 1}`), with `deepest` the offset where it first reached that depth. Broken structure
(a closing bracket of the wrong kind or none, an unterminated string, a member without a colon) raises
`JSONShapeError` with the byte offset.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# A whole string (any escapes, possessive so a long string is one step), a structural byte, or a quote that opens
# a string which never ends.
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[][{},:]|"', re.DOTALL)
_OPEN = {ord("["): ord("]"), ord("{"): ord("}")}
_CLOSE = frozenset(_OPEN.values())
_QUOTE, _COMMA, _COLON = ord('"'), ord(","), ord(":")
_WHITESPACE = b" \t\r\n"
_SPACE = re.compile(rb"[ \t\r\n]*")


class JSONShapeError(ValueError):
    """The bytes are not a well-formed array or object; the message names the byte offset."""


class Child(NamedTuple):
    """One element or member: the raw key (members only) and where its value lies."""

    key: bytes | None
    head: int
    start: int
    end: int
    depth: int
    deepest: int


def skip_whitespace(data: bytes, start: int) -> int:
    """The offset of the first byte at or after `start` that is not JSON whitespace."""
    return _SPACE.match(data, start).end()


def children(data: bytes, start: int) -> tuple[list[Child], int]:
    """The elements or members of the array or object opening at `data[start]` (see the module docstring)."""
    opener = data[start] if start < len(data) else None
    if opener not in _OPEN:
        raise JSONShapeError(f"expected an array or an object at byte {start}")
    is_object = opener == ord("{")
    closers = bytearray([_OPEN[opener]])
    found: list[Child] = []
    child_start = start + 1
    key: bytes | None = None
    head = depth = deepest = 0
    for token in _TOKEN.finditer(data, start + 1):
        at = token.start()
        byte = data[at]
        if byte == _QUOTE:
            if token.end() - at == 1:
                raise JSONShapeError(f"unterminated string at byte {at}")
            continue
        if byte in _OPEN:
            closers.append(_OPEN[byte])
            if len(closers) - 1 > depth:
                depth, deepest = len(closers) - 1, at
            continue
        if byte in _CLOSE:
            if byte != closers[-1]:
                raise JSONShapeError(f"{chr(byte)!r} at byte {at} closes {chr(closers[-1] - 2)!r}")
            closers.pop()
            if closers:
                continue
        elif len(closers) > 1:
            continue
        elif byte == _COLON:
            if not is_object or key is not None:
                raise JSONShapeError(f"unexpected ':' at byte {at}")
            head, last = _trim(data, child_start, at)
            key = data[head:last]
            child_start = at + 1
            continue
        # A comma, or the closing bracket, ends the child at depth 1.
        first, last = _trim(data, child_start, at)
        if is_object and key is None and first < last:
            raise JSONShapeError(f"object member without a ':' at byte {first}")
        if first < last or byte == _COMMA or found:
            found.append(Child(key, head if is_object else first, first, last, depth, deepest if depth else first))
        if not closers:
            return found, token.end()
        child_start, key, depth, deepest = at + 1, None, 0, 0
    raise JSONShapeError(f"the {'object' if is_object else 'array'} opened at byte {start} is never closed")


def _trim(data: bytes, start: int, end: int) -> tuple[int, int]:
    while start < end and data[start] in _WHITESPACE:
        start += 1
    while end > start and data[end - 1] in _WHITESPACE:
        end -= 1
    return start, end
