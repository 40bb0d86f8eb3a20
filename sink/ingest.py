"""Audit items to stored rows: validation, test attribution and idempotent writes, shared by the live sink and
offline imports.

`Ingestor(db, keep_bodies=..., matcher=...)` is the one way events enter the store:

- `prepare(run, items)` (pure Python, no I/O) checks each item with `event_from_json` (unless it is an
  `AuditEvent` already), reads its user agent
  (`merge.useragent`), notes namespaces created by tests and the tests seen, and sets aside every invalid item
  with its reason;
- `write(batch)` stores a prepared batch inside the caller's open transaction and returns the counts;
- `ingest(run, items)` does both in one transaction of its own (for `auditcov import` and other offline use).

The event identity is (run, requestReceivedTimestamp, auditID, stage) (see `merge.store`): `insert_or_ignore`
makes a retried batch store nothing twice, and what it skipped is counted as duplicates, persistently, in
`runs.duplicates`. Invalid items go to the quarantine table, raw, with their reason: as the bytes received when
they came as bytes (as text when those are UTF-8, else base64, `quarantine.raw_encoding`), identified by the
SHA-256 of those bytes. Without `keep_bodies`, a quarantined item is stored without its requestObject and
responseObject, like an event.

Endpoint matching plugs in here: a `matcher` with `match(verb, request_uri) -> (operation_id, reason)` fills
`events.operation_id` / `events.unmatched_reason`; without one both stay NULL.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
import orjson
import sqlite_utils

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import AuditcovError, BadEventError
from auditcov.merge.events import OBJECT_REF_FIELDS, AuditEvent, event_from_json, item_json, json_text, now_us
from auditcov.merge.rawjson import JSONShapeError, children, skip_whitespace
from auditcov.merge.store import ensure_run, insert_or_ignore, transaction
from auditcov.merge.useragent import CONFORMANCE_TAG, parse_user_agent, tags_in

EVENT_COLUMNS = (
    "run", "audit_id", "stage", "verb", "request_uri", "user_agent", "username", "source_ips",
    *OBJECT_REF_FIELDS, "code", "received_us", "stage_us", "client", "test", "operation_id", "unmatched_reason",
    "annotations", "request_object", "response_object",
)  # fmt: skip
#: What a run may be called (check_run_name); the OpenAPI document (sink/apidoc.py) states the same pattern.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class Matcher(Protocol):
    """What the ingest path needs of the endpoint matcher."""

    def match(self, verb: str, request_uri: str) -> tuple[str | None, str | None]:
        """The OpenAPI operationId, or None and the reason it matches none."""


@dataclass(slots=True)
class IngestResult:
    """What became of a batch's items: newly stored, already stored, or quarantined."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "quarantined": self.quarantined}


@dataclass(slots=True)
class PreparedBatch:
    """A batch turned into rows, ready for `Ingestor.write`."""

    run: str
    received_us: int
    events: list[tuple] = field(default_factory=list)  # in EVENT_COLUMNS order
    tests: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (tags JSON, conformance)
    namespaces: list[tuple[str, str, str, int | None]] = field(default_factory=list)  # run, namespace, test, at
    # run, at, reason, raw, digest, raw_encoding
    quarantine: list[tuple[str, int, str, str, str, str]] = field(default_factory=list)


def check_run_name(run: str) -> str:
    """A run name as used in URLs and file names: letters, digits, `.`, `_`, `-`; at most 128."""
    if not RUN_NAME.fullmatch(run):
        raise AuditcovError(
            f"run name {run[:140]!r} is not 1-128 letters, digits, '.', '_' or '-' (starting with a letter or digit)"
        )
    return run


