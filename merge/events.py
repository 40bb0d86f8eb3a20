"""The one audit event model: what auditcov keeps of a Kubernetes audit event, and how JSON becomes one.

An `AuditEvent` is built from one decoded JSON item (an `audit.k8s.io/v1` or `v1beta1` Event) by
`event_from_json`, which raises `BadEventError` naming the field that is wrong. Everything downstream (the
sink, `auditcov import`, the matcher, reports) reads this model and nothing else.

Times are kept as integer microseconds since the Unix epoch (UTC): the apiserver writes RFC 3339 with
microseconds, and integers compare and index cheaply in SQLite.

`requestObject` and `responseObject` may hold Secrets, so they are kept only when the caller asks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from merge.errors import BadEventError

#: The stages an apiserver sends; an event is identified by (auditID, stage).
STAGES = frozenset({"RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"})

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class AuditEvent:
    """The fields of an audit event that auditcov uses (DESIGN.md §2)."""

    audit_id: str
    stage: str
    verb: str
    request_uri: str
    user_agent: str
    username: str
    source_ips: list[str]
    namespace: str | None
    resource: str | None
    subresource: str | None
    name: str | None
    api_group: str | None
    api_version: str | None
    code: int | None
    received_us: int | None
    stage_us: int | None
    annotations: dict[str, str] | None
    request_object: dict | None = None
    response_object: dict | None = None


def parse_time(value: str) -> int:
    """RFC 3339 text (as the apiserver writes it, or any offset) to microseconds since the epoch."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def now_us() -> int:
    """The current time in microseconds since the epoch, as events keep their times."""
    return time.time_ns() // 1000


def format_time(micros: int) -> str:
    """Microseconds since the epoch to RFC 3339 in UTC with microseconds, as the apiserver writes it."""
    return (_EPOCH + micros * _MICROSECOND).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH


def _text(item: dict, key: str, *, required: bool = False) -> str:
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise BadEventError(f"{key} is missing")
        return ""
    if not isinstance(value, str):
        raise BadEventError(f"{key} must be a string, not {type(value).__name__}")
    return value


def _optional_text(mapping: dict, key: str, where: str) -> str | None:
    value = mapping.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadEventError(f"{where}.{key} must be a string, not {type(value).__name__}")
    return value


def _mapping(item: dict, key: str) -> dict:
    value = item.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadEventError(f"{key} must be an object, not {type(value).__name__}")
    return value


def _time(item: dict, key: str) -> int | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadEventError(f"{key} must be an RFC 3339 string, not {type(value).__name__}")
    try:
        return _apiserver_time(value)
    except ValueError:
        raise BadEventError(f"{key} is not an RFC 3339 time: {value[:64]!r}") from None


def _apiserver_time(value: str) -> int:
    """`parse_time`, fast for the apiserver's own `2019-07-02T08:15:24.892146Z` form (the seconds are cached)."""
    if len(value) == 27 and value[19] == "." and value[26] == "Z" and value[20:26].isdigit():
        return _epoch_seconds(value[:19]) * 1_000_000 + int(value[20:26])
    return parse_time(value)


@lru_cache(maxsize=4096)
def _epoch_seconds(text: str) -> int:
    return parse_time(text) // 1_000_000


_EMPTY: dict = {}  # stands in for an absent object; never written to
_REF_KEYS = ("namespace", "resource", "subresource", "name", "apiGroup", "apiVersion")


def event_from_json(item: object, *, keep_bodies: bool = False) -> AuditEvent:
    """Build an `AuditEvent` from one decoded audit event; raise `BadEventError` saying what is wrong.

    This runs once per stored event, so the usual case (every field of the right type) is checked inline and
    only a field that fails that check goes through the helpers that explain what is wrong.
    """
    if not isinstance(item, dict):
        raise BadEventError(f"an event must be a JSON object, not {type(item).__name__}")
    get = item.get
    stage = get("stage")
    if stage.__class__ is not str or stage not in STAGES:
        stage = _text(item, "stage", required=True)
        raise BadEventError(f"stage {stage[:64]!r} is not one of {', '.join(sorted(STAGES))}")
    audit_id = get("auditID")
    if audit_id.__class__ is not str or not audit_id:
        audit_id = _text(item, "auditID", required=True)
    verb = get("verb", "")
    if verb.__class__ is not str:
        verb = _text(item, "verb")
    request_uri = get("requestURI", "")
    if request_uri.__class__ is not str:
        request_uri = _text(item, "requestURI")
    user_agent = get("userAgent", "")
    if user_agent.__class__ is not str:
        user_agent = _text(item, "userAgent")
    user = get("user") or _EMPTY
    if user.__class__ is not dict:
        user = _mapping(item, "user")
    username = user.get("username") or ""
    if username.__class__ is not str:
        username = _optional_text(user, "username", "user") or ""
    object_ref = get("objectRef") or _EMPTY
    if object_ref.__class__ is not dict:
        object_ref = _mapping(item, "objectRef")
    ref = [object_ref.get(key) or None for key in _REF_KEYS] if object_ref else [None] * 6
    for key, value in zip(_REF_KEYS, ref, strict=True):
        if value is not None and value.__class__ is not str:
            _optional_text(object_ref, key, "objectRef")
    status = get("responseStatus") or _EMPTY
    if status.__class__ is not dict:
        status = _mapping(item, "responseStatus")
    code = status.get("code")
    if code is not None and code.__class__ is not int:
        raise BadEventError(f"responseStatus.code must be an integer, not {type(code).__name__}")
    source_ips = get("sourceIPs") or []
    if source_ips.__class__ is not list or not all(ip.__class__ is str for ip in source_ips):
        raise BadEventError("sourceIPs must be a list of strings")
    annotations = get("annotations") or None
    if annotations is not None and annotations.__class__ is not dict:
        raise BadEventError(f"annotations must be an object, not {type(annotations).__name__}")
    # v1beta1 events may carry only `timestamp`; it is the closest thing to the receive time they have.
    received_us = _time(item, "requestReceivedTimestamp")
    if received_us is None:
        received_us = _time(item, "timestamp")
    return AuditEvent(
        audit_id,
        stage,
        verb,
        request_uri,
        user_agent,
        username,
        source_ips,
        *ref,
        code,
        received_us,
        _time(item, "stageTimestamp"),
        annotations,
        (_mapping(item, "requestObject") or None) if keep_bodies else None,
        (_mapping(item, "responseObject") or None) if keep_bodies else None,
    )
