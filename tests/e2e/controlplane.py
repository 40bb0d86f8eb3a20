"""A real Kubernetes control plane on loopback for the end-to-end test.

`ControlPlane` starts etcd, kube-apiserver and kube-controller-manager (built by hack/e2e/build.sh) in one work
directory, with real certificates (trustme), a service-account signing key, an admin client certificate, the
audit policy config/policy.yaml and the audit log file, plus the audit flags it is given: `webhook_audit` makes
those for a static audit webhook (mTLS) with config/webhook-mtls.kubeconfig; `DYNAMIC_AUDIT` those for a 1.18
apiserver's AuditSink objects. The files of config/ are used as they are, never rewritten.
Everything listens on 127.0.0.1 only; `stop()` ends exactly the processes it started.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import orjson
import trustme
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KUBE_VERSION = os.environ.get("KUBE_VERSION", "v1.36.3")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "e2e.test")

#: The operator's files (config/), used as they are. The policy is Metadata for everything at every stage: the
#: comparison with the audit log then covers RequestReceived and ResponseStarted events too.
CONFIG = Path(__file__).resolve().parents[2] / "config"
AUDIT_POLICY = CONFIG / "policy.yaml"
WEBHOOK_KUBECONFIG = CONFIG / "webhook-mtls.kubeconfig"


#: Dynamic audit (Kubernetes 1.13 to 1.18): AuditSink objects register webhooks at run time. 1.18 also still
#: serves plain HTTP on 127.0.0.1:8080 unless told not to.
DYNAMIC_AUDIT = [
    "--audit-dynamic-configuration",
    "--feature-gates=DynamicAuditing=true",
    "--runtime-config=auditregistration.k8s.io/v1alpha1=true",
    "--insecure-port=0",
]


def binary_dir(version: str = KUBE_VERSION) -> Path:
    """Where hack/e2e/build.sh puts a release's binaries (AUDITCOV_E2E_BIN overrides for the pinned one)."""
    if "AUDITCOV_E2E_BIN" in os.environ and version == KUBE_VERSION:
        return Path(os.environ["AUDITCOV_E2E_BIN"])
    cache = os.environ.get("AUDITCOV_E2E_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "auditcov-e2e"
    )
    return Path(cache, "bin", version)


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not os.access(binary_dir() / name, os.X_OK)]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path) -> Path:
    """A kubeconfig with one cluster, one client-certificate user and a current context joining them."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "e2e", "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass(frozen=True)
class Identity:
    """A certificate and its key on disk."""

    cert: Path
    key: Path


class Certificates:
    """One CA that signs every serving and client certificate of the test, written under `directory`."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self._ca = trustme.CA(organization_name="auditcov e2e")
        self.ca = directory / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca))

    def issue(self, name: str, *hosts: str, user: str, groups: str | None = None) -> Identity:
        """A certificate valid for `hosts` (serving) and as client `user` in `groups` (the CN and O)."""
        # With no identity trustme writes an empty SAN extension, which Go's x509 parser rejects: name the
        # certificate itself then.
        leaf = self._ca.issue_cert(*(hosts or [f"{name}.auditcov-e2e"]), common_name=user, organization_name=groups)
        identity = Identity(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        leaf.cert_chain_pems[0].write_to_path(str(identity.cert))
        leaf.private_key_pem.write_to_path(str(identity.key))
        return identity

    def client_context(self, identity: Identity) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(identity.cert), str(identity.key))
        return context