class Ingestor:
    """Validates, attributes and stores audit items in one store (see the module docstring)."""

    def __init__(self, db: sqlite_utils.Database, *, keep_bodies: bool = False, matcher: Matcher | None = None):
        self.db = db
        self.keep_bodies = keep_bodies
        self.matcher = matcher

    def ingest(self, run: str, items: list[object]) -> IngestResult:
        """Prepare and store `items` in a transaction of its own; return the counts once committed."""
        return self.commit(self.prepare(run, items))

    def commit(self, batch: PreparedBatch) -> IngestResult:
        """Store a prepared batch in a transaction of its own; return the counts once committed."""
        with transaction(self.db.conn):
            return self.write(batch)

    def prepare(self, run: str, items: Sequence[object]) -> PreparedBatch:
        """Rows for the valid items, quarantine rows for the others; no I/O.

        Items are `AuditEvent`s already checked (`merge.decode.decode_event_list`) or decoded JSON, checked here.
        """
        batch = PreparedBatch(check_run_name(run), now_us())
        rows = batch.events
        tests = batch.tests
        keep_bodies = self.keep_bodies
        matcher = self.matcher
        for item in items:
            if item.__class__ is AuditEvent:
                event = item
            elif item.__class__ is Malformed:
                self._quarantine(batch, item, item.reason)
                continue
            else:
                try:
                    event = event_from_json(item)
                except BadEventError as exc:
                    self._quarantine(batch, item, str(exc))
                    continue
            agent = parse_user_agent(event.user_agent)
            test = agent.test
            if test is not None:
                if test not in tests:
                    tests[test] = _test_row(agent.tags)
                if event.verb == "create" and event.resource == "namespaces":
                    self._note_namespace(batch, test, event)
            operation_id = unmatched_reason = None
            if matcher is not None:
                operation_id, unmatched_reason = matcher.match(event.verb, event.request_uri)
            annotations = event.annotations
            rows.append((
                run, event.audit_id, event.stage, event.verb, event.request_uri, event.user_agent, event.username,
                _to_json(event.source_ips or []), *event.object_ref_values, event.code, event.received_us,
                event.stage_us, agent.client,
                test, operation_id, unmatched_reason, _to_json(annotations) if annotations else None,
                json_text(event.request_object) if keep_bodies else None,
                json_text(event.response_object) if keep_bodies else None,
            ))  # fmt: skip
        return batch

    def write(self, batch: PreparedBatch, db: sqlite_utils.Database | None = None) -> IngestResult:
        """Store a prepared batch inside the caller's open transaction (on `db`, by default the ingestor's own
        store); return the counts."""
        conn = (db or self.db).conn
        run = batch.run
        ensure_run(conn, run, batch.received_us)
        accepted = insert_or_ignore(conn, "events", EVENT_COLUMNS, batch.events)
        duplicates = len(batch.events) - accepted
        if duplicates:
            conn.execute("UPDATE runs SET duplicates = duplicates + ? WHERE name = ?", (duplicates, run))
        tests = [(run, name, tags, conformance) for name, (tags, conformance) in batch.tests.items()]
        insert_or_ignore(conn, "tests", ("run", "name", "tags", "conformance"), tests)
        insert_or_ignore(conn, "namespaces", ("run", "namespace", "test", "created_us"), batch.namespaces)
        insert_or_ignore(conn, "quarantine", QUARANTINE_COLUMNS, batch.quarantine)
        return IngestResult(accepted, duplicates, len(batch.quarantine))

    def record_marker(self, run: str, test: str, event: str, at_us: int) -> None:
        """Store a test boundary (a later marker of the same test and kind replaces the earlier one)."""
        if event not in ("start", "end"):
            raise AuditcovError(f"marker event {event[:32]!r} is not 'start' or 'end'")
        if not test:
            raise AuditcovError("marker test name is empty")
        conn = self.db.conn
        ensure_run(conn, check_run_name(run), now_us())
        conn.execute(
            "INSERT OR IGNORE INTO tests (run, name, tags, conformance) VALUES (?, ?, ?, ?)",
            (run, test, *_test_row(tags_in(test))),
        )
        conn.execute(
            "INSERT OR REPLACE INTO markers (run, test, event, at_us) VALUES (?, ?, ?, ?)", (run, test, event, at_us)
        )

    def _quarantine(self, batch: PreparedBatch, item: object, reason: str) -> None:
        """Set an item aside with its reason: its bytes identify it; without keep_bodies, its bodies stay out."""
        raw = item.raw if item.__class__ is Malformed else item_json(item)
        data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest()
        if not self.keep_bodies:
            data, cut = without_bodies(data)
            if cut:
                reason = f"{reason} (stored without {cut}: keep_bodies is off)"
        try:
            text, encoding = data.decode(), "text"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(data).decode(), "base64"
        batch.quarantine.append((batch.run, batch.received_us, reason, text, digest, encoding))

    @staticmethod
    def _note_namespace(batch: PreparedBatch, test: str, event: AuditEvent) -> None:
        """A test's client created a namespace (2xx only: a 409 means someone else's namespace already exists)."""
        if event.subresource is not None or event.code is None or not 200 <= event.code < 300:
            return
        # Creations by generateName carry no objectRef.name on older apiservers; the response names it.
        name = event.name or _object_name(event.response_object) or _object_name(event.request_object)
        if name:
            batch.namespaces.append((batch.run, name, test, event.received_us))


QUARANTINE_COLUMNS = ("run", "received_us", "reason", "raw", "digest", "raw_encoding")
#: The members of an event that may hold Secrets.
BODY_KEYS = (b"requestObject", b"responseObject")


def without_bodies(data: bytes) -> tuple[bytes, str]:
    """An item's bytes without its requestObject and responseObject members, and what was left out ("" when
    nothing was). An item too broken to find its members in is cut where the first of them begins."""
    if b"\\u" not in data and not any(key in data for key in BODY_KEYS):
        return data, ""
    start = skip_whitespace(data, 0)
    try:
        members, end = children(data, start) if data[start : start + 1] == b"{" else ([], 0)
    except JSONShapeError:
        members = []
    if not members:
        found = [at for key in BODY_KEYS if (at := data.find(b'"' + key)) >= 0]
        if not found:  # only an escape brought it here; an escaped key in a broken item cannot be told
            return data, ""
        return data[: min(found)], "its bodies (it is cut where they begin)"
    kept = [m for m in members if _member_name(m.key) not in BODY_KEYS]
    if len(kept) == len(members):
        return data, ""
    inner = b", ".join(data[m.head : m.end] for m in kept)
    return data[:start] + b"{" + inner + b"}" + data[end:], "its requestObject/responseObject"


def _member_name(key: bytes) -> bytes:
    """A member's name as bytes, escapes decoded (`"request\\u004fbject"` is requestObject too)."""
    try:
        return orjson.loads(key).encode()
    except (orjson.JSONDecodeError, AttributeError, UnicodeEncodeError):
        return key


def _test_row(tags: tuple[str, ...]) -> tuple[str, int]:
    """The `tests` columns a test's tags give: tags as JSON, and the conformance flag."""
    return _to_json(tags), int(CONFORMANCE_TAG in tags)


def _object_name(raw: msgspec.Raw) -> str | None:
    """`metadata.name` of an undecoded object, if it has one."""
    obj = msgspec.json.decode(raw) if raw else None
    if isinstance(obj, dict) and isinstance(meta := obj.get("metadata"), dict):
        name = meta.get("name")
        return name if isinstance(name, str) and name else None
    return None


def _to_json(value: object) -> str:
    """A value as JSON text, for a TEXT column (`merge.events.json_text` gives an undecoded value's text)."""
    return orjson.dumps(value).decode()
