"""The one matcher: an audit event's verb and requestURI to an OpenAPI operationId, or a reason it has none.

`Matcher(catalogue).match(verb, request_uri)` returns `(operation_id, None)` or `(None, reason)`; nothing is
dropped. The rules (DESIGN.md §4):

- Verb to method: get, list, watch -> GET; create -> POST; update -> PUT; patch -> PATCH; delete,
  deletecollection -> DELETE; non-resource URLs carry the lowercased method as their verb. A HEAD request is
  recorded as `get`, so like APISnoop a `get` whose requestURI ends in `HEAD` (the e2e proxy tests send
  `...?method=HEAD`) is taken as HEAD where the path has a HEAD operation (else as GET), and an empty verb
  (how the apiserver records OPTIONS) as OPTIONS.
- Only the path of the requestURI is matched, never objectRef; a trailing slash is ignored (the spec writes
  discovery paths as `/apis/apps/v1/`, clients call `/apis/apps/v1`). A list with `?watch=true` is therefore
  the list operation, and `/watch/` paths the deprecated watch operations.
- Path templates live in a segment trie. Literal segments beat `{param}` segments, a `{param}` takes one
  segment, and a trailing `{path}` (proxy) takes the rest of the path. Different parameter names at one
  position share a node, so `/api/v1/namespaces/x/status` finds `/api/v1/namespaces/{name}/status`.
  When the best path has no operation for the method, less specific paths are tried before giving up.

Speed: results are cached by request *shape*: the method and the path with every segment that is not a
literal somewhere in the catalogue replaced by `*`. Names vary per event but shapes repeat, and the trie walk
on a shape gives the same answer as on the path itself (a non-literal segment can only ever match a
parameter), so the cache is exact. In front of it sits a cache by (verb, path, ends in HEAD) without the
query: much traffic repeats a path exactly (polls, leases, status updates), and that key is cheaper to make.
Making a shape is itself cached by the path's parent, since a test's new objects share their collection's path.
"""

from __future__ import annotations

from itertools import repeat

from auditcov.merge.openapi.catalogue import Catalogue

#: Audit verb -> HTTP method. Resource verbs, then the lowercased methods of non-resource requests.
VERB_METHODS = {
    "get": "GET",
    "list": "GET",
    "watch": "GET",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
    "": "OPTIONS",
    "post": "POST",
    "put": "PUT",
    "head": "HEAD",
    "options": "OPTIONS",
}

#: A trailing template segment that takes the rest of the path (the proxy subresources).
GREEDY_PARAMETER = "{path}"

#: Why a path matches no template ("not in spec"), by where it goes astray.
UNKNOWN_GROUP_VERSION = (
    "not in spec: API group/version not in the catalogue (a CRD, an aggregated API, or a version the spec lacks)"
)
UNKNOWN_RESOURCE = "not in spec: no path template matches (a resource or subresource the catalogue lacks)"
UNKNOWN_NON_RESOURCE = "not in spec: non-resource URL not in the catalogue"

#: The cache is cleared when it holds this many shapes, so odd traffic cannot grow it without bound.
CACHE_LIMIT = 200_000

_WILDCARDS = repeat("*")  # stateless and endless, so one is shared by every call


class _Node:
    __slots__ = ("literals", "operations", "parameter", "tail")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.parameter: _Node | None = None
        self.operations: dict[str, tuple[str, str]] = {}  # method -> (operationId, path template)
        self.tail: dict[str, tuple[str, str]] = {}  # the same, for a greedy {path} after this node


