"""The operator's files (the audit policies and webhook kubeconfigs of config/) as the start-up banner shows them.

The files are the one source: the banner prints the policy as config/policy.yaml says it, and the kubeconfig for
this sink is the config/ kubeconfig that fits its settings (plain HTTP, or mTLS) with this sink's URL and
credentials put in. They are looked for in ./config (the repository: `make run`) and /etc/auditcov (the image).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from auditcov.sink.settings import Settings

#: Where the files are: the repository's config/ folder (relative, as config/sink.toml is), then the image's.
PLACES = (Path("config"), Path("/etc/auditcov"))
POLICY = "policy.yaml"
ENDPOINTS_POLICY = "policy-endpoints.yaml"
HTTP_KUBECONFIG = "webhook.kubeconfig"
MTLS_KUBECONFIG = "webhook-mtls.kubeconfig"


def operator_files(places: tuple[Path, ...] = PLACES) -> Path | None:
    """The first folder of `places` holding the audit policy, or None (auditcov installed without them)."""
    return next((place for place in places if (place / POLICY).is_file()), None)


def policy_text(folder: Path) -> str:
    """The audit policy of `folder` without its comments (they explain it; the banner names the file)."""
    lines = (folder / POLICY).read_text().splitlines()
    return "\n".join(line for line in lines if line.strip() and not line.lstrip().startswith("#"))


def template_name(settings: Settings) -> str:
    """The config/ kubeconfig a kube-apiserver uses for a sink with these settings."""
    return MTLS_KUBECONFIG if settings.tls else HTTP_KUBECONFIG


def webhook_kubeconfig(folder: Path, settings: Settings, url: str) -> str:
    """The kubeconfig `template_name(settings)` of `folder`, sending to `url` (the run: `default_run`), with
    placeholders naming the files its certificates and token come from."""
    config = yaml.safe_load((folder / template_name(settings)).read_text())
    cluster, user = config["clusters"][0]["cluster"], {}
    cluster["server"] = f"{url}/v1/audit/{settings.default_run}"
    if settings.tls:
        cluster["certificate-authority"] = f"<the CA that signed {settings.tls_cert}>"
    if settings.client_ca:
        user["client-certificate"] = f"<a client certificate signed by {settings.client_ca}>"
        user["client-key"] = "<its key>"
    if settings.ingest_token_file:
        user["token"] = f"<the token in {settings.ingest_token_file}>"
    config["users"][0]["user"] = user
    return yaml.safe_dump(config, sort_keys=False).rstrip()
