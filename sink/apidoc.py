"""The OpenAPI 3 document of the sink's HTTP API (served at `GET /openapi.json`): one Python dict, the only
description of the routes' parameters and answers. tests/test_sink_queries.py checks that it lists every route
the app has, and runs schemathesis against the app with it.
"""

from __future__ import annotations

from auditcov.merge.reports.endpointcov import STATUS_CLASSES
from auditcov.sink.ingest import RUN_NAME

VERSION = "1"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: dict[str, dict], optional: dict[str, dict] | None = None, *, more: bool = True) -> dict:
    schema = {"type": "object", "required": list(required), "properties": {**required, **(optional or {})}}
    if not more:
        schema["additionalProperties"] = False
    return schema


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _array(items: dict) -> dict:
    return {"type": "array", "items": items}


STRING, INTEGER, BOOLEAN, NUMBER = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "number"}
TIME = _nullable({"type": "string", "format": "date-time"})
NAMES = _array(STRING)
RANGES = _array({"type": "array", "items": INTEGER, "minItems": 2, "maxItems": 2})
COUNTS = {"type": "object", "additionalProperties": INTEGER}

SCHEMAS: dict[str, dict] = {
    "Error": _object({"error": STRING}),
    "Hits": _object(
        {
            "hits": INTEGER,
            "successful": INTEGER,
            "first": TIME,
            "last": TIME,
            "status": {
                "type": "object",
                "properties": {status: INTEGER for status in STATUS_CLASSES},
                "additionalProperties": False,
            },
        }
    ),
    "HitsByHow": {"type": "object", "additionalProperties": _ref("Hits")},
    "Endpoint": _object(
        {
            "endpoint": STRING,
            "method": STRING,
            "path": STRING,
            "group": _nullable(STRING),
            "version": _nullable(STRING),
            "kind": _nullable(STRING),
            "action": _nullable(STRING),
            "level": {"type": "string", "enum": ["stable", "beta", "alpha"]},
            "category": STRING,
            "deprecated": BOOLEAN,
            "description": STRING,
            "eligible": BOOLEAN,
            "pending": BOOLEAN,
            "ineligible_reason": _nullable(STRING),
        }
    ),
    "TestCode": _object(
        {
            "test": STRING,
            "window": _nullable(_object({"start": STRING, "end": STRING, "from": STRING})),
            "first_hit_only": BOOLEAN,
            "shared_with": NAMES,
            "problems": NAMES,
            "lines_covered": INTEGER,
            "statements_run": INTEGER,
            "files": {"type": "object", "additionalProperties": RANGES},
        }
    ),
    "Counts": _object(
        {
            name: INTEGER
            for name in (
                "endpoints",
                "tested",
                "tested_directly",
                "conformance_tested",
                "eligible",
                "eligible_conformance_tested",
            )
        }
    ),
    "Changes": _object({"gained": NAMES, "lost": NAMES}),
}

