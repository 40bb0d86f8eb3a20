"""Request bodies and files to raw audit items: the shapes auditcov reads, told apart, nothing validated yet.

`decode_items(data)` accepts, as bytes:
- an `audit.k8s.io/v1` or `v1beta1` `EventList` (what the apiserver's webhook sends): its `items`;
- a single `Event` object (an object with no `kind`, or `kind: Event`);
- a JSON array of events;
- JSON lines, one event per line (audit log files, log shippers); blank lines are skipped.

It returns the items as decoded JSON, not yet checked as events (`merge.events.event_from_json` does that), so
one bad item never costs the others.

What the sink stores comes two ways. The fast path is the shape the apiserver sends: `decode_event_list(data)`
decodes an EventList of valid UTF-8 straight into `AuditEvent`s, every field checked in msgspec's C decoder
without building the dicts (None when that is not the case). Any other body goes to `check_body(data)`: every
item as an `AuditEvent`, or as a `Malformed` holding the item's own bytes and the reason it is not one (which
item, what is wrong, where). The body is first split into the bytes of its items (`split_body`: msgspec skipping over
each item, or, when even that fails, `merge.rawjson` scanning for them), and each item is checked on its own:
one item with invalid UTF-8, nested deeper than the decoder reads, or not JSON at all never costs the others.
A JSON line that does not parse becomes a `Malformed` item carrying its raw text and the reason, to be
quarantined beside the good ones. A body that is none of these shapes raises `BadBodyError` saying why.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec
import orjson

from auditcov.merge.errors import BadBodyError, BadEventError
from auditcov.merge.events import AuditEvent, event_from_bytes
from auditcov.merge.rawjson import JSONShapeError, children, skip_whitespace

AUDIT_API_VERSIONS = ("audit.k8s.io/v1", "audit.k8s.io/v1beta1")


class Malformed(NamedTuple):
    """An item that is not an event (a JSON line that is not JSON, ...): kept raw, as text or as the bytes received
    (when they may not be UTF-8), so it can be quarantined with its reason."""

    raw: str | bytes
    reason: str


class RawItem(NamedTuple):
    """One item of a body as bytes: where it is (`item 3`, `line 7`) and its offset in the body."""

    raw: bytes
    where: str
    offset: int


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
    # msgspec checks the UTF-8 of the strings it decodes, not of the values it skips (requestObject, fields
    # auditcov does not read): an item with invalid UTF-8 anywhere goes the item-by-item way.
    if not data.isascii() and not is_utf8(data):
        return None
    try:
        document = _EVENT_LIST.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None
    return document.items or []


def check_body(data: bytes) -> list[AuditEvent | Malformed]:
    """Every item of `data` checked on its own: as an event, or as a `Malformed` with its bytes and reason (see
    the module docstring); raise `BadBodyError` when `data` is no shape of events."""
    return [check_item(item) for item in split_body(data)]


def check_item(item: RawItem) -> AuditEvent | Malformed:
    """The event an item's bytes hold, or a `Malformed` saying which item is wrong, what and where."""
    raw = item.raw
    if not raw.isascii():
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            return Malformed(
                raw,
                f"{item.where} is not valid UTF-8: byte {exc.start} of the item (byte {item.offset + exc.start} "
                f"of the body) is {raw[exc.start : exc.start + 1].hex()}",
            )
    try:
        return event_from_bytes(raw)
    except BadEventError as exc:
        return Malformed(raw, f"{item.where} (byte {item.offset}): {exc}")


class _RawObject(msgspec.Struct):
    kind: object = None
    apiVersion: object = None  # the wire name
    items: msgspec.Raw = msgspec.Raw(b"null")


# The items of a body as their bytes, skipped over in C: it fails only on broken JSON or nesting deeper than
# msgspec recurses, and then `merge.rawjson` scans for them.
_RAW_BODY = msgspec.json.Decoder(list[msgspec.Raw] | _RawObject)
_RAW_LIST = msgspec.json.Decoder(list[msgspec.Raw] | None)


