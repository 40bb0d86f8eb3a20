"""Who sent a request, read from its User-Agent: the client product and, for e2e tests, the test and its tags.

The e2e framework sets each test's agent to `<client-go default agent> -- <test name>`, e.g.
`e2e.test/v1.36.0 (linux/amd64) kubernetes/abc1234 -- [sig-apps] Deployment should ... [Conformance]`
(DESIGN.md §3). The client is the product token: the text before the first `/` or space
(`e2e.test`, `kubectl`, `kube-controller-manager`, `live-test-writing`). The test is the text after the first
` -- `; its tags are its `[bracketed]` words, kept with their brackets, in order.

Parsing is cached: a run has few distinct agents and millions of events.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

TEST_SEPARATOR = " -- "
#: The client product of the Kubernetes e2e test binary (DESIGN.md §3).
E2E_CLIENT = "e2e.test"
CONFORMANCE_TAG = "[Conformance]"

_TAG = re.compile(r"\[[^\[\]]+\]")
_PRODUCT_END = re.compile(r"[/\s]")


class Agent(NamedTuple):
    """What a User-Agent says about its sender."""

    client: str
    test: str | None
    tags: tuple[str, ...]
    conformance: bool


def tags_in(test: str) -> tuple[str, ...]:
    """The `[bracketed]` tags in a test name, e.g. `('[sig-apps]', '[Conformance]')`."""
    return tuple(_TAG.findall(test))


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str) -> Agent:
    """Split a User-Agent into client, test name, tags and conformance flag (see the module docstring)."""
    head, separator, test = user_agent.partition(TEST_SEPARATOR)
    head = head.strip()
    client = _PRODUCT_END.split(head, maxsplit=1)[0] if head else ""
    test = test.strip() if separator else ""
    if not test:
        return Agent(client, None, (), False)
    tags = tags_in(test)
    return Agent(client, test, tags, CONFORMANCE_TAG in tags)
