"""The catalogue of a live cluster: its `/openapi/v3` documents or its `/openapi/v2` spec, fetched with the
credentials of a kubeconfig.

From the kubeconfig's current context (or the one named) it uses: the cluster's `server`,
`certificate-authority` / `certificate-authority-data` (else the system CAs), `insecure-skip-tls-verify`;
the user's `client-certificate(-data)` + `client-key(-data)`, `token` or `tokenFile`. Relative file names are
relative to the kubeconfig's folder, as kubectl reads them.

`version`: "v3" reads `/openapi/v3` (a list of group-version documents) and fetches each; "v2" reads
`/openapi/v2`; "auto" tries v3 and falls back to v2 when the server has no v3 (before Kubernetes 1.24).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import yaml

from auditcov.merge.errors import SpecError
from auditcov.merge.openapi.catalogue import Catalogue, catalogue_from_documents, load_catalogue

VERSIONS = ("auto", "v3", "v2")
TIMEOUT_S = 60.0
#: Group-version documents fetched at once from /openapi/v3.
PARALLEL_FETCHES = 8


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """Where a cluster is and how to reach it."""

    server: str
    ssl: ssl.SSLContext
    headers: dict[str, str]


def default_kubeconfig() -> Path:
    """$KUBECONFIG (its first file), else ~/.kube/config, as kubectl looks."""
    listed = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(listed) if listed else Path.home() / ".kube" / "config"


def cluster_access(kubeconfig: str | Path, context: str | None = None) -> ClusterAccess:
    """Read a kubeconfig into a server URL, a TLS context and auth headers; `SpecError` says what is missing."""
    path = Path(kubeconfig)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"kubeconfig {path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"kubeconfig {path}: not YAML: {exc}") from None
    if not isinstance(config, dict):
        raise SpecError(f"kubeconfig {path}: not a kubeconfig (expected a mapping)")
    name = context or config.get("current-context")
    if not name:
        raise SpecError(f"kubeconfig {path}: no current-context, and no context was named")
    context_entry = _named(config, "contexts", name, path)["context"]
    cluster = _named(config, "clusters", context_entry.get("cluster"), path)["cluster"]
    user = _named(config, "users", context_entry.get("user"), path).get("user") or {}
    server = cluster.get("server")
    if not server:
        raise SpecError(f"kubeconfig {path}: cluster {context_entry.get('cluster')!r} has no server")
    base = path.parent
    context_ssl = ssl.create_default_context()
    try:
        if cluster.get("certificate-authority-data"):
            context_ssl.load_verify_locations(cadata=_decoded(cluster["certificate-authority-data"]).decode())
        elif cluster.get("certificate-authority"):
            context_ssl.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
        if cluster.get("insecure-skip-tls-verify"):
            context_ssl.check_hostname = False
            context_ssl.verify_mode = ssl.CERT_NONE
        _load_client_certificate(context_ssl, user, base)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise SpecError(f"kubeconfig {path}: cannot load its TLS files: {exc}") from None
    headers = {"Accept": "application/json"}
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = (base / user["tokenFile"]).read_text().strip()
        except OSError as exc:
            raise SpecError(f"kubeconfig {path}: cannot read tokenFile: {exc.strerror}") from None
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif not user.get("client-certificate-data") and not user.get("client-certificate"):
        plugin = next((key for key in ("exec", "auth-provider") if user.get(key)), None)
        if plugin:
            raise SpecError(
                f"kubeconfig {path}: user {context_entry.get('user')!r} authenticates with an {plugin} plugin, "
                "which auditcov does not run: give it a token, tokenFile or client certificate"
            )
    return ClusterAccess(server=server.rstrip("/"), ssl=context_ssl, headers=headers)


async def fetch_catalogue(access: ClusterAccess, version: str = "auto") -> Catalogue:
    """The cluster's catalogue from its OpenAPI endpoint(s) (see the module docstring)."""
    if version not in VERSIONS:
        raise SpecError(f"OpenAPI version must be one of {', '.join(VERSIONS)}, not {version!r}")
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(headers=access.headers, timeout=timeout) as session:
        if version in ("auto", "v3"):
            index = await _get(session, access, "/openapi/v3", missing_ok=version == "auto")
            if index is not None:
                return await _v3_catalogue(session, access, index)
        spec = await _get(session, access, "/openapi/v2")
        return catalogue_from_documents([(f"{access.server}/openapi/v2", spec)], f"{access.server}/openapi/v2")


