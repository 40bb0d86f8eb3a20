"""The operator's files in config/ parse and hold the kinds and fields they should, and agree with each other and
with the sink's settings. (`make e2e` shows the real apiservers accept them: tests/e2e/deployfiles.py.)"""

from __future__ import annotations

import urllib.parse
from pathlib import Path, PurePosixPath

import pytest
import yaml

from auditcov.sink.settings import SETTINGS, Settings

CONFIG = Path(__file__).parent.parent / "config"
DEPLOY = CONFIG / "deploy"
ALL_STAGES = ["RequestReceived", "ResponseStarted", "ResponseComplete", "Panic"]
KUBECONFIGS = ["webhook.kubeconfig", "webhook-mtls.kubeconfig", "kind-webhook.kubeconfig"]


def load(path: Path) -> dict:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path} is not one YAML mapping"
    return document


def test_policy_keeps_request_received_and_the_lighter_one_omits_it():
    policy = load(CONFIG / "policy.yaml")
    assert (policy["apiVersion"], policy["kind"]) == ("audit.k8s.io/v1", "Policy")
    assert policy["rules"] == [{"level": "Metadata"}]
    assert "omitStages" not in policy
    assert "RequestReceived" in (CONFIG / "policy.yaml").read_text().split("apiVersion:")[0], "say why it is kept"
    lighter = load(CONFIG / "policy-endpoints.yaml")
    assert (lighter["apiVersion"], lighter["kind"]) == ("audit.k8s.io/v1", "Policy")
    assert lighter["rules"] == [{"level": "Metadata"}]
    assert lighter["omitStages"] == ["RequestReceived"]


@pytest.mark.parametrize("name", KUBECONFIGS)
def test_webhook_kubeconfigs_name_one_cluster_user_and_context(name):
    config = load(CONFIG / name)
    assert (config["apiVersion"], config["kind"]) == ("v1", "Config")
    (cluster,), (user,), (context,) = config["clusters"], config["users"], config["contexts"]
    assert context["name"] == config["current-context"]
    assert context["context"] == {"cluster": cluster["name"], "user": user["name"]}
    server = urllib.parse.urlsplit(cluster["cluster"]["server"])
    assert server.path == "/v1/audit" and server.port
    Settings(listen=f"{server.hostname}:{server.port}")  # a listen address the sink accepts
    if name == "webhook-mtls.kubeconfig":
        assert server.scheme == "https"
        files = [cluster["cluster"]["certificate-authority"], user["user"]["client-certificate"]]
        files.append(user["user"]["client-key"])
        # Relative: client-go resolves them against the kubeconfig's folder (tests/e2e links them there).
        assert all(not Path(file).is_absolute() for file in files)
    else:
        assert server.scheme == "http"
        assert user["user"] == {}


