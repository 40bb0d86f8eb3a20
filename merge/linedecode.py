"""One JSON line of an audit file straight to its `AuditEvent`, when that is exactly what the general path gives.

The general path (`merge.eventfiles.line_items`, then `merge.events.event_from_json` in the ingest core) decodes
a line with orjson into Python objects, writes the event out again and decodes that with msgspec: three passes
that build every object of the request and response bodies, about 20 us a line for events with bodies. For a
line that holds one plain event, msgspec can decode its bytes into the `AuditEvent` directly, skipping the values
auditcov does not keep without building them (about 5 us). `line_event(line)` does that, and answers None
whenever the result could differ in any way, so that the caller takes the general path:

- the line's shape: it must be one JSON object whose `kind` is absent, null or "Event" (an EventList, another
  kind or an array is split or refused by `merge.decode`), with no `protoPayload` and no `category` member (the
  cloud records `merge.eventfiles.unwrap` converts or refuses);
- what orjson refuses and msgspec skips unread: invalid UTF-8, a number beyond a double's range (the line is
  then "not JSON" to the general path), nesting deeper than orjson writes (255 levels: the event then "cannot be
  written as JSON"): no more than `MAX_DEPTH` brackets, no number with an exponent, no run of 155 digits (a
  double overflows only when the integer digits and the exponent add up to 309). Brackets and digits inside
  strings count too, which only ever sends a line the general way;
- an event that is not valid (the general path words the reason);
- with `keep_bodies`, an event with a body: msgspec keeps a body's bytes as they are in the line, the general
  path as orjson writes them again.
"""

from __future__ import annotations

import re

import msgspec

from auditcov.merge.decode import is_utf8
from auditcov.merge.events import AuditEvent

#: Brackets outside strings a line may have: orjson writes at most 254 levels of nesting.
MAX_DEPTH = 254

_NO_MEMBER = msgspec.Raw()


class _Shape(msgspec.Struct):
    """The members that decide how the general path reads a line."""

    kind: object = None
    protoPayload: msgspec.Raw = _NO_MEMBER  # the wire name
    category: msgspec.Raw = _NO_MEMBER


_SHAPE = msgspec.json.Decoder(_Shape)
_EVENT = msgspec.json.Decoder(AuditEvent)
# What of a line tells its numbers and its depth: every digit as "0", an exponent marker as "e", what may precede
# a number ("," ":" "[") as ":", or "[" for the brackets, which "{" counts as too, and the quotes; nothing else.
_MARKS = bytes.maketrans(b"123456789E,{", b"000000000e:[")
_UNMARKED = bytes(sorted(set(range(256)) - set(b'0123456789eE,:{["')))
_LONG_DIGITS = b"0" * 155
# A number with an exponent, as it shows there: a digit run after what precedes a number, then "e" (strings that
# look like that too only cost the fast way).
_EXPONENT = re.compile(rb":0+e")


def line_event(line: bytes, *, keep_bodies: bool) -> AuditEvent | None:
    """The event `line` holds, exactly as the general path would give it; None when that path must decide."""
    if not line.isascii() and not is_utf8(line):
        return None
    try:
        shape = _SHAPE.decode(line)
        if not (shape.kind is None or shape.kind == "Event") or shape.protoPayload or shape.category:
            return None
        event = _EVENT.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if keep_bodies and (event.request_object or event.response_object):
        return None
    marks = line.translate(_MARKS, _UNMARKED)
    if marks.count(b"[") > MAX_DEPTH or _LONG_DIGITS in marks or _EXPONENT.search(marks.replace(b"[", b":")):
        return None
    return event