SCHEMAS["Runs"] = _object(
    {
        "runs": _array(
            _object(
                {
                    "run": STRING,
                    "created": STRING,
                    "events": INTEGER,
                    "duplicates": INTEGER,
                    "first": TIME,
                    "last": TIME,
                    "tests": INTEGER,
                    "conformance_tests": INTEGER,
                    "snapshots": INTEGER,
                }
            )
        )
    }
)
SCHEMAS["Tests"] = _object(
    {
        "run": STRING,
        "count": INTEGER,
        "tests": _array(
            _object(
                {
                    "test": STRING,
                    "conformance": BOOLEAN,
                    "sigs": NAMES,
                    "endpoints": INTEGER,
                    "hits": INTEGER,
                    "files": INTEGER,
                    "lines": INTEGER,
                    "code": BOOLEAN,
                }
            )
        ),
    }
)
SCHEMAS["Test"] = _object(
    {
        "run": STRING,
        "test": STRING,
        "conformance": BOOLEAN,
        "tags": NAMES,
        "successful_only": BOOLEAN,
        "endpoints": _array(
            _object(
                {
                    "endpoint": STRING,
                    "method": _nullable(STRING),
                    "path": _nullable(STRING),
                    "how": NAMES,
                    "counted": BOOLEAN,
                    "hits": _ref("Hits"),
                    "by_how": _ref("HitsByHow"),
                }
            )
        ),
        "code": _nullable(_ref("TestCode")),
    }
)
SCHEMAS["EndpointTests"] = {
    "allOf": [
        _ref("Endpoint"),
        _object(
            {
                "run": STRING,
                "tested": BOOLEAN,
                "tested_directly": BOOLEAN,
                "conformance_tested": BOOLEAN,
                "successful_only": BOOLEAN,
                "hits": _ref("Hits"),
                "tests": _array(
                    _object(
                        {
                            "test": STRING,
                            "conformance": BOOLEAN,
                            "how": NAMES,
                            "counted": BOOLEAN,
                            "e2e": BOOLEAN,
                            "hits": _ref("Hits"),
                            "by_how": _ref("HitsByHow"),
                        }
                    )
                ),
            }
        ),
    ]
}
SCHEMAS["Code"] = _object(
    {
        "run": STRING,
        "file": STRING,
        "line": _nullable(INTEGER),
        "files": _array(
            _object(
                {
                    "file": STRING,
                    "tests": _array(
                        _object({"test": STRING, "conformance": BOOLEAN, "lines": INTEGER, "ranges": RANGES})
                    ),
                }
            )
        ),
    }
)
_BUCKETS = {"type": "object", "additionalProperties": _ref("Counts")}
SCHEMAS["Summary"] = _object(
    {
        "run": STRING,
        "catalogue": STRING,
        "successful_only": BOOLEAN,
        "totals": {
            "allOf": [
                _ref("Counts"),
                _object(
                    {
                        name: INTEGER
                        for name in ("deprecated", "tests", "conformance_tests", "unmatched_events", "unmapped_events")
                    }
                ),
            ]
        },
        "conformance_eligible": _object(
            {
                "eligible": INTEGER,
                "tested": INTEGER,
                "untested": INTEGER,
                "pending": INTEGER,
                "percent": _nullable(NUMBER),
            }
        ),
        "by_level": _BUCKETS,
        "by_group": _BUCKETS,
        "by_category": _BUCKETS,
        "hits": _ref("Hits"),
        "code": _object({"tests": INTEGER, "files": INTEGER, "lines_covered": INTEGER}),
    }
)
SCHEMAS["Untested"] = _object(
    {
        "run": STRING,
        "successful_only": BOOLEAN,
        "count": INTEGER,
        "endpoints": _array(
            {"allOf": [_ref("Endpoint"), _object({"tested": BOOLEAN, "tests": NAMES, "hits": _ref("Hits")})]}
        ),
    }
)
SCHEMAS["Diff"] = _object(
    {
        "format_version": INTEGER,
        "base": STRING,
        "head": STRING,
        "endpoints": _ref("Changes"),
        "conformance": _ref("Changes"),
        "totals": {
            "type": "object",
            "additionalProperties": _object({"tested": INTEGER, "conformance_tested_eligible": INTEGER}),
        },
        "tests": _object(
            {
                "added": _array(_object({"test": STRING, "endpoints": NAMES})),
                "removed": _array(_object({"test": STRING, "endpoints": NAMES})),
                "changed": _array(
                    _object(
                        {
                            "test": STRING,
                            "endpoints": _ref("Changes"),
                            "lines": _nullable(
                                _object(
                                    {
                                        "gained": INTEGER,
                                        "lost": INTEGER,
                                        "files": {
                                            "type": "object",
                                            "additionalProperties": _object({"gained": RANGES, "lost": RANGES}),
                                        },
                                    }
                                )
                            ),
                        }
                    )
                ),
                "unchanged": INTEGER,
            }
        ),
    }
)
SCHEMAS["AnyObject"] = ANY_OBJECT = {"type": "object"}
SCHEMAS["IngestResult"] = _object({"accepted": INTEGER, "duplicates": INTEGER, "quarantined": INTEGER})
SCHEMAS["Marker"] = _object(
    # Something besides the spaces, tabs and line ends that the sink cuts from either end (app.MARKER_BLANKS).
    {"test": {"type": "string", "pattern": "[^ \t\r\n]"}, "event": {"type": "string", "enum": ["start", "end"]}},
    {"time": {"type": "string", "format": "date-time"}},
)
SCHEMAS["MarkerAnswer"] = _object({"run": STRING, "test": STRING, "event": STRING, "time": STRING})
SCHEMAS["Stats"] = {"type": "object", "properties": {"run": STRING}, "additionalProperties": {}}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    why = {
        400: "bad input: the error says what is wrong",
        401: "the bearer token is missing or wrong",
        404: "no such run, test, endpoint or file: the error says which",
        413: "the body exceeds body_limit",
        415: "the content type is not accepted",
        503: "the sink is stopping, or the store is not writable",
    }
    return {str(code): _json(_ref("Error"), why[code]) for code in codes}


