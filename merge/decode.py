"""Request bodies and files to raw audit items: the shapes auditcov reads, told apart, nothing validated yet.

`decode_items(data)` accepts, as bytes:
- an `audit.k8s.io/v1` or `v1beta1` `EventList` (what the apiserver's webhook sends): its `items`;
- a single `Event` object (an object with no `kind`, or `kind: Event`);
- a JSON array of events;
- JSON lines, one event per line (audit log files, log shippers); blank lines are skipped.

It returns the items as decoded JSON, not yet checked as events (`merge.events.event_from_json` does that), so
one bad item never costs the others.

`decode_event_list(data)` is the fast path for the shape the apiserver sends: an EventList decoded straight
into `AuditEvent`s, every field checked in msgspec's C decoder without building the dicts. It returns None
when the body is not an EventList of valid events, and the caller then takes the slower way above, which says
what is wrong and with which item. A JSON line that does not parse becomes a `Malformed` item carrying its raw
text and the reason, to be quarantined beside the good ones. A body that is none of these shapes raises
`BadBodyError` saying why.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec
import orjson

from auditcov.merge.errors import BadBodyError
from auditcov.merge.events import AuditEvent

AUDIT_API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")


class Malformed(NamedTuple):
    """A JSON line that is not JSON: kept raw so it can be quarantined with its reason."""

    raw: str
    reason: str


def decode_items(data: bytes) -> list[object]:
    """The raw items in `data` (see the module docstring); raise `BadBodyError` for any other shape."""
    if not data.strip():
        raise BadBodyError("the body is empty")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if b"\n" not in data.strip():
            raise BadBodyError(f"the body is not JSON: {exc}") from None
        return _json_lines(data)
    return _document_items(document)


class _EventList(msgspec.Struct, rename={"api_version": "apiVersion"}, gc=False):
    # Any other kind or version fails to decode, and the body goes to `decode_items`, which says what is wrong.
    kind: Literal["EventList"]
    api_version: Literal[AUDIT_API_VERSIONS] | None = None
    items: list[AuditEvent] | None = None


_EVENT_LIST = msgspec.json.Decoder(_EventList)


def decode_event_list(data: bytes) -> list[AuditEvent] | None:
    """The events of an EventList body when every one is valid; None otherwise (see the module docstring)."""
    try:
        document = _EVENT_LIST.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    return document.items or []


def _document_items(document: object) -> list[object]:
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise BadBodyError(f"the body is a JSON {type(document).__name__}, not an EventList, Event or array")
    kind = document.get("kind")
    if kind is None or kind == "Event":
        return [document]
    if kind != "EventList":
        raise BadBodyError(f"kind {str(kind)[:64]!r} is not EventList or Event")
    api_version = document.get("apiVersion")
    if api_version is not None and api_version not in AUDIT_API_VERSIONS:
        raise BadBodyError(f"EventList apiVersion {str(api_version)[:64]!r} is not {' or '.join(AUDIT_API_VERSIONS)}")
    items = document.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadBodyError(f"EventList items must be an array, not {type(items).__name__}")
    return items


def _json_lines(data: bytes) -> list[object]:
    items: list[object] = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            items.append(Malformed(line.decode("utf-8", "replace"), f"line {number} is not JSON: {exc}"))
    if all(isinstance(item, Malformed) for item in items):
        raise BadBodyError(f"the body is neither JSON nor JSON lines: {items[0].reason}")
    return items
