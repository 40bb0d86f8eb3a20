"""The one audit event model: what auditcov keeps of a Kubernetes audit event, and how JSON becomes one.

An `AuditEvent` is built from one decoded JSON item (an `audit.k8s.io/v1` or `v1beta1` Event) by
`event_from_json`, which raises `BadEventError` naming the field that is wrong. Everything downstream (the
sink, `auditcov import`, the matcher, reports) reads this model and nothing else.

Times are kept as integer microseconds since the Unix epoch (UTC): the apiserver writes RFC 3339 with
microseconds, and integers compare and index cheaply in SQLite.

`requestObject` and `responseObject` may hold Secrets, so they are kept only when the caller asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

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
        return parse_time(value)
    except ValueError:
        raise BadEventError(f"{key} is not an RFC 3339 time: {value[:64]!r}") from None


def event_from_json(item: object, *, keep_bodies: bool = False) -> AuditEvent:
    """Build an `AuditEvent` from one decoded audit event; raise `BadEventError` saying what is wrong."""
    if not isinstance(item, dict):
        raise BadEventError(f"an event must be a JSON object, not {type(item).__name__}")
    stage = _text(item, "stage", required=True)
    if stage not in STAGES:
        raise BadEventError(f"stage {stage[:64]!r} is not one of {', '.join(sorted(STAGES))}")
    user = _mapping(item, "user")
    object_ref = _mapping(item, "objectRef")
    status = _mapping(item, "responseStatus")
    code = status.get("code")
    if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
        raise BadEventError(f"responseStatus.code must be an integer, not {type(code).__name__}")
    source_ips = item.get("sourceIPs") or []
    if not isinstance(source_ips, list) or not all(isinstance(ip, str) for ip in source_ips):
        raise BadEventError("sourceIPs must be a list of strings")
    annotations = item.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        raise BadEventError(f"annotations must be an object, not {type(annotations).__name__}")
    # v1beta1 events may carry only `timestamp`; it is the closest thing to the receive time they have.
    received_us = _time(item, "requestReceivedTimestamp")
    if received_us is None:
        received_us = _time(item, "timestamp")
    return AuditEvent(
        audit_id=_text(item, "auditID", required=True),
        stage=stage,
        verb=_text(item, "verb"),
        request_uri=_text(item, "requestURI"),
        user_agent=_text(item, "userAgent"),
        username=_optional_text(user, "username", "user") or "",
        source_ips=source_ips,
        namespace=_optional_text(object_ref, "namespace", "objectRef"),
        resource=_optional_text(object_ref, "resource", "objectRef"),
        subresource=_optional_text(object_ref, "subresource", "objectRef"),
        name=_optional_text(object_ref, "name", "objectRef"),
        api_group=_optional_text(object_ref, "apiGroup", "objectRef"),
        api_version=_optional_text(object_ref, "apiVersion", "objectRef"),
        code=code,
        received_us=received_us,
        stage_us=_time(item, "stageTimestamp"),
        annotations=annotations or None,
        request_object=_mapping(item, "requestObject") or None if keep_bodies else None,
        response_object=_mapping(item, "responseObject") or None if keep_bodies else None,
    )