NONEMPTY = {"type": "string", "minLength": 1}


def _path(name: str, description: str) -> dict:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": NONEMPTY}


def _query(name: str, description: str, schema: dict | None = None, *, required: bool = False) -> dict:
    schema = schema or (NONEMPTY if required else STRING)
    return {"name": name, "in": "query", "required": required, "description": description, "schema": schema}


RUN = {**_path("run", "the run's name"), "schema": {"type": "string", "pattern": f"^{RUN_NAME.pattern}$"}}
SUCCESSFUL_ONLY = _query(
    "successful_only", "count as tested only hits answered 1xx, 2xx or 3xx (default false)", {"type": "boolean"}
)
QUERY_SECURITY = [{}, {"queryToken": []}]  # open when no query token is set
INGEST_SECURITY = [{}, {"ingestToken": []}]


def _get(summary: str, schema: dict, *, parameters: list | None = None, errors: tuple = (400, 401, 404)) -> dict:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "security": QUERY_SECURITY,
            "responses": {"200": _json(_ref(schema), summary), **_errors(*errors)},
        }
    }


#: An EventList or an Event (whose items are checked one by one: a bad one is quarantined, not refused), or a JSON
#: array of events; JSON lines under their media types.
_EVENTS = {
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["EventList", "Event"]},
                "apiVersion": {"type": "string", "enum": ["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]},
                "items": {"type": "array"},
            },
        },
        {"type": "array"},
    ]
}
_INGEST_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": _EVENTS},
        **{
            media: {"schema": STRING}
            for media in ("application/x-ndjson", "application/jsonl", "application/jsonlines")
        },
    },
}
_INGEST = {
    "summary": "store audit events: an EventList (audit.k8s.io/v1 or v1beta1), an Event, a JSON array or JSON lines",
    "security": INGEST_SECURITY,
    "requestBody": _INGEST_BODY,
    "responses": {"200": _json(_ref("IngestResult"), "committed"), **_errors(400, 401, 413, 415)},
}
_TEXT = {"text/plain": {"schema": STRING}}

