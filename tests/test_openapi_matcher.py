"""The matcher: every rule of DESIGN.md §4 on the 1.36 spec, every operation of four real specs round-tripped,
and the real audit events of tests/fixtures/audit mapped to the operations written down here."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from auditcov.merge.decode import Malformed
from auditcov.merge.eventfiles import AuditFile
from auditcov.merge.events import event_from_json
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.matcher import (
    CACHE_LIMIT,
    UNKNOWN_GROUP_VERSION,
    UNKNOWN_NON_RESOURCE,
    UNKNOWN_RESOURCE,
    Matcher,
)
from auditcov.merge.openapi.synth import requests_for


@pytest.fixture(scope="module")
def matcher(fixtures) -> Matcher:
    return Matcher(load_catalogue(fixtures / "openapi/swagger-v1.36.json.gz"))


@pytest.fixture(scope="module")
def matcher_1_12(fixtures) -> Matcher:
    return Matcher(load_catalogue(fixtures / "openapi/swagger-v1.12.0.json.gz"))


@pytest.mark.parametrize(
    ("verb", "uri", "expected"),
    [
        # verbs -> methods
        ("get", "/api/v1/namespaces/ns-1/pods/web-1", "readCoreV1NamespacedPod"),
        ("list", "/api/v1/namespaces/ns-1/pods?limit=500", "listCoreV1NamespacedPod"),
        ("create", "/api/v1/namespaces/ns-1/pods", "createCoreV1NamespacedPod"),
        ("update", "/api/v1/namespaces/ns-1/pods/web-1", "replaceCoreV1NamespacedPod"),
        ("patch", "/api/v1/namespaces/ns-1/pods/web-1", "patchCoreV1NamespacedPod"),
        ("delete", "/api/v1/namespaces/ns-1/pods/web-1", "deleteCoreV1NamespacedPod"),
        ("deletecollection", "/api/v1/namespaces/ns-1/pods?labelSelector=a%3Db", "deleteCoreV1CollectionNamespacedPod"),
        # a list with ?watch=true is the list operation; /watch/ paths are the deprecated watch operations
        ("watch", "/api/v1/namespaces/ns-1/pods?watch=true&resourceVersion=5", "listCoreV1NamespacedPod"),
        ("watch", "/api/v1/watch/namespaces/ns-1/pods", "watchCoreV1NamespacedPodList"),
        ("watch", "/api/v1/watch/namespaces/ns-1/pods/web-1", "watchCoreV1NamespacedPod"),
        # a fieldSelector on a list names an object in objectRef, but the path says list
        ("list", "/api/v1/namespaces/ns-1/pods?fieldSelector=metadata.name%3Dweb-1", "listCoreV1NamespacedPod"),
        # connect: exec and attach by GET and POST, portforward, proxy with and without a path
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/exec?command=ls", "connectCoreV1GetNamespacedPodExec"),
        ("create", "/api/v1/namespaces/ns-1/pods/web-1/exec?command=ls", "connectCoreV1PostNamespacedPodExec"),
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/attach", "connectCoreV1GetNamespacedPodAttach"),
        ("create", "/api/v1/namespaces/ns-1/pods/web-1/attach", "connectCoreV1PostNamespacedPodAttach"),
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/portforward", "connectCoreV1GetNamespacedPodPortforward"),
        ("create", "/api/v1/namespaces/ns-1/pods/web-1/portforward", "connectCoreV1PostNamespacedPodPortforward"),
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/proxy", "connectCoreV1GetNamespacedPodProxy"),
        ("get", "/api/v1/namespaces/ns-1/pods/web-1:8080/proxy/a/b/c", "connectCoreV1GetNamespacedPodProxyWithPath"),
        ("delete", "/api/v1/namespaces/ns-1/services/svc/proxy/x", "connectCoreV1DeleteNamespacedServiceProxyWithPath"),
        ("patch", "/api/v1/nodes/node-1/proxy/metrics", "connectCoreV1PatchNodeProxyWithPath"),
        # HEAD is recorded as get: the e2e proxy tests put the method in the query; OPTIONS has no verb
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/proxy?method=HEAD", "connectCoreV1HeadNamespacedPodProxy"),
        (
            "get",
            "/api/v1/namespaces/ns-1/services/s/proxy/p?method=HEAD",
            "connectCoreV1HeadNamespacedServiceProxyWithPath",
        ),
        ("", "/api/v1/namespaces/ns-1/pods/web-1/proxy/x", "connectCoreV1OptionsNamespacedPodProxyWithPath"),
        # ... but an object whose name ends in HEAD is read with GET: the path has no HEAD operation
        ("get", "/api/v1/namespaces/ns-1/configmaps/git-HEAD", "readCoreV1NamespacedConfigMap"),
        ("head", "/version", "getCodeVersion"),
        # namespace status and finalize: {name} where other paths have {namespace}
        ("get", "/api/v1/namespaces/ns-1/status", "readCoreV1NamespaceStatus"),
        ("update", "/api/v1/namespaces/ns-1/status", "replaceCoreV1NamespaceStatus"),
        ("update", "/api/v1/namespaces/ns-1/finalize", "replaceCoreV1NamespaceFinalize"),
        # literal segments beat parameters, and names that look like literals are still names
        ("get", "/api/v1/namespaces/ns-1/pods/status", "readCoreV1NamespacedPod"),
        ("get", "/api/v1/namespaces/status", "readCoreV1Namespace"),
        ("get", "/api/v1/namespaces/pods/pods/pods", "readCoreV1NamespacedPod"),
        ("get", "/api/v1/namespaces/ns-1/pods/web-1/status", "readCoreV1NamespacedPodStatus"),
        # non-resource URLs, with or without the trailing slash the spec writes
        ("get", "/api", "getCoreAPIVersions"),
        ("get", "/api/v1", "getCoreV1APIResources"),
        ("get", "/apis", "getAPIVersions"),
        ("get", "/apis/", "getAPIVersions"),
        ("get", "/apis/apps", "getAppsAPIGroup"),
        ("get", "/apis/apps/v1?timeout=32s", "getAppsV1APIResources"),
        ("get", "/version", "getCodeVersion"),
        ("get", "/.well-known/openid-configuration", "getServiceAccountIssuerOpenIDConfiguration"),
        ("get", "/openid/v1/jwks", "getServiceAccountIssuerOpenIDKeyset"),
        ("get", "/logs/kube-apiserver.log", "logFileHandler"),
        # other groups
        ("get", "/apis/apps/v1/namespaces/ns-1/deployments/d/scale", "readAppsV1NamespacedDeploymentScale"),
        (
            "create",
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            "createAuthorizationV1SelfSubjectAccessReview",
        ),
    ],
)
def test_rules(matcher, verb, uri, expected):
    assert matcher.match(verb, uri) == (expected, None)


@pytest.mark.parametrize(
    ("verb", "uri", "reason"),
    [
        ("list", "/apis/stable.example.com/v1/namespaces/ns-1/crontabs", UNKNOWN_GROUP_VERSION),  # a CRD
        ("get", "/apis/metrics.k8s.io/v1beta1/nodes", UNKNOWN_GROUP_VERSION),  # an aggregated API
        ("get", "/apis/apps/v9", UNKNOWN_GROUP_VERSION),
        ("get", "/apis/apps/v1/widgets", UNKNOWN_RESOURCE),
        ("get", "/api/v1/namespaces/ns-1/widgets", UNKNOWN_RESOURCE),
        ("get", "/healthz", UNKNOWN_NON_RESOURCE),
        ("get", "/metrics", UNKNOWN_NON_RESOURCE),
        ("get", "/openapi/v2", UNKNOWN_NON_RESOURCE),
        ("get", "/", UNKNOWN_NON_RESOURCE),
        ("proxy", "/api/v1/proxy/namespaces/ns-1/pods/web-1", "verb 'proxy' has no HTTP method"),
        (
            "create",
            "/api/v1/namespaces/ns-1/pods/web-1",
            "no POST operation at /api/v1/namespaces/{namespace}/pods/{name}",
        ),
        ("", "/version", "no OPTIONS operation at /version/"),
    ],
)
def test_unmatched_events_keep_a_reason(matcher, verb, uri, reason):
    assert matcher.match(verb, uri) == (None, reason)


@pytest.mark.parametrize(
    "spec", ["swagger-v1.36.json.gz", "swagger-v1.27.0.json.gz", "swagger-v1.12.0.json.gz", "v3-v1.27.0"]
)
def test_every_operation_of_a_real_spec_round_trips(fixtures, spec):
    catalogue = load_catalogue(fixtures / "openapi" / spec)
    matcher = Matcher(catalogue)
    rng = random.Random(spec)
    wrong = [
        (endpoint.operation_id, verb, uri, matcher.match(verb, uri))
        for endpoint in catalogue.endpoints.values()
        for verb, uri in requests_for(endpoint, rng)
        if matcher.match(verb, uri) != (endpoint.operation_id, None)
    ]
    assert wrong == []


@settings(max_examples=300, deadline=None)
@given(
    verb=st.sampled_from(["get", "list", "watch", "create", "update", "patch", "delete", "", "post", "head", "x"]),
    segments=st.lists(
        st.sampled_from(["api", "apis", "v1", "namespaces", "pods", "proxy", "status", "apps", "n-1", "x"]), max_size=9
    ),
    query=st.sampled_from(["", "?watch=true", "?method=HEAD", "?a=b&c=d"]),
)
def test_cached_answer_is_the_uncached_answer(matcher, verb, segments, query):
    uri = "/" + "/".join(segments) + query
    first = matcher.match(verb, uri)
    assert Matcher(matcher.catalogue).match(verb, uri) == first  # a fresh matcher has nothing cached
    assert matcher.match(verb, uri) == first
    operation_id, reason = first
    assert (operation_id is None) != (reason is None)


def test_caches_are_bounded(matcher):
    fresh = Matcher(matcher.catalogue)
    for number in range(CACHE_LIMIT + 10):
        fresh.match("get", f"/api/v1/namespaces/ns-{number}/pods/p")
    assert len(fresh._by_path) <= CACHE_LIMIT
    assert len(fresh._by_shape) == 1


# Real audit events -> the operations they are, per fixture file, in file order. The 2017-2019 events are
# matched against the v1.12.0 spec; the 2020 falco events and the 2025 elastic ones against the 1.36 spec.
REAL_EVENTS = {
    "apisnoop/e2e-event-grep-output.txt": ["listCoreV1NamespacedServiceAccount"],  # watch=true on a list
    "apisnoop/example-user-agent.log": [
        "getCoreAPIVersions",
        "getAPIVersions",
        "listCoreV1NamespacedPod",
        "listCoreV1Node",
        "listCoreV1NamespacedServiceAccount",
        "listCoreV1NamespacedSecret",
        UNKNOWN_NON_RESOURCE,  # GET /openapi/v2
        "listExtensionsV1beta1NamespacedDeployment",
    ],
    "audit2rbac/demo.log": [
        *["listCoreV1NamespacedPod"] * 6,
        "listCoreV1Node",
        "listCoreV1PodForAllNamespaces",
        "listCoreV1PodForAllNamespaces",
        "getCoreAPIVersions",
        "getAPIVersions",
        "getApiregistrationV1beta1APIResources",
        "getExtensionsV1beta1APIResources",
        "getAppsV1beta1APIResources",
        "getAppsV1beta2APIResources",
        "getAuthenticationV1APIResources",
        "getAuthenticationV1beta1APIResources",
        "getAuthorizationV1APIResources",
        "getAuthorizationV1beta1APIResources",
        "getAutoscalingV1APIResources",
        "getBatchV1APIResources",
        "getBatchV1beta1APIResources",
        "getCertificatesV1beta1APIResources",
        "getNetworkingV1APIResources",
        "getPolicyV1beta1APIResources",
        "getRbacAuthorizationV1APIResources",
        "getRbacAuthorizationV1beta1APIResources",
        "getStorageV1APIResources",
        "getStorageV1beta1APIResources",
        "getAdmissionregistrationV1alpha1APIResources",
        "getApiextensionsV1beta1APIResources",
        "getCoreV1APIResources",
        "listCoreV1NamespacedPod",
        "listCoreV1Node",
        "listCoreV1NamespacedPod",
        "listCoreV1NamespacedConfigMap",
        "listCoreV1NamespacedSecret",
    ],
    # The anonymised sample records a `get` on the pods collection: by its path that is the list operation.
    # Its GKE record (line 4) is quarantined by the reader and is no event.
    "elastic/test-audit.log": [
        "listCoreV1NamespacedPod",
        "readCoordinationV1NamespacedLease",
        "readCoordinationV1NamespacedLease",
        "replaceCoordinationV1NamespacedLease",
    ],
    "elastic/test-kube-audit.log": ["replaceCoordinationV1NamespacedLease"],
    "falco/anonymous_creates_namespace_foo.json": ["createCoreV1Namespace"],
    "falco/attach_cluster_admin_role.json": ["createRbacAuthorizationV1ClusterRoleBinding"],
    "falco/attach_pod.json": ["connectCoreV1PostNamespacedPodAttach"],
    "falco/create_cluster_role_pod_exec.json": ["createRbacAuthorizationV1ClusterRole"],
    "falco/create_cluster_role_wildcard_resources.json": ["createRbacAuthorizationV1ClusterRole"],
    "falco/create_cluster_role_wildcard_verbs.json": ["createRbacAuthorizationV1ClusterRole"],
    "falco/create_cluster_role_write_privileges.json": ["createRbacAuthorizationV1ClusterRole"],
    "falco/create_clusterrole.json": ["createRbacAuthorizationV1ClusterRole"],
    "falco/create_clusterrolebinding.json": ["createRbacAuthorizationV1ClusterRoleBinding"],
    "falco/create_configmap.json": ["createCoreV1NamespacedConfigMap"],
    "falco/create_configmap_no_sensitive_values.json": ["createCoreV1NamespacedConfigMap"],
    "falco/create_configmap_sensitive_values.json": ["createCoreV1NamespacedConfigMap"] * 6,
    "falco/create_deployment.json": ["createExtensionsV1beta1NamespacedDeployment"],
    "falco/create_kube_system_secret.json": ["createCoreV1NamespacedSecret"],
    "falco/create_nginx_pod_hostnetwork.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_nohostnetwork.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_privileged.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_privileged_2nd_container.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_sensitive_mount.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_sensitive_mount_2nd_container.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_unprivileged.json": ["createCoreV1NamespacedPod"],
    "falco/create_nginx_pod_unsensitive_mount.json": ["readCoreV1NamespacedPod"],
    "falco/create_nginx_service_nodeport.json": ["createCoreV1NamespacedService"],
    "falco/create_nginx_service_nonodeport.json": ["createCoreV1NamespacedService"],
    "falco/create_pod_kube_public_namespace.json": ["createCoreV1NamespacedPod"],
    "falco/create_pod_kube_system_namespace.json": ["createCoreV1NamespacedPod"],
    "falco/create_secret.json": ["createCoreV1NamespacedSecret"],
    "falco/create_service.json": ["createCoreV1NamespacedService"],
    "falco/create_service_account_token_secret.json": ["createCoreV1NamespacedSecret"],
    "falco/create_serviceaccount.json": ["createCoreV1NamespacedServiceAccount"],
    "falco/create_serviceaccount_kube_public_namespace.json": ["createCoreV1NamespacedServiceAccount"],
    "falco/create_serviceaccount_kube_system_namespace.json": ["createCoreV1NamespacedServiceAccount"],
    "falco/delete_cluster_role_kube_aggregator.json": ["deleteRbacAuthorizationV1ClusterRole"],
    "falco/delete_clusterrole.json": ["deleteRbacAuthorizationV1ClusterRole"],
    "falco/delete_clusterrolebinding.json": ["deleteRbacAuthorizationV1ClusterRoleBinding"],
    "falco/delete_configmap.json": ["deleteCoreV1NamespacedConfigMap"],
    "falco/delete_deployment.json": ["deleteExtensionsV1beta1NamespacedDeployment"],
    "falco/delete_namespace_foo.json": ["deleteCoreV1Namespace"],
    "falco/delete_secret.json": ["deleteCoreV1NamespacedSecret"],
    "falco/delete_service.json": ["deleteCoreV1NamespacedService"],
    "falco/delete_serviceaccount.json": ["deleteCoreV1NamespacedServiceAccount"],
    "falco/exec_pod.json": ["connectCoreV1PostNamespacedPodExec"],
    "falco/fal_01_003.json": [],  # deliberately malformed: no event
    "falco/minikube_creates_namespace_foo.json": ["createCoreV1Namespace"],
    "falco/modify_cluster_role_node_problem_detector.json": ["patchRbacAuthorizationV1ClusterRole"],
    "falco/some-user_creates_namespace_foo.json": ["createCoreV1Namespace"],
}

_2020 = 1577836800 * 1_000_000  # 2020-01-01T00:00:00Z in microseconds


def _events_in(path: Path):
    if path.name == "e2e-event-grep-output.txt":  # grep output: `<file>:<event JSON>`
        return [event_from_json(orjson.loads(path.read_text().partition(":")[2]))]
    return [event_from_json(entry.item) for entry in AuditFile(path) if not isinstance(entry.item, Malformed)]


def test_every_audit_fixture_is_listed(fixtures):
    files = {str(p.relative_to(fixtures / "audit")) for p in (fixtures / "audit").rglob("*") if p.is_file()}
    assert files - {"audit2rbac/demo-policy.yaml"} == set(REAL_EVENTS)


@pytest.mark.parametrize("name", sorted(REAL_EVENTS))
def test_real_events_map_to_the_expected_operations(fixtures, matcher, matcher_1_12, name):
    got = []
    for event in _events_in(fixtures / "audit" / name):
        spec_matcher = matcher_1_12 if event.received_us < _2020 else matcher
        operation_id, reason = spec_matcher.match(event.verb, event.request_uri)
        got.append(operation_id or reason)
    assert got == REAL_EVENTS[name]
