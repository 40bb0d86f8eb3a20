"""Body shapes: EventList (v1, v1beta1), single Event, JSON array, JSON lines, and clear errors for the rest."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sink_support import FIXTURES, event, event_list

from auditcov.merge.decode import Malformed, decode_event_list, decode_items
from auditcov.merge.errors import BadBodyError, BadEventError
from auditcov.merge.eventfiles import AuditFile
from auditcov.merge.events import event_from_json


def test_event_list_of_both_api_versions():
    items = [event("a"), event("b")]
    assert decode_items(event_list(items)) == items
    assert decode_items(event_list(items, "audit.k8s.io/v1beta1")) == items


def test_single_event_array_and_json_lines():
    one = event("a")
    assert decode_items(orjson.dumps(one)) == [one]
    assert decode_items(orjson.dumps([one, one])) == [one, one]
    demo = (FIXTURES / "audit/audit2rbac/demo.log").read_bytes()
    items = decode_items(demo)
    assert len(items) == 37
    assert all(item["kind"] == "Event" for item in items)


def test_a_bad_json_line_is_kept_as_malformed_beside_the_good_ones():
    good = orjson.dumps(event("a"))
    items = decode_items(good + b"\n{not json\n\n" + good + b"\n")
    assert items[0] == items[2] == event("a")
    assert isinstance(items[1], Malformed)
    assert items[1].raw == "{not json"
    assert items[1].reason.startswith("line 2 is not JSON")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"{not json", "not JSON"),
        (b"not json\nat all\n", "neither JSON nor JSON lines"),
        (b'"text"', "JSON str"),
        (b"42", "JSON int"),
        (b'{"kind": 0}', "kind '0' is not EventList or Event"),
        (b'{"kind": "Pod"}', "kind 'Pod' is not EventList or Event"),
        (b'{"kind": "EventList", "apiVersion": "v1"}', "apiVersion 'v1'"),
        (b'{"kind": "EventList", "items": {}}', "items must be an array"),
    ],
)
def test_bodies_that_are_no_shape_of_events_say_why(body, reason):
    with pytest.raises(BadBodyError, match=reason):
        decode_items(body)


def test_falco_malformed_fixture_is_a_bad_body():
    with pytest.raises(BadBodyError, match="kind"):
        decode_items((FIXTURES / "audit/falco/fal_01_003.json").read_bytes())


_objects = st.dictionaries(
    st.text(min_size=1, max_size=8), st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8), max_size=4
)


@given(st.lists(_objects.map(lambda item: {"stage": "ResponseComplete", **item}), min_size=1, max_size=5))
def test_every_shape_decodes_to_the_same_items(items):
    assert decode_items(event_list(items)) == items
    assert decode_items(orjson.dumps(items)) == items
    if len(items) > 1:
        assert decode_items(b"\n".join(orjson.dumps(item) for item in items)) == items


def fixture_events() -> list[dict]:
    """Every item of the audit fixtures that is a valid event (v1 and v1beta1, every level and stage)."""
    items = []
    for path in sorted((FIXTURES / "audit").rglob("*")):
        if path.suffix in (".json", ".log"):
            for entry in AuditFile(path):
                try:
                    event_from_json(entry.item)
                except BadEventError:
                    continue
                items.append(entry.item)
    return items


def test_an_event_list_decodes_straight_to_the_events_the_items_give():
    items = fixture_events()
    assert len(items) > 80
    assert decode_event_list(event_list(items)) == [event_from_json(item) for item in items]
    assert decode_event_list(event_list(items, "audit.k8s.io/v1beta1")) == [event_from_json(item) for item in items]


@pytest.mark.parametrize(
    "body",
    [
        event_list([event("a"), event("b", stage="Finished")]),  # one invalid event: the caller goes item by item
        event_list([event("a"), {"auditID": "b"}]),
        event_list([event("a")], "audit.k8s.io/v2"),
        orjson.dumps({"kind": "Event", **event("a")}),
        orjson.dumps([event("a")]),
        b"\n".join(orjson.dumps(event(name)) for name in "ab"),
        b"{not json",
    ],
)
def test_any_other_body_is_left_to_the_item_by_item_path(body):
    assert decode_event_list(body) is None


_int64 = st.integers(-(2**63), 2**63 - 1)  # what orjson reads: it reads larger integers as floats
_scalars = st.none() | st.booleans() | _int64 | st.text(max_size=30)
_nested_keys = st.sampled_from(["username", "namespace", "resource", "name", "apiGroup", "code", "a"])
_values = (
    _scalars
    | st.lists(_scalars, max_size=2)
    | st.dictionaries(_nested_keys, _scalars | st.lists(st.text(max_size=5), max_size=2), max_size=3)
)
_fields = st.sampled_from(
    ["stage", "auditID", "verb", "requestURI", "userAgent", "sourceIPs", "annotations", "requestReceivedTimestamp",
     "stageTimestamp", "timestamp", "user", "objectRef", "responseStatus"]
)  # fmt: skip


@given(st.lists(st.dictionaries(_fields, _values, max_size=3), min_size=1, max_size=4))
def test_both_paths_agree_on_any_batch(changes):
    # Each item is the real event with a few fields replaced by values of any type: valid or not, the fast path
    # gives exactly what checking item by item gives, or leaves the batch to it when any item is invalid.
    items = [{**event(f"e{n}"), **change} for n, change in enumerate(changes)]
    checked = []
    for item in items:
        try:
            checked.append(event_from_json(item))
        except BadEventError:
            checked = None
            break
    assert decode_event_list(event_list(items)) == checked


def test_an_item_json_cannot_hold_is_a_bad_event():
    with pytest.raises(BadEventError, match="cannot be written as JSON"):
        event_from_json({**event("a"), "verb": 2**70})
