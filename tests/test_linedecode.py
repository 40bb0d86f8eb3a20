"""merge/linedecode.py: a line straight to its event gives exactly what the general path gives, or nothing.

The general path is the one every import took before: `merge.eventfiles.line_items` (orjson), then
`merge.events.event_from_json`. On the real fixture lines, on lines where msgspec alone would read what orjson
refuses, and on lines damaged at random (hypothesis), `line_event` either answers None or the same event.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import BadBodyError, BadEventError
from auditcov.merge.eventfiles import audit_files, line_items
from auditcov.merge.events import AuditEvent, event_from_json
from auditcov.merge.linedecode import MAX_DEPTH, line_event

AUDIT = Path(__file__).parent / "fixtures" / "audit"


def general(line: bytes) -> object:
    """What the general path makes of a line: an AuditEvent, or what else it is."""
    items = line_items("audit.log", 1, line)
    if len(items) != 1:
        return ("items", len(items))
    item = items[0].item
    if isinstance(item, Malformed):
        return ("malformed", item.reason)
    try:
        return event_from_json(item)
    except BadEventError as exc:
        return ("invalid", str(exc))


def same(event: AuditEvent | None, other: object) -> bool:
    """Whether two events are the same, their bodies compared as JSON values: without keep_bodies, a body is only
    read (`Ingestor.prepare`'s namespace names), never stored, so its spacing is of no account."""
    if not isinstance(event, AuditEvent) or not isinstance(other, AuditEvent):
        return False
    bodies = ("request_object", "response_object")
    values = [
        tuple(msgspec.json.decode(getattr(e, body)) if getattr(e, body) else None for body in bodies)
        for e in (event, other)
    ]
    flat = [
        msgspec.structs.replace(e, request_object=msgspec.Raw(), response_object=msgspec.Raw()) for e in (event, other)
    ]
    return values[0] == values[1] and flat[0] == flat[1]


def fixture_lines() -> list[bytes]:
    files = audit_files([AUDIT / "falco", AUDIT / "audit2rbac", AUDIT / "apisnoop", AUDIT / "elastic"])
    lines = []
    for file in files:
        try:
            lines.extend(orjson.dumps(entry.item) for entry in file if not isinstance(entry.item, Malformed))
        except BadBodyError:  # a fixture that is not audit data (the grep output, the policy)
            continue
    return lines


LINES = fixture_lines()
EVENT = orjson.loads(next(line for line in LINES if b"requestObject" in line))


def with_member(name: str, raw: bytes) -> bytes:
    return orjson.dumps(EVENT)[:-1] + b',"' + name.encode() + b'":' + raw + b"}"


def test_the_real_events_come_straight_and_the_same():
    assert len(LINES) > 90
    straight = 0
    for line in LINES:
        event = line_event(line, keep_bodies=False)
        if event is not None:
            assert event == general(line)
            straight += 1
    # Lines with no numbers in exponent form: every event but the cloud records, which go the general way.
    assert straight > 80


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (with_member("z", b"1e400"), "a number beyond a double: orjson refuses the line"),
        (with_member("z", b"-18" + b"0" * 310), "a run of digits beyond a double"),
        (with_member("z", b'"\xff"'), "invalid UTF-8 where msgspec skips"),
        (with_member("z", b"[" * MAX_DEPTH + b"]" * MAX_DEPTH), "nesting orjson cannot write again"),
        (with_member("kind", b'"EventList"'), "another kind"),
        (with_member("kind", b"0"), "a kind that is not a string"),
        (with_member("protoPayload", b"null"), "a GKE record"),
        (with_member("category", b'"kube-audit"'), "an AKS record, maybe"),
        (with_member("stage", b'"Bogus"'), "an invalid event: the general path says why"),
        (b"[" + orjson.dumps(EVENT) + b"]", "an array"),
        (b"   \n", "a blank line"),
    ],
)
def test_what_the_general_path_must_decide_is_left_to_it(line, why):
    assert line_event(line, keep_bodies=False) is None, why


def test_an_exponent_outside_strings_goes_the_general_way_and_one_inside_a_string_does_not():
    assert line_event(with_member("z", b"1.5e3"), keep_bodies=False) is None
    assert general(with_member("z", b"1.5e3")) == line_event(orjson.dumps(EVENT), keep_bodies=False)
    inside = with_member("z", b'"1e400 and 3e245"')
    assert line_event(inside, keep_bodies=False) == general(inside)
    deep_but_not_too_deep = with_member("z", b"[" * (MAX_DEPTH - 40) + b"]" * (MAX_DEPTH - 40))
    assert line_event(deep_but_not_too_deep, keep_bodies=False) == general(deep_but_not_too_deep)


def test_bodies_come_straight_only_when_they_are_not_kept():
    spaced = orjson.dumps(EVENT, option=orjson.OPT_INDENT_2).replace(b"\n", b"")  # bodies not as orjson writes them
    assert line_event(spaced, keep_bodies=False).request_object != general(spaced).request_object
    assert same(line_event(spaced, keep_bodies=False), general(spaced))
    assert line_event(spaced, keep_bodies=True) is None
    metadata_only = orjson.dumps({k: v for k, v in EVENT.items() if not k.endswith("Object")})
    assert line_event(metadata_only, keep_bodies=True) == general(metadata_only)


def test_duplicate_members_are_read_as_orjson_reads_them_the_last_wins():
    twice = orjson.dumps(EVENT)[:-1] + b',"verb":"list","kind":"Foo","kind":"Event"}'
    assert line_event(twice, keep_bodies=False) == general(twice)
    assert general(twice).verb == "list"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(LINES) - 1),
    edits=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=1),
            st.sampled_from([b"e", b"E", b"9", b"0", b'"', b"\\", b"{", b"[", b",", b":", b"\xff", b"-", b".", b" "]),
            st.booleans(),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_damaged_lines_come_straight_only_as_the_general_path_reads_them(index, edits):
    line = LINES[index]
    for where, text, replace in edits:
        at = int(where * (len(line) - 1))
        line = line[:at] + text + line[at + 1 if replace else at :]
    for keep_bodies in (False, True):
        event = line_event(line, keep_bodies=keep_bodies)
        if event is not None:
            assert same(event, general(line)) and (event == general(line) or not keep_bodies)
