"""Conformance eligibility, and the Kubernetes conformance lists it is decided from.

An endpoint is eligible for conformance when it is stable, not deprecated, and not in the ineligible list
(`test/conformance/testdata/ineligible_endpoints.yaml`: items with endpoint, reason, link). Endpoints in the
pending list (`pending_eligible_endpoints.yaml`: a list of operationIds) stay eligible but are shown apart.
`conformance.yaml` (testname, codename, description, release, file per test) names the conformance tests.

Copies of the three files ship in `merge/data/`; a user's own files in the same formats replace them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from auditcov.merge.errors import SpecError
from auditcov.merge.openapi.catalogue import Endpoint


@dataclass(frozen=True, slots=True)
class ConformanceTest:
    """One entry of conformance.yaml; `codename` is the name the e2e user agent carries."""

    codename: str
    testname: str
    release: str
    file: str


@dataclass(slots=True)
class Eligibility:
    """The ineligible endpoints with their reasons, and the pending ones."""

    ineligible: dict[str, str]
    pending: frozenset[str]

    def is_eligible(self, endpoint: Endpoint) -> bool:
        return endpoint.level == "stable" and not endpoint.deprecated and endpoint.operation_id not in self.ineligible

    def is_pending(self, endpoint: Endpoint) -> bool:
        return endpoint.operation_id in self.pending


def load_eligibility(ineligible: str | Path | None = None, pending: str | Path | None = None) -> Eligibility:
    """Read the two lists; either left out is the copy shipped with auditcov."""
    ineligible_items = _read_yaml(ineligible, "ineligible_endpoints.yaml")
    pending_items = _read_yaml(pending, "pending_eligible_endpoints.yaml") or []
    reasons: dict[str, str] = {}
    for index, item in enumerate(_as_list(ineligible_items, "ineligible endpoints")):
        if not isinstance(item, dict) or not isinstance(item.get("endpoint"), str):
            raise SpecError(f"ineligible endpoints item {index}: needs an 'endpoint' string")
        reasons[item["endpoint"]] = str(item.get("reason") or "")
    for index, item in enumerate(_as_list(pending_items, "pending endpoints")):
        if not isinstance(item, str):
            raise SpecError(f"pending endpoints item {index}: must be an operationId string")
    return Eligibility(ineligible=reasons, pending=frozenset(pending_items))


def load_conformance_tests(path: str | Path | None = None) -> dict[str, ConformanceTest]:
    """conformance.yaml by codename; left out, the copy shipped with auditcov."""
    tests: dict[str, ConformanceTest] = {}
    for index, item in enumerate(_as_list(_read_yaml(path, "conformance.yaml"), "conformance tests")):
        if not isinstance(item, dict) or not isinstance(item.get("codename"), str):
            raise SpecError(f"conformance tests item {index}: needs a 'codename' string")
        tests[item["codename"]] = ConformanceTest(
            codename=item["codename"],
            testname=str(item.get("testname") or ""),
            release=str(item.get("release") or ""),
            file=str(item.get("file") or ""),
        )
    return tests


def _read_yaml(path: str | Path | None, default_name: str) -> object:
    try:
        if path is None:
            text = resources.files("auditcov.merge.data").joinpath(default_name).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return yaml.safe_load(text)
    except OSError as exc:
        raise SpecError(f"{path or default_name}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path or default_name}: not YAML: {exc}") from exc


def _as_list(value: object, what: str) -> list:
    if not isinstance(value, list):
        raise SpecError(f"{what}: expected a YAML list, got {type(value).__name__}")
    return value