PATHS: dict[str, dict] = {
    "/v1/audit": {"post": _INGEST},
    "/v1/audit/{run}": {"post": {**_INGEST, "parameters": [RUN]}},
    "/v1/runs/{run}/markers": {
        "post": {
            "summary": "record that a test started or ended (time: now when left out)",
            "parameters": [RUN],
            "security": INGEST_SECURITY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Marker")}}},
            "responses": {"200": _json(_ref("MarkerAnswer"), "recorded"), **_errors(400, 401, 413, 415)},
        }
    },
    "/v1/stats": _get("what the store holds", "Stats", parameters=[_query("run", "one run")], errors=(401, 404)),
    "/v1/runs": _get("runs with their counts and time span", "Runs", errors=(401,)),
    "/v1/runs/{run}/tests": _get(
        "the run's tests, each with its endpoint and line counts",
        "Tests",
        parameters=[
            RUN,
            _query("conformance", "only [Conformance] tests (true) or only the others (false)", {"type": "boolean"}),
            _query("sig", "only tests tagged [sig-SIG] (`apps` or `sig-apps`)"),
            _query("q", "only tests whose name holds this text (any case)"),
            SUCCESSFUL_ONLY,
        ],
    ),
    "/v1/runs/{run}/tests/{test}": _get(
        "one test: its endpoints (how, hits, first and last time, status classes) and its code lines per file",
        "Test",
        parameters=[RUN, _path("test", "the test's name, URL-encoded"), SUCCESSFUL_ONLY],
    ),
    "/v1/runs/{run}/endpoints/{operationId}": _get(
        "one endpoint and the tests that hit it, directly and indirectly",
        "EndpointTests",
        parameters=[RUN, _path("operationId", "the endpoint's OpenAPI operationId"), SUCCESSFUL_ONLY],
    ),
    "/v1/runs/{run}/code": _get(
        "the tests that ran a file, or one line of it",
        "Code",
        parameters=[
            RUN,
            _query("file", "the file as the profiles name it, or its end (pkg/x.go)", required=True),
            _query("line", "one line of it", {"type": "integer", "minimum": 1}),
            SUCCESSFUL_ONLY,
        ],
    ),
    "/v1/runs/{run}/summary": _get(
        "endpoint coverage by level, group and category, and conformance-eligible coverage",
        "Summary",
        parameters=[RUN, SUCCESSFUL_ONLY],
    ),
    "/v1/runs/{run}/untested": _get(
        "eligible endpoints no conformance test hit", "Untested", parameters=[RUN, SUCCESSFUL_ONLY]
    ),
    "/v1/diff": _get(
        "endpoints gained and lost, overall and per test, and lines gained and lost per test",
        "Diff",
        parameters=[
            _query("base", "the run compared against", required=True),
            _query("head", "the run compared", required=True),
        ],
    ),
    # The coverage proxy (sink/coverage_routes.py, issue #9): answers described loosely here, exactly there.
    "/v1/runs/{run}/agents": {
        "post": {
            "summary": "a coverage agent registers: {process, kind, address, pid, token?}",
            "parameters": [RUN],
            "security": INGEST_SECURITY,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json(ANY_OBJECT, "registered"), **_errors(400, 401, 413, 415)},
        },
        **_get("the run's agents with their last snapshot and health", "AnyObject", parameters=[RUN], errors=(401,)),
    },
    "/v1/runs/{run}/agents/{process}": {
        "delete": {
            "summary": "an agent says goodbye: marked gone, its snapshots stay",
            "parameters": [RUN, _path("process", "the agent's process name")],
            "security": INGEST_SECURITY,
            "responses": {"200": _json(ANY_OBJECT, "marked gone"), **_errors(400, 401, 404)},
        }
    },
    "/v1/runs/{run}/agents/{process}/data": {
        "post": {
            "summary": "a Python agent's coverage.py data file, stored as per-test lines",
            "parameters": [RUN, _path("process", "the agent's process name")],
            "security": INGEST_SECURITY,
            "requestBody": {"required": True, "content": {"application/vnd.coverage+sqlite": {"schema": STRING}}},
            "responses": {"200": _json(ANY_OBJECT, "stored"), **_errors(400, 401, 413, 415)},
        }
    },
    "/v1/runs/{run}/snapshots": {
        "post": {
            "summary": "a boundary with no test: every live agent of the run is snapshotted",
            "parameters": [RUN],
            "security": INGEST_SECURITY,
            "responses": {"200": _json(ANY_OBJECT, "taken"), **_errors(400, 401)},
        }
    },
    "/v1/runs/{run}/clear": {
        "post": {
            "summary": "clear the counters of the run's agents (or one)",
            "parameters": [RUN, _query("process", "one agent")],
            "security": INGEST_SECURITY,
            "responses": {
                "200": _json(ANY_OBJECT, "cleared"),
                "502": _json(ANY_OBJECT, "some agent failed"),
                **_errors(400, 401, 404),
            },
        }
    },
    "/v1/runs/{run}/coverage": {
        "get": {
            "summary": "the run's coverage now (a Go text profile or lcov), or one test's delta",
            "parameters": [
                RUN,
                _query("format", "text or lcov", {"type": "string", "enum": ["text", "lcov"]}),
                _query("test", "one test"),
            ],
            "security": QUERY_SECURITY,
            "responses": {"200": {"description": "the profile", "content": _TEXT}, **_errors(400, 401, 404)},
        }
    },
    "/": {
        "get": {
            "summary": "the HTML report of a run (without run: the latest)",
            "parameters": [
                _query("run", "the run"),
                _query("base", "a run to compare with (the page's Diff tab)"),
                _query("token", "the query token, kept in a cookie"),
            ],
            "security": QUERY_SECURITY,
            "responses": {
                "200": {"description": "the page", "content": {"text/html": {"schema": STRING}}},
                "303": {"description": "the token is kept in a cookie; the same address without it"},
                "401": {"description": "the token form", "content": {"text/html": {"schema": STRING}}},
                **_errors(404),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "this document",
            "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {}}}}},
        }
    },
    "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok", "content": _TEXT}}}},
    "/readyz": {
        "get": {
            "summary": "the store takes a write",
            "responses": {"200": {"description": "ready", "content": _TEXT}, **_errors(503)},
        }
    },
    "/metrics": {
        "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "metrics", "content": _TEXT}}}
    },
}


def api_document() -> dict:
    """The OpenAPI 3.0 document of every route of the sink."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "auditcov sink",
            "version": VERSION,
            "description": 'Audit webhook sink and per-test coverage queries. Errors are JSON {"error": ...}.',
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "queryToken": {"type": "http", "scheme": "bearer", "description": "query_token_file's token"},
                "ingestToken": {"type": "http", "scheme": "bearer", "description": "ingest_token_file's token"},
            },
        },
    }
