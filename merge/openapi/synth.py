"""Requests a client would send to an endpoint: concrete (verb, requestURI) pairs made from its path template.

For the replay acceptance test and the matcher bench: each form the endpoint's action allows is produced
(a list both plain and as `?watch=true`; connect by its own method, with HEAD sent as `get` + `?method=HEAD`
and OPTIONS as the empty verb, as the apiserver records them; proxy paths with a multi-segment tail).
Parameters are filled with realistic names from a `random.Random` the caller seeds.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from auditcov.merge.openapi.catalogue import Endpoint
from auditcov.merge.openapi.matcher import GREEDY_PARAMETER

_PARAMETER = re.compile(r"\{(\w+)\}")

#: The audit verb each HTTP method of a connect or non-resource operation is recorded with.
_METHOD_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}

_ACTION_VERBS = {
    "get": ["get"],
    "list": ["list", "watch"],
    "watch": ["watch"],
    "watchlist": ["watch"],
    "post": ["create"],
    "put": ["update"],
    "patch": ["patch"],
    "delete": ["delete"],
    "deletecollection": ["deletecollection"],
}

_WORDS = ("web", "cache", "api", "db", "worker", "frontend", "e2e", "test", "pod", "sample")


def random_name(rng: random.Random) -> str:
    """A DNS-label name like the e2e framework makes: `worker-4821` or `e2e-test-k9x2q`."""
    suffix = "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
    return f"{rng.choice(_WORDS)}-{rng.randrange(1000, 9999)}-{suffix}"


def fill_template(path: str, rng: random.Random, fixed: Mapping[str, str] | None = None) -> str:
    """The template with each `{param}` replaced by a name (by `fixed[param]` when given there); a `{path}`
    tail becomes several segments."""

    def value(match: re.Match) -> str:
        if fixed and match.group(1) in fixed:
            return fixed[match.group(1)]
        if match.group(0) == GREEDY_PARAMETER:
            return "/".join(random_name(rng) for _ in range(rng.randint(1, 3)))
        return random_name(rng)

    return _PARAMETER.sub(value, path).rstrip("/") or "/"


def requests_for(
    endpoint: Endpoint, rng: random.Random, fixed: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Every (verb, requestURI) form a client may use for this endpoint (`fixed` as for `fill_template`)."""
    uri = fill_template(endpoint.path, rng, fixed)
    if endpoint.action in _ACTION_VERBS:
        forms = []
        for verb in _ACTION_VERBS[endpoint.action]:
            query = "?watch=true&resourceVersion=1" if (verb == "watch" and endpoint.action == "list") else ""
            forms.append((verb, uri + query))
        return forms
    if endpoint.method == "HEAD":
        return [("get", uri + "?method=HEAD")]
    if endpoint.method == "OPTIONS":
        return [("", uri)]
    if endpoint.action == "connect":
        return [(_METHOD_VERBS[endpoint.method], uri)]
    return [(endpoint.method.lower(), uri)]