class Matcher:
    """Maps (verb, requestURI) to an operationId; see the module docstring for the rules."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._root = _Node()
        literals: set[str] = set()
        for endpoint in catalogue.endpoints.values():
            segments = _segments(endpoint.path)
            node = self._root
            greedy = bool(segments) and segments[-1] == GREEDY_PARAMETER
            for segment in segments[:-1] if greedy else segments:
                if segment.startswith("{"):
                    node.parameter = node.parameter or _Node()
                    node = node.parameter
                else:
                    literals.add(segment)
                    node = node.literals.setdefault(segment, _Node())
            target = node.tail if greedy else node.operations
            target[endpoint.method] = (endpoint.operation_id, endpoint.path)
        # segment -> itself for literals; `map(self._literal, parts, _WILDCARDS)` then builds the shape in C.
        self._literal = {segment: segment for segment in literals}.get
        # Two exact caches: by (verb, path, ends in HEAD), for the many requests that repeat a path (polls,
        # leases, status updates), and by shape, for new names.
        self._by_path: dict[tuple[str, str, bool], tuple[str | None, str | None]] = {}
        self._by_shape: dict[tuple[str, ...], tuple[str | None, str | None]] = {}
        # The shape of a path's parent (all but its last segment): a test's objects share their collection's path,
        # so a new name costs one segment's look-up instead of the whole path's.
        self._by_parent: dict[str, tuple[str, ...]] = {}

    def match(self, verb: str, request_uri: str) -> tuple[str | None, str | None]:
        """(operationId, None) when the event maps to an operation, else (None, the reason)."""
        query = request_uri.find("?")
        path = request_uri if query < 0 else request_uri[:query]
        key = (verb, path, request_uri.endswith("HEAD"))
        result = self._by_path.get(key)
        if result is None:
            result = self._by_shape_of(key)
        return result

    def _by_shape_of(self, key: tuple[str, str, bool]) -> tuple[str | None, str | None]:
        verb, path, ends_in_head = key
        method = VERB_METHODS.get(verb)
        if method is None:
            return None, f"verb {verb[:40]!r} has no HTTP method"
        if method == "GET" and ends_in_head:
            method = "HEAD"
        parent, _, last = path.strip("/").rpartition("/")
        prefix = self._by_parent.get(parent)
        if prefix is None:
            if len(self._by_parent) >= CACHE_LIMIT:
                self._by_parent.clear()
            prefix = tuple(map(self._literal, parent.split("/"), _WILDCARDS)) if parent else ()
            self._by_parent[parent] = prefix
        shape = (method, *prefix, self._literal(last, "*"))
        result = self._by_shape.get(shape)
        if result is None:
            if len(self._by_shape) >= CACHE_LIMIT:
                self._by_shape.clear()
            result = self._by_shape[shape] = self._walk(method, shape[1:])
        if len(self._by_path) >= CACHE_LIMIT:
            self._by_path.clear()
        self._by_path[key] = result
        return result

    def _walk(self, method: str, parts: tuple[str, ...]) -> tuple[str | None, str | None]:
        first_template = None
        for operations in _candidates(self._root, parts, 0):
            hit = operations.get(method)
            if hit is not None:
                return hit[0], None
            first_template = first_template or next(iter(operations.values()))[1]
        if first_template is not None:
            if method == "HEAD":
                # A `get` whose URI merely ends in "HEAD" (an object named so), or a real HEAD on a resource,
                # which the apiserver serves as GET: the GET operation is the one it reached.
                return self._walk("GET", parts)
            return None, f"no {method} operation at {first_template}"
        return None, _not_in_spec(self._root, parts)


def _segments(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []


def _candidates(node: _Node, parts: tuple[str, ...], index: int):
    """Operation tables whose template matches parts[index:], best (most literal) first."""
    if index == len(parts):
        if node.operations:
            yield node.operations
        return
    child = node.literals.get(parts[index])
    if child is not None:
        yield from _candidates(child, parts, index + 1)
    if node.parameter is not None:
        yield from _candidates(node.parameter, parts, index + 1)
    if node.tail:
        yield node.tail


def _not_in_spec(root: _Node, parts: tuple[str, ...]) -> str:
    top = parts[0] if parts else ""
    if top == "apis" and len(parts) >= 3:
        group = root.literals.get("apis")
        group = group and group.literals.get(parts[1])
        if group is None or group.literals.get(parts[2]) is None:
            return UNKNOWN_GROUP_VERSION
    if top in ("api", "apis"):
        return UNKNOWN_RESOURCE
    return UNKNOWN_NON_RESOURCE
