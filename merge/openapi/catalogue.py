"""The endpoint catalogue: every operation of a Kubernetes OpenAPI v2 or v3 spec as an `Endpoint` record.

Sources (`load_catalogue`): an OpenAPI v2 file (swagger.json, optionally gzipped); one OpenAPI v3 document; a
folder of v3 documents laid out as served under `/openapi/v3/` (api/v1.json, apis/apps/v1.json, ...).
Live clusters are read by `merge.openapi.live`, which hands the documents it fetched to `catalogue_from_documents`.

Field rules (APISnoop's where it has one, DESIGN.md §4 where APISnoop is known to be wrong):
- group, version, kind come from `x-kubernetes-group-version-kind` and are None when the operation has none
  (discovery and other non-resource endpoints), as in APISnoop's coverage files.
- level comes from the *served group version*: the version segment of the path (`/api/v1`, `/apis/g/v1beta2`),
  else the GVK version; `v1beta2` is beta, `v2alpha1` alpha, anything else (or no version at all) stable.
  APISnoop instead searches the whole path for "alpha"/"beta".
- category is the first tag up to its first `_` (APISnoop's rule).
- deprecated: the `/watch/` operations, an operation marked `deprecated: true`, or one whose description says
  "deprecated".
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from auditcov.merge.errors import SpecError

#: The HTTP methods an OpenAPI path item may hold, in the order reports list them.
METHODS = ("get", "put", "post", "delete", "options", "head", "patch")

LEVELS = ("stable", "beta", "alpha")

_VERSION = re.compile(r"^v\d+((?P<level>alpha|beta)\d*)?$")
_DEPRECATED = re.compile(r"\bdeprecated\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One OpenAPI operation."""

    operation_id: str
    method: str  # upper case: GET, PUT, POST, DELETE, OPTIONS, HEAD, PATCH
    path: str  # the template as the spec writes it, e.g. /api/v1/namespaces/{namespace}/pods/{name}
    group: str | None  # "" is the core group; None when the spec gives no group-version-kind
    version: str | None
    kind: str | None
    action: str | None  # x-kubernetes-action
    level: str  # stable, beta or alpha
    category: str
    deprecated: bool
    description: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class Catalogue:
    """The endpoints of one spec, by operationId, with where they came from."""

    source: str
    endpoints: dict[str, Endpoint]

    def summary(self) -> dict:
        """Counts by level, group and action (deprecated endpoints counted apart)."""
        current = [e for e in self.endpoints.values() if not e.deprecated]
        return {
            "source": self.source,
            "endpoints": len(self.endpoints),
            "deprecated": len(self.endpoints) - len(current),
            "by_level": _counts(e.level for e in current),
            "by_group": _counts(group_label(e.group) for e in current),
            "by_action": _counts(e.action or "(none)" for e in current),
        }


def group_label(group: str | None) -> str:
    """How reports name a group: the core group is "core", endpoints without a group "(none)"."""
    if group is None:
        return "(none)"
    return group or "core"


def level_of(version: str | None) -> str:
    """alpha, beta or stable from an API version (`v1beta2` -> beta); no version or an odd one is stable."""
    match = _VERSION.match(version or "")
    if match and match.group("level"):
        return match.group("level")
    return "stable"


def served_version(path: str) -> str | None:
    """The group version a path is served under: v1 for /api/v1/..., v1beta1 for /apis/g/v1beta1/..."""
    parts = path.strip("/").split("/")
    if parts[0] == "api" and len(parts) > 1:
        return parts[1]
    if parts[0] == "apis" and len(parts) > 2:
        return parts[2]
    return None


def catalogue_from_documents(documents: Iterable[tuple[str, object]], source: str) -> Catalogue:
    """Build a catalogue from (where, decoded document) pairs; one operationId must mean one operation."""
    endpoints: dict[str, Endpoint] = {}
    for where, document in documents:
        for endpoint in _endpoints_of(document, where):
            known = endpoints.get(endpoint.operation_id)
            if known is not None and (known.method, known.path) != (endpoint.method, endpoint.path):
                raise SpecError(
                    f"{where}: operationId {endpoint.operation_id} is {endpoint.method} {endpoint.path} "
                    f"here but {known.method} {known.path} elsewhere"
                )
            endpoints[endpoint.operation_id] = endpoint
    if not endpoints:
        raise SpecError(f"{source}: no OpenAPI operations found")
    return Catalogue(source=source, endpoints=endpoints)


def load_catalogue(source: str | Path) -> Catalogue:
    """Read a spec file or a folder of v3 documents (see the module docstring)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".json", ".json.gz")))
        if not files:
            raise SpecError(f"{path}: folder holds no .json OpenAPI documents")
        return catalogue_from_documents(((str(f), read_document(f)) for f in files), str(path))
    if not path.exists():
        raise SpecError(f"{path}: no such file or folder")
    return catalogue_from_documents([(str(path), read_document(path))], str(path))


def read_document(path: Path) -> object:
    """Decode one JSON document, gunzipping it when its name ends in .gz."""
    try:
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        return orjson.loads(raw)
    except (OSError, EOFError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"{path}: not JSON: {exc}") from exc


def _endpoints_of(document: object, where: str) -> Iterator[Endpoint]:
    if not isinstance(document, dict) or not ("swagger" in document or "openapi" in document):
        raise SpecError(f"{where}: not an OpenAPI document (no 'swagger' or 'openapi' field)")
    paths = document.get("paths")
    if not isinstance(paths, dict):
        raise SpecError(f"{where}: 'paths' must be an object")
    for path, item in paths.items():
        if not isinstance(item, dict):
            raise SpecError(f"{where}: paths[{path!r}] must be an object")
        for method in METHODS:
            operation = item.get(method)
            if operation is not None:
                yield _endpoint(path, method, operation, f"{where}: {method.upper()} {path}")


def _endpoint(path: str, method: str, operation: object, where: str) -> Endpoint:
    if not isinstance(operation, dict):
        raise SpecError(f"{where}: the operation must be an object")
    operation_id = operation.get("operationId")
    if not isinstance(operation_id, str) or not operation_id:
        raise SpecError(f"{where}: operationId is missing")
    gvk = operation.get("x-kubernetes-group-version-kind") or {}
    if not isinstance(gvk, dict):
        raise SpecError(f"{where}: x-kubernetes-group-version-kind must be an object")
    tags = operation.get("tags") or []
    description = operation.get("description") or ""
    return Endpoint(
        operation_id=operation_id,
        method=method.upper(),
        path=path,
        group=gvk.get("group"),
        version=gvk.get("version"),
        kind=gvk.get("kind"),
        action=operation.get("x-kubernetes-action"),
        level=level_of(served_version(path) or gvk.get("version")),
        category=str(tags[0]).split("_", 1)[0] if tags else "",
        deprecated="/watch/" in path or operation.get("deprecated") is True or bool(_DEPRECATED.search(description)),
        description=description,
    )


def _counts(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items(), key=lambda kv: (-kv[1], kv[0])))
