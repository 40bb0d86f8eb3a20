"""The one audit event model: what auditcov keeps of a Kubernetes audit event, and how JSON becomes one.

`AuditEvent` mirrors the wire form of an `audit.k8s.io/v1` or `v1beta1` Event (DESIGN.md §2), keeping only the
fields auditcov uses; its properties give the flat view everything downstream reads (`namespace`, `code`,
`received_us`, ...). Every field's type is checked by msgspec's decoder, in C: `event_from_json(item)` checks one
decoded item and raises `BadEventError` naming the field that is wrong, so one bad item can be quarantined
beside the good ones; `merge.decode.decode_event_list` decodes a whole EventList straight into events.

Times are kept as integer microseconds since the Unix epoch (UTC): the apiserver writes RFC 3339 with
microseconds, and integers compare and index cheaply in SQLite.

`requestObject` and `responseObject` are kept undecoded (`msgspec.Raw`): they may hold Secrets, and they are
stored only when the caller asks.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
import orjson

from auditcov.merge.errors import BadEventError

#: The stages an apiserver sends.
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
# Decoded events form no reference cycles, so the garbage collector need not track them (it would otherwise
# walk every event of every batch).
_STRUCT = {"frozen": True, "gc": False}


class User(msgspec.Struct, **_STRUCT):
    """`user`: who made the request."""

    username: str = ""


class ObjectRef(msgspec.Struct, rename="camel", **_STRUCT):
    """`objectRef`: the object the request is about (empty strings mean absent, as in the apiserver's JSON)."""

    namespace: str | None = None
    resource: str | None = None
    subresource: str | None = None
    name: str | None = None
    api_group: str | None = None
    api_version: str | None = None


class ResponseStatus(msgspec.Struct, **_STRUCT):
    """`responseStatus`: only its HTTP code is used."""

    code: int | None = None


_NO_USER = User()
_NO_STATUS = ResponseStatus()
_NO_OBJECT = msgspec.Raw()


#: The fields of `objectRef` in the order `AuditEvent.object_ref_values` gives them.
OBJECT_REF_FIELDS = ("namespace", "resource", "subresource", "name", "api_group", "api_version")
_NO_REF_VALUES = (None,) * len(OBJECT_REF_FIELDS)


def _object_ref_field(index: int) -> property:
    """A field of `objectRef` read from the event: None when there is no objectRef or the field is empty."""
    return property(lambda event: event.object_ref_values[index], doc=f"objectRef.{OBJECT_REF_FIELDS[index]}")


def _wire_name(name: str) -> str:
    """The JSON name of an `AuditEvent` field: camelCase, with the apiserver's `ID`, `URI` and `IPs`."""
    head, *rest = name.split("_")
    return head + "".join(_INITIALISMS.get(word, word.capitalize()) for word in rest)


_INITIALISMS = {"id": "ID", "uri": "URI", "ips": "IPs"}


class AuditEvent(msgspec.Struct, rename=_wire_name, **_STRUCT):
    """The fields of an audit event that auditcov uses, under their wire names (camelCase, `auditID`, ...)."""

    audit_id: Annotated[str, msgspec.Meta(min_length=1)]
    stage: Literal[STAGES]
    verb: str = ""
    request_uri: str = ""
    user_agent: str = ""
    user: User | None = None
    source_ips: list[str] | None = None
    object_ref: ObjectRef | None = None
    response_status: ResponseStatus | None = None
    annotations: dict[str, str] | None = None
    request_received_timestamp: datetime | None = None
    stage_timestamp: datetime | None = None
    timestamp: datetime | None = None  # v1beta1's only time on some events
    request_object: msgspec.Raw = _NO_OBJECT
    response_object: msgspec.Raw = _NO_OBJECT

    @property
    def username(self) -> str:
        return (self.user or _NO_USER).username

    @property
    def object_ref_values(self) -> tuple[str | None, ...]:
        """Every field of `objectRef` (`OBJECT_REF_FIELDS`), each None when empty: at once, for the ingest path,
        a third of the time of reading them one by one."""
        ref = self.object_ref
        if ref is None:
            return _NO_REF_VALUES
        return (
            ref.namespace or None, ref.resource or None, ref.subresource or None, ref.name or None,
            ref.api_group or None, ref.api_version or None,
        )  # fmt: skip

    namespace = _object_ref_field(0)
    resource = _object_ref_field(1)
    subresource = _object_ref_field(2)
    name = _object_ref_field(3)
    api_group = _object_ref_field(4)
    api_version = _object_ref_field(5)

    @property
    def code(self) -> int | None:
        return (self.response_status or _NO_STATUS).code

    @property
    def received_us(self) -> int | None:
        """When the apiserver received the request; v1beta1 events may carry only `timestamp`, the closest."""
        moment = self.request_received_timestamp or self.timestamp
        return None if moment is None else datetime_us(moment)

    @property
    def stage_us(self) -> int | None:
        return None if self.stage_timestamp is None else datetime_us(self.stage_timestamp)


def json_text(raw: msgspec.Raw) -> str | None:
    """An undecoded JSON value (`AuditEvent.request_object`, ...) as text; None when absent or null."""
    return None if not raw or raw == b"null" else bytes(raw).decode()


def item_json(item: object) -> str:
    """A decoded item as JSON text, for keeping it raw (quarantine): one orjson cannot write (nested past 255
    levels, ...) by the standard library, or, if that fails too, a note saying so."""
    try:
        return orjson.dumps(item).decode()
    except orjson.JSONEncodeError:
        pass
    try:
        return json.dumps(item)
    except (RecursionError, TypeError, ValueError) as exc:
        return f"(the item cannot be written as JSON: {exc})"


_EVENT = msgspec.json.Decoder(AuditEvent)


def event_from_json(item: object) -> AuditEvent:
    """Build an `AuditEvent` from one decoded audit event; raise `BadEventError` saying what is wrong."""
    if not isinstance(item, dict):
        raise BadEventError(f"an event must be a JSON object, not {type(item).__name__}")
    try:
        return _EVENT.decode(orjson.dumps(item))
    except orjson.JSONEncodeError as exc:
        raise BadEventError(f"the event cannot be written as JSON: {exc}") from None
    except msgspec.ValidationError as exc:
        raise BadEventError(_explain(str(exc), item)) from None


def event_from_bytes(raw: bytes) -> AuditEvent:
    """Build an `AuditEvent` from one event's JSON bytes; raise `BadEventError` saying what is wrong.

    Nothing is decoded twice or re-encoded, so any nesting the decoder reads is fine; deeper nesting is an error
    of its own (msgspec recurses once per level, within Python's recursion limit)."""
    try:
        return _EVENT.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if not_object := _NOT_OBJECT.fullmatch(message):
            raise BadEventError(f"an event must be a JSON object, not {not_object['got']}") from None
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            item = {}
        raise BadEventError(_explain(message, item if isinstance(item, dict) else {})) from None
    except msgspec.DecodeError as exc:
        raise BadEventError(f"not JSON: {exc}") from None
    except RecursionError:
        raise BadEventError(
            f"nested deeper than the event decoder reads (Python's recursion limit, {sys.getrecursionlimit()})"
        ) from None


_NOT_OBJECT = re.compile(r"Expected `object`, got `(?P<got>[^`]+)`")
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_TYPE_WORDS = {"str": "a string", "int": "an integer", "object": "an object", "array": "an array"}
_EXPECTED = re.compile(r"Expected `(?P<expected>[^`]+)`(?:, got `(?P<got>[^`]+)`)?(?P<rest>.*)")


def _explain(message: str, item: dict) -> str:
    """msgspec's validation message in auditcov's words: the field first, then what is wrong with it."""
    parts = _AT.match(message)
    what, path = parts["what"], (parts["path"] or "").lstrip(".")
    if missing := _MISSING.fullmatch(what):
        return f"{path + '.' if path else ''}{missing['field']} is missing"
    if path == "stage" and what.startswith("Invalid enum value"):
        return f"stage {item.get('stage')!r} is not one of {', '.join(sorted(STAGES))}"
    if path == "auditID" and "length >= 1" in what:
        return "auditID is missing"
    if "RFC3339" in what:
        return f"{path} is not an RFC 3339 time: {str(item.get(path))[:64]!r}"
    if expected := _EXPECTED.fullmatch(what):
        got = f", not {expected['got']}" if expected["got"] else ""
        wanted = expected["expected"].removesuffix(" | null")
        return f"{path} must be {_TYPE_WORDS.get(wanted, wanted)}{got}{expected['rest']}"
    return f"{path}: {what}" if path else what


def datetime_us(moment: datetime) -> int:
    """A time as microseconds since the epoch; a time without an offset is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def parse_time(value: str) -> int:
    """RFC 3339 text (as the apiserver writes it, or any offset) to microseconds since the epoch."""
    return datetime_us(datetime.fromisoformat(value))


def now_us() -> int:
    """The current time in microseconds since the epoch, as events keep their times."""
    return time.time_ns() // 1000


def format_time(micros: int) -> str:
    """Microseconds since the epoch to RFC 3339 in UTC with microseconds, as the apiserver writes it."""
    return (_EPOCH + micros * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