def test_kind_config_mounts_config_and_wires_the_audit_flags_for_both_kubeadm_versions():
    cluster = load(CONFIG / "kind.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("kind.x-k8s.io/v1alpha4", "Cluster")
    (node,) = [node for node in cluster["nodes"] if node["role"] == "control-plane"]
    (mount,) = node["extraMounts"]
    # kind resolves a relative hostPath against the working directory: the repository's root.
    assert (CONFIG.parent / mount["hostPath"]).resolve() == CONFIG.resolve() and mount["readOnly"]
    inside = PurePosixPath(mount["containerPath"])
    patches = {patch["apiVersion"]: patch for patch in map(yaml.safe_load, node["kubeadmConfigPatches"])}
    assert set(patches) == {"kubeadm.k8s.io/v1beta3", "kubeadm.k8s.io/v1beta4"}
    flags = []
    for version, patch in patches.items():
        assert patch["kind"] == "ClusterConfiguration"
        args = patch["apiServer"]["extraArgs"]
        # v1beta3: a map of flag to value; v1beta4: a list of name/value pairs.
        pairs = args if version.endswith("v1beta3") else {arg["name"]: arg["value"] for arg in args}
        assert all(isinstance(value, str) for value in pairs.values()), "kubeadm takes text values"
        flags.append(pairs)
        (volume,) = patch["apiServer"]["extraVolumes"]
        assert volume["hostPath"] == volume["mountPath"] == str(inside) and volume["readOnly"]
    assert flags[0] == flags[1]
    assert flags[0]["audit-webhook-mode"] in ("batch", "blocking")
    for flag, expected in [
        ("audit-policy-file", "policy.yaml"),
        ("audit-webhook-config-file", "kind-webhook.kubeconfig"),
    ]:
        path = PurePosixPath(flags[0][flag])
        assert path.parent == inside and path.name == expected
        assert (CONFIG / path.name).is_file()


def test_auditsink_sends_every_stage_to_the_deployed_service():
    sink = load(CONFIG / "auditsink.yaml")
    assert (sink["apiVersion"], sink["kind"]) == ("auditregistration.k8s.io/v1alpha1", "AuditSink")
    assert sink["spec"]["policy"] == {"level": "Metadata", "stages": ALL_STAGES}
    client = sink["spec"]["webhook"]["clientConfig"]
    service = deploy_resources()["Service"]
    assert client["service"] == {"namespace": namespace(), "name": service["metadata"]["name"], "path": "/v1/audit"}
    # The AuditSink names no port: the apiserver then calls the Service's port 443.
    assert [port["port"] for port in service["spec"]["ports"]] == [443]
    assert set(sink["spec"]["webhook"]["throttle"]) == {"qps", "burst"}


def kustomization() -> dict:
    return load(DEPLOY / "kustomization.yaml")


def namespace() -> str:
    return kustomization()["namespace"]


def deploy_resources() -> dict[str, dict]:
    """kind -> the resource, for each file the kustomization lists."""
    resources = {}
    for name in kustomization()["resources"]:
        assert (DEPLOY / name).is_file(), f"config/deploy/kustomization.yaml lists {name}, which is missing"
        resource = load(DEPLOY / name)
        assert resource["kind"] not in resources
        resources[resource["kind"]] = resource
    return resources


def test_kustomization_lists_the_resources_to_run_the_sink():
    kust = kustomization()
    assert (kust["apiVersion"], kust["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    resources = deploy_resources()
    assert set(resources) == {"Namespace", "Secret", "PersistentVolumeClaim", "Deployment", "Service"}
    assert resources["Namespace"]["metadata"]["name"] == kust["namespace"]
    assert resources["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all("namespace" not in resource["metadata"] for resource in resources.values()), "the kustomization sets it"
    image = resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert [entry["name"] for entry in kust["images"]] == [image], "an overlay's `images` must find the image"


def test_deployment_probes_requests_runs_non_root_and_writes_only_to_the_store():
    resources = deploy_resources()
    deployment = resources["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert (
        deployment["spec"]["selector"]["matchLabels"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        assert container[probe]["httpGet"]["path"] == path and container[probe]["httpGet"]["port"] in ports
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    writable = [mount for mount in container["volumeMounts"] if not mount.get("readOnly")]
    (store,) = writable
    claim = volumes[store["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim == resources["PersistentVolumeClaim"]["metadata"]["name"]

    # Every variable is a setting's; the files it names are in the mounted Secret; the sink listens on the port.
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    settings = {setting.name: setting for setting in SETTINGS}
    values = {name.removeprefix("AUDITCOV_").lower(): value for name, value in env.items()}
    assert set(values) <= set(settings), f"not settings: {set(values) - set(settings)}"
    sink = Settings(**values)
    assert sink.tls and sink.address()[1] in ports.values()
    assert PurePosixPath(sink.db).parent == PurePosixPath(store["mountPath"])
    secret = resources["Secret"]
    secret_mount = next(mount for mount in container["volumeMounts"] if "secret" in volumes[mount["name"]])
    assert volumes[secret_mount["name"]]["secret"]["secretName"] == secret["metadata"]["name"]
    for key in ("tls_cert", "tls_key", "ingest_token_file"):
        path = PurePosixPath(values[key])
        assert path.parent == PurePosixPath(secret_mount["mountPath"]) and path.name in secret["stringData"]


def test_service_reaches_the_pods_https_port():
    resources = deploy_resources()
    service, pod = resources["Service"], resources["Deployment"]["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    port_names = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