def split_body(data: bytes) -> list[RawItem]:
    """The items of a body of any shape `decode_items` reads, as bytes; raise `BadBodyError` for any other."""
    if not data.strip():
        raise BadBodyError("the body is empty")
    try:
        document = _RAW_BODY.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return _scan_body(data)
    if isinstance(document, list):
        return _located(data, document)
    if _shape(document.kind, document.apiVersion) == "event":
        start = skip_whitespace(data, 0)
        return [RawItem(data.strip(), "the event", start)]
    items = _RAW_LIST.decode(document.items)
    if items is None:
        return []
    return _located(data, items)


def _located(data: bytes, items: list[msgspec.Raw]) -> list[RawItem]:
    """Items skipped over by msgspec, with their offsets (they follow each other in the body)."""
    located = []
    offset = 0
    for number, item in enumerate(items, start=1):
        raw = bytes(item)
        offset = data.index(raw, offset)
        located.append(RawItem(raw, f"item {number}", offset))
        offset += len(raw)
    return located


def _scan_body(data: bytes) -> list[RawItem]:
    """`split_body` for a body msgspec cannot skip over: a scan for its items, or its lines."""
    start = skip_whitespace(data, 0)
    try:
        found, end = children(data, start)
        problem = None if skip_whitespace(data, end) == len(data) else f"more JSON after byte {end}"
    except JSONShapeError as exc:
        problem = str(exc)
    if problem is not None:
        if b"\n" in data.strip():
            return _raw_lines(data)
        raise BadBodyError(f"the body is not JSON: {problem}")
    if data[start] == ord("["):
        return [RawItem(data[c.start : c.end], f"item {n}", c.start) for n, c in enumerate(found, start=1)]
    members = {_key(child.key): child for child in found}
    kind, api_version = (_scalar(data, members.get(name)) for name in ("kind", "apiVersion"))
    if _shape(kind, api_version) == "event":
        return [RawItem(data[start:end], "the event", start)]
    items = members.get("items")
    if items is None or data[items.start : items.end] == b"null":
        return []
    if data[items.start] != ord("["):
        raise BadBodyError("EventList items must be an array")
    elements, _ = children(data, items.start)
    return [RawItem(data[c.start : c.end], f"item {n}", c.start) for n, c in enumerate(elements, start=1)]


def _key(raw: bytes | None) -> str | None:
    try:
        key = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return key if isinstance(key, str) else None


def _scalar(data: bytes, child) -> object:
    """A small member value (kind, apiVersion) decoded; what cannot be decoded stands as its text."""
    if child is None:
        return None
    raw = data[child.start : child.end]
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def _raw_lines(data: bytes) -> list[RawItem]:
    items = []
    offset = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        if raw := line.strip():
            items.append(RawItem(raw, f"line {number}", offset + len(line) - len(line.lstrip())))
        offset += len(line) + 1
    for item in items:
        try:
            msgspec.json.decode(item.raw, type=msgspec.Raw)
        except (msgspec.DecodeError, RecursionError):
            continue
        return items
    raise BadBodyError("the body is neither JSON nor JSON lines: no line is JSON")


def is_utf8(data: bytes) -> bool:
    """Whether `data` is valid UTF-8."""
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _document_items(document: object) -> list[object]:
    if isinstance(document, list):
        return document
    if not isinstance(document, dict):
        raise BadBodyError(f"the body is a JSON {type(document).__name__}, not an EventList, Event or array")
    if _shape(document.get("kind"), document.get("apiVersion")) == "event":
        return [document]
    items = document.get("items")
    if items is None:
        return []
    if not isinstance(items, list):
        raise BadBodyError(f"EventList items must be an array, not {type(items).__name__}")
    return items


def _shape(kind: object, api_version: object) -> Literal["event", "list"]:
    """Whether an object with this kind and apiVersion is one event or an EventList; raise for anything else."""
    if kind is None or kind == "Event":
        return "event"
    if kind != "EventList":
        raise BadBodyError(f"kind {str(kind)[:64]!r} is not EventList or Event")
    if api_version is not None and api_version not in AUDIT_API_VERSIONS:
        raise BadBodyError(f"EventList apiVersion {str(api_version)[:64]!r} is not {' or '.join(AUDIT_API_VERSIONS)}")
    return "list"


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
