"""The operator's files of config/ against a real apiserver: server-side dry runs of config/deploy (as it is, and
through an overlay) and of config/auditsink.yaml, and the AuditSink the dynamic-audit test registers from it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml
from controlplane import CONFIG, Certificates, ControlPlane

DEPLOY = CONFIG / "deploy"
AUDITSINK = CONFIG / "auditsink.yaml"
DRY_RUN = "(server dry run)"


def deploy_dry_run(plane: ControlPlane, work: Path) -> list[str]:
    """What `plane` finds wrong in `kubectl apply --dry-run=server -k config/deploy`, and in the same through an
    overlay written in `work`: kubectl's error, each warning, or a resource left out; [] when nothing.

    A dry run creates nothing, so the namespace is created first, for real (otherwise every namespaced object
    would be rejected for want of it), and deleted after: the run ends with the namespaces it began with.
    """
    resources = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    namespace = str(DEPLOY / "namespace.yaml")
    problems = []
    try:
        plane.kubectl("apply", "-f", namespace)
        for kustomization in (DEPLOY, write_overlay(work)):
            done = plane.kubectl("apply", "--dry-run=server", "-k", str(kustomization))
            problems += [f"{kustomization}: {line}" for line in done.stderr.splitlines() if line.strip()]
            applied = [line for line in done.stdout.splitlines() if line.endswith(DRY_RUN)]
            if len(applied) != len(resources):
                problems.append(f"{kustomization}: {len(resources)} resources, but kubectl said:\n{done.stdout}")
    except RuntimeError as exc:
        problems.append(str(exc))
    finally:
        plane.kubectl("delete", "-f", namespace, "--ignore-not-found", "--wait=false")
    return problems


def write_overlay(work: Path) -> Path:
    """An overlay of config/deploy in `work`, as an operator writes one: another image, a bigger store, and the
    Secret filled with a serving certificate for the Service's name and a token.

    kustomize reads only files under the overlay's folder, so the certificate is made there (by a CA of its own).
    """
    serving = Certificates(work).issue("tls", "auditcov.auditcov.svc", user="auditcov")
    (work / "ingest-token").write_text("e2e-ingest-token\n")
    overlay = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        # kustomize takes a base only by a relative path.
        "resources": [os.path.relpath(DEPLOY, work)],
        "images": [{"name": "auditcov", "newName": "registry.example.com/auditcov", "newTag": "e2e"}],
        "patches": [
            {
                "target": {"kind": "PersistentVolumeClaim", "name": "auditcov-store"},
                "patch": '[{"op": "replace", "path": "/spec/resources/requests/storage", "value": "50Gi"}]',
            }
        ],
        "secretGenerator": [
            {
                "name": "auditcov",
                "behavior": "replace",
                "files": [f"tls.crt={serving.cert.name}", f"tls.key={serving.key.name}", "ingest-token"],
            }
        ],
    }
    (work / "kustomization.yaml").write_text(yaml.safe_dump(overlay))
    return work


def audit_sink(url: str, ca: Path) -> str:
    """config/auditsink.yaml sending to `url` and verifying it with `ca`: its clientConfig replaced, the policy
    and throttle as they are."""
    sink = yaml.safe_load(AUDITSINK.read_text())
    sink["spec"]["webhook"]["clientConfig"] = {"url": url, "caBundle": base64.b64encode(ca.read_bytes()).decode()}
    return yaml.safe_dump(sink)