def service_account_key(path: Path) -> Path:
    """An RSA key that signs (private half) and verifies (the apiserver derives the public half) SA tokens."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


class Process:
    """A started child process whose output goes to `<work>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], work: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = work / f"{name}.log"
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)

    def check_running(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.name} exited with status {self.popen.returncode}; end of its log:\n{tail}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (a graceful shutdown: the apiserver flushes its audit backends), then SIGKILL after `timeout`."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def wait_until(what: str, ready, process: Process, timeout: float = 120) -> None:
    """Poll `ready()` until it is true; fail early when `process` dies, and after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_running()
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s; see {process.log}")


def webhook_port() -> int:
    """The port of the sink config/webhook-mtls.kubeconfig sends to (on 127.0.0.1): auditcov must listen there."""
    server = yaml.safe_load(WEBHOOK_KUBECONFIG.read_text())["clusters"][0]["cluster"]["server"]
    return urllib.parse.urlsplit(server).port


def webhook_audit(work: Path, certs: Certificates, mode: str) -> list[str]:
    """kube-apiserver flags that send every audit event in `mode` (batch, blocking) where
    config/webhook-mtls.kubeconfig says, with a client certificate (mTLS) and the server checked against the
    test CA.

    The kubeconfig names its certificate files relative to its own folder, and client-go resolves them against
    the path it was given: a link to it in work/webhook/, beside links named as it names them to the test CA and
    a client certificate, makes it use those as it is.
    """
    folder = work / "webhook"
    folder.mkdir()
    config = folder / WEBHOOK_KUBECONFIG.name
    config.symlink_to(WEBHOOK_KUBECONFIG)
    document = yaml.safe_load(WEBHOOK_KUBECONFIG.read_text())
    cluster, user = document["clusters"][0]["cluster"], document["users"][0]["user"]
    client = certs.issue("audit-webhook-client", user="kube-apiserver-audit")
    for name, target in [
        (cluster["certificate-authority"], certs.ca),
        (user["client-certificate"], client.cert),
        (user["client-key"], client.key),
    ]:
        (folder / name).symlink_to(target)
    return [
        f"--audit-webhook-config-file={config}",
        f"--audit-webhook-mode={mode}",
        # Shorter than the 30s default so events arrive while the test runs, not all at shutdown.
        "--audit-webhook-batch-max-wait=2s",
        # Without it, watches still open at SIGTERM complete after the audit webhook has shut down, and the
        # apiserver drops their ResponseComplete events (logged as "audit backend shut down").
        "--shutdown-watch-termination-grace-period=10s",
    ]


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, auditing to a file and as `audit_flags` say.

    `apiserver` is another kube-apiserver binary: of the pinned release (a coverage build), or of an older one
    (`controller_manager=False`: the pinned controller manager may not run against an older apiserver).
    `apiserver_env` is added to the apiserver's environment (a coverage build's agent settings).
    """

    def __init__(
        self,
        work: Path,
        certs: Certificates,
        audit_flags: list[str],
        apiserver: Path | None = None,
        *,
        controller_manager: bool = True,
        apiserver_env: dict[str, str] | None = None,
    ) -> None:
        self.work = work
        self.certs = certs
        self.bin = binary_dir()
        self._apiserver = apiserver
        self._controller_manager = controller_manager
        self._apiserver_env = apiserver_env
        self.port = free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.audit_log = work / "audit.log"
        self.admin = certs.issue("admin", user="auditcov-e2e-admin", groups="system:masters")
        self.kubeconfig = write_kubeconfig(work / "admin.kubeconfig", self.server, certs.ca, *_pair(self.admin))
        self._audit_flags = audit_flags
        self._processes: list[Process] = []

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start_etcd()
            self._start_apiserver()
            if self._controller_manager:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop in reverse order, so the apiserver shuts down (and flushes its audit events) before etcd."""
        while self._processes:
            self._processes.pop().stop()

    def namespaces(self) -> set[str]:
        """The names of the namespaces that exist now (terminating ones included)."""
        listing = orjson.loads(self.get("/api/v1/namespaces"))
        return {item["metadata"]["name"] for item in listing["items"]}

    def wait_for_namespaces(self, expected: set[str], timeout: float = 600) -> None:
        """Wait until the namespaces are `expected` again: the e2e framework deletes each test's namespace as the
        test ends, and kube-controller-manager finalizes it afterwards. Stopping it before then would cut the
        last tests' clean-up short, and their indirect endpoints would depend on the tests' order."""
        manager = next(process for process in self._processes if process.name == "kube-controller-manager")
        wait_until(f"namespaces back to {sorted(expected)}", lambda: self.namespaces() <= expected, manager, timeout)

    def stop_apiserver(self) -> int:
        """Stop the controller manager, let the apiserver go idle, then stop it, leaving etcd; returns the
        apiserver's exit status.

        A request still running when the apiserver shuts down can finish after its audit backends have closed,
        and its ResponseComplete event is then dropped (logged as "audit backend shut down"): waiting for the
        requests of the stopped controller manager to end first keeps the shutdown from losing events.
        """
        while self._processes and self._processes[-1].name != "kube-apiserver":
            self._processes.pop().stop()
        apiserver = self._processes[-1]
        # Requests executing now, per priority level (API Priority and Fairness); the scrape itself is one.
        executing = "apiserver_flowcontrol_current_executing_requests"
        wait_until("an idle apiserver", lambda: self.metric(executing) <= 1, apiserver)
        return self._processes.pop().stop()

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(name, argv, self.work, env={**os.environ, **env} if env else None)
        self._processes.append(process)
        return process

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.bin / "etcd"),
                f"--data-dir={self.work / 'etcd-data'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                # A throwaway test database on a shared machine: durability buys nothing here.
                "--unsafe-no-fsync",
            ],
        )
        wait_until("etcd", lambda: b'"health":"true"' in _get(f"{self.etcd_url}/health"), etcd)

    def _start_apiserver(self) -> None:
        serving = self.certs.issue("apiserver", "127.0.0.1", "localhost", user="kube-apiserver")
        self.sa_key = service_account_key(self.work / "service-account.key")
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self._apiserver or self.bin / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.certs.ca}",
                f"--cert-dir={self.work / 'apiserver-certs'}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                f"--service-account-key-file={self.sa_key}",
                f"--service-account-signing-key-file={self.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc",
                # 127.0.0.1 may not be an Endpoints address, so the apiserver cannot publish itself there.
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={AUDIT_POLICY}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                *self._audit_flags,
            ],
            self._apiserver_env,
        )
        wait_until("kube-apiserver", lambda: self.get("/readyz") == b"ok", apiserver)

    def _start_controller_manager(self) -> None:
        """Creates each namespace's default ServiceAccount and kube-root-ca.crt, and finalizes deleted namespaces."""
        manager = self._spawn(
            "kube-controller-manager",
            [
                str(self.bin / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                f"--service-account-private-key-file={self.sa_key}",
                f"--root-ca-file={self.certs.ca}",
                "--use-service-account-credentials",
                "--leader-elect=false",
            ],
        )
        wait_until(
            "kube-controller-manager",
            lambda: b'"name":"default"' in self.get("/api/v1/namespaces/default/serviceaccounts/default"),
            manager,
        )

    # --- talking to the apiserver ----------------------------------------------------------------------

    def get(self, path: str, headers: dict[str, str] | None = None) -> bytes:
        """GET `path` from the apiserver as the admin user."""
        return _get(self.server + path, self.certs.client_context(self.admin), headers)

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run the built kubectl against this apiserver; a failing command raises with its stderr."""
        argv = [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args]
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def metric(self, name: str) -> float:
        """The sum over all label sets of `name` on the apiserver's /metrics (0 when no series exists yet)."""
        total = 0.0
        for line in self.get("/metrics").decode().splitlines():
            series, _, value = line.rpartition(" ")
            if series == name or series.startswith(name + "{"):
                total += float(value)
        return total


def _pair(identity: Identity) -> tuple[Path, Path]:
    return identity.cert, identity.key


def _get(url: str, context: ssl.SSLContext | None = None, headers: dict[str, str] | None = None) -> bytes:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return response.read()
