"""User-agent parsing: client, test name, tags and conformance, on real agents from the fixtures."""

from __future__ import annotations

import orjson
from sink_support import FIXTURES, e2e_event

from auditcov.merge.useragent import parse_user_agent, tags_in


def test_e2e_agent_from_a_real_ci_run_names_its_test_and_tags():
    agent = parse_user_agent(e2e_event()["userAgent"])
    assert agent.client == "e2e.test"
    assert (
        agent.test == "[sig-storage] Secrets should be consumable from pods in volume [NodeConformance] [Conformance]"
    )
    assert agent.tags == ("[sig-storage]", "[NodeConformance]", "[Conformance]")
    assert agent.conformance is True


def test_kubectl_agent_with_a_stack_trace_is_a_client_without_a_test():
    lines = (FIXTURES / "audit/apisnoop/example-user-agent.log").read_text().splitlines()
    agents = {parse_user_agent(orjson.loads(line)["userAgent"]) for line in lines if line.strip()}
    assert {(agent.client, agent.test, agent.conformance) for agent in agents} == {("kubectl", None, False)}


def test_other_agents():
    assert parse_user_agent("live-test-writing") == ("live-test-writing", None, (), False)
    assert parse_user_agent("") == ("", None, (), False)
    controller = parse_user_agent("kube-controller-manager/v1.36.0 (linux/amd64) kubernetes/abc/system:serviceaccount")
    assert controller.client == "kube-controller-manager"
    assert controller.test is None


def test_non_conformance_test_and_text_after_the_first_separator():
    agent = parse_user_agent("e2e.test/v1.36.0 (linux/amd64) kubernetes/abc -- [sig-apps] [Serial] a -- b [Slow]")
    assert agent.test == "[sig-apps] [Serial] a -- b [Slow]"
    assert agent.tags == ("[sig-apps]", "[Serial]", "[Slow]")
    assert agent.conformance is False
    assert tags_in("no tags here") == ()