def load_live_catalogue(kubeconfig: str | Path, version: str = "auto", context: str | None = None) -> Catalogue:
    """`fetch_catalogue` for callers outside an event loop (the command line, the sink before it starts)."""
    return asyncio.run(fetch_catalogue(cluster_access(kubeconfig, context), version))


async def _v3_catalogue(session: aiohttp.ClientSession, access: ClusterAccess, index: object) -> Catalogue:
    paths = index.get("paths") if isinstance(index, dict) else None
    if not isinstance(paths, dict) or not paths:
        raise SpecError(f"{access.server}/openapi/v3: expected {{'paths': {{...}}}} listing group versions")
    limit = asyncio.Semaphore(PARALLEL_FETCHES)

    async def one(name: str, entry: object) -> tuple[str, object]:
        url = entry.get("serverRelativeURL") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            raise SpecError(f"{access.server}/openapi/v3: entry {name!r} has no serverRelativeURL")
        async with limit:
            return f"{access.server}{url}", await _get(session, access, url)

    documents = await asyncio.gather(*(one(name, entry) for name, entry in sorted(paths.items())))
    return catalogue_from_documents(documents, f"{access.server}/openapi/v3")


async def _get(session: aiohttp.ClientSession, access: ClusterAccess, path: str, *, missing_ok: bool = False):
    url = access.server + path
    try:
        async with session.get(url, ssl=access.ssl) as response:
            if response.status == 404 and missing_ok:
                return None
            if response.status != 200:
                text = (await response.text(errors="replace"))[:200]
                raise SpecError(f"{url}: HTTP {response.status}: {text}")
            body = await response.read()
    # aiohttp's own text for these names the SSL context object; say what a person can act on.
    except aiohttp.ClientConnectorCertificateError as exc:
        raise SpecError(f"{url}: cannot verify the server's certificate: {exc.certificate_error}") from None
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        reason = os.strerror(error.errno) if isinstance(error, ConnectionError) and error.errno else error
        raise SpecError(f"{url}: cannot connect: {reason}") from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise SpecError(f"{url}: {type(exc).__name__}: {exc}") from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SpecError(f"{url}: not JSON: {exc}") from None


def _named(config: dict, section: str, name: object, path: Path) -> dict:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    raise SpecError(f"kubeconfig {path}: no {section[:-1]} named {name!r}")


def _decoded(data: str) -> bytes:
    return base64.b64decode(data, validate=True)


def _load_client_certificate(context: ssl.SSLContext, user: dict, base: Path) -> None:
    cert, key = user.get("client-certificate-data"), user.get("client-key-data")
    if cert and key:
        # ssl loads a certificate chain only from files: write the decoded PEM to a private temporary one.
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as pem:
            pem.write(_decoded(cert) + b"\n" + _decoded(key))
            pem.flush()
            context.load_cert_chain(pem.name)
    elif user.get("client-certificate") and user.get("client-key"):
        context.load_cert_chain(str(base / user["client-certificate"]), str(base / user["client-key"]))


def cluster_version(source: str) -> str | None:
    """The OpenAPI version a SOURCE asks the cluster for (`auto`, `cluster`: auto; `cluster:v2`: v2), or None
    when SOURCE names a file or folder."""
    if source in ("auto", "cluster"):
        return "auto"
    if source.startswith("cluster:"):
        return source.partition(":")[2]
    return None


def load_source(source: str, kubeconfig: str | Path | None = None, context: str | None = None) -> Catalogue:
    """A catalogue from any SOURCE the command line takes: a spec file, a folder of v3 documents, or
    `auto` / `cluster` / `cluster:v3` / `cluster:v2` for the cluster of `kubeconfig` (default: kubectl's)."""
    version = cluster_version(source)
    if version is None:
        return load_catalogue(source)
    return load_live_catalogue(kubeconfig or default_kubeconfig(), version, context)
