"""Fetching a cluster's catalogue with a kubeconfig, from a real HTTPS server on loopback (trustme certificates)
that serves the fixture specs as a kube-apiserver serves /openapi/v2 and /openapi/v3."""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import ssl
from pathlib import Path

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from sink_support import event, event_list

from auditcov.merge.errors import SpecError
from auditcov.merge.openapi.catalogue import load_catalogue
from auditcov.merge.openapi.live import cluster_access, fetch_catalogue
from auditcov.merge.openapi.matcher import UNKNOWN_GROUP_VERSION
from auditcov.merge.store import open_store
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

TOKEN = "s3cret-token"


def _apiserver(fixtures: Path, *, v3: bool, token: str | None) -> web.Application:
    v2_spec = gzip.decompress((fixtures / "openapi/swagger-v1.27.0.json.gz").read_bytes())
    v3_docs = {
        "api/v1": gzip.decompress((fixtures / "openapi/v3-v1.27.0/api/v1.json.gz").read_bytes()),
        "apis/apps/v1": gzip.decompress((fixtures / "openapi/v3-v1.27.0/apis/apps/v1.json.gz").read_bytes()),
    }

    @web.middleware
    async def authenticate(request: web.Request, handler):
        if token is not None and request.headers.get("Authorization") != f"Bearer {token}":
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return await handler(request)

    async def openapi_v2(_request):
        return web.Response(body=v2_spec, content_type="application/json")

    async def openapi_v3_index(_request):
        paths = {name: {"serverRelativeURL": f"/openapi/v3/{name}?hash=ABC"} for name in v3_docs}
        return web.json_response({"paths": paths})

    async def openapi_v3_document(request):
        return web.Response(body=v3_docs[request.match_info["name"]], content_type="application/json")

    app = web.Application(middlewares=[authenticate])
    app.router.add_get("/openapi/v2", openapi_v2)
    if v3:
        app.router.add_get("/openapi/v3", openapi_v3_index)
        app.router.add_get("/openapi/v3/{name:.+}", openapi_v3_document)
    return app


@pytest.fixture
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_ca() -> trustme.CA:
    return trustme.CA()


async def _start(
    app: web.Application, server_ca: trustme.CA, client_ca: trustme.CA | None
) -> tuple[web.AppRunner, str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_ca is not None:
        client_ca.configure_trust(context)
        context.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, f"https://127.0.0.1:{runner.addresses[0][1]}"


def _kubeconfig(tmp_path: Path, server: str, cluster: dict, user: dict) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_v3_documents_with_a_client_certificate_from_data(fixtures, tmp_path, server_ca, client_ca):
    runner, server = await _start(_apiserver(fixtures, v3=True, token=None), server_ca, client_ca)
    try:
        client = client_ca.issue_cert("admin")
        kubeconfig = _kubeconfig(
            tmp_path,
            server,
            {"certificate-authority-data": base64.b64encode(server_ca.cert_pem.bytes()).decode()},
            {
                "client-certificate-data": base64.b64encode(
                    b"".join(b.bytes() for b in client.cert_chain_pems)
                ).decode(),
                "client-key-data": base64.b64encode(client.private_key_pem.bytes()).decode(),
            },
        )
        catalogue = await fetch_catalogue(cluster_access(kubeconfig), "auto")
    finally:
        await runner.cleanup()
    assert catalogue.source == f"{server}/openapi/v3"
    assert catalogue.endpoints == load_catalogue(fixtures / "openapi/v3-v1.27.0").endpoints


async def test_v2_fallback_with_a_token_and_a_ca_file(fixtures, tmp_path, server_ca):
    runner, server = await _start(_apiserver(fixtures, v3=False, token=TOKEN), server_ca, None)
    try:
        server_ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
        (tmp_path / "token").write_text(TOKEN + "\n")
        kubeconfig = _kubeconfig(tmp_path, server, {"certificate-authority": "ca.crt"}, {"tokenFile": "token"})
        catalogue = await fetch_catalogue(cluster_access(kubeconfig), "auto")
        with pytest.raises(SpecError, match=r"/openapi/v3: HTTP 404"):
            await fetch_catalogue(cluster_access(kubeconfig), "v3")
        wrong_token = _kubeconfig(tmp_path, server, {"certificate-authority": "ca.crt"}, {"token": "nope"})
        with pytest.raises(SpecError, match=r"/openapi/v2: HTTP 401"):
            await fetch_catalogue(cluster_access(wrong_token), "v2")
    finally:
        await runner.cleanup()
    assert catalogue.source == f"{server}/openapi/v2"
    assert catalogue.endpoints == load_catalogue(fixtures / "openapi/swagger-v1.27.0.json.gz").endpoints


async def test_an_untrusted_server_is_refused(fixtures, tmp_path, server_ca):
    runner, server = await _start(_apiserver(fixtures, v3=True, token=None), server_ca, None)
    try:
        trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.crt"))
        kubeconfig = _kubeconfig(tmp_path, server, {"certificate-authority": "other-ca.crt"}, {})
        with pytest.raises(SpecError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch_catalogue(cluster_access(kubeconfig), "v3")
    finally:
        await runner.cleanup()


def test_kubeconfig_errors_say_what_is_missing(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        cluster_access(tmp_path / "missing")
    no_context = tmp_path / "a"
    no_context.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(SpecError, match="no current-context"):
        cluster_access(no_context)
    kubeconfig = _kubeconfig(tmp_path, "https://127.0.0.1:1", {}, {})
    with pytest.raises(SpecError, match="no context named 'other'"):
        cluster_access(kubeconfig, "other")
    bad_ca = _kubeconfig(tmp_path, "https://127.0.0.1:1", {"certificate-authority": "nowhere.crt"}, {})
    with pytest.raises(SpecError, match="cannot load its TLS files"):
        cluster_access(bad_ca)
    plugin = _kubeconfig(tmp_path, "https://127.0.0.1:1", {}, {"exec": {"command": "gke-gcloud-auth-plugin"}})
    with pytest.raises(SpecError, match="user 'admin' authenticates with an exec plugin"):
        cluster_access(plugin)


async def test_the_sink_maps_on_arrival_with_the_catalogue_of_its_cluster(fixtures, tmp_path, server_ca):
    apiserver, server = await _start(_apiserver(fixtures, v3=True, token=TOKEN), server_ca, None)
    server_ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    kubeconfig = _kubeconfig(tmp_path, server, {"certificate-authority": "ca.crt"}, {"token": TOKEN})
    db = tmp_path / "sink.db"
    try:
        sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(db), openapi="auto", kubeconfig=str(kubeconfig)))
    finally:
        await apiserver.cleanup()  # the catalogue was fetched at start: the cluster is not needed any more
    try:
        items = [
            event("a", verb="get", requestURI="/api/v1/namespaces/ns-1/pods/web-1"),
            event("b", verb="create", requestURI="/apis/apps/v1/namespaces/ns-1/deployments"),
            event("c", verb="get", requestURI="/apis/batch/v1/jobs"),  # the served v3 documents lack batch
        ]
        headers = {"Content-Type": "application/json"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{sink.url}/v1/audit/r1", data=event_list(items), headers=headers) as response,
        ):
            assert response.status == 200, await response.text()
    finally:
        await sink.stop()
    store = open_store(db)
    rows = store.conn.execute(
        "SELECT audit_id, operation_id, unmatched_reason FROM events ORDER BY audit_id"
    ).fetchall()
    catalogue_rows = store.conn.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0]
    store.conn.close()
    assert rows == [
        ("a", "readCoreV1NamespacedPod", None),
        ("b", "createAppsV1NamespacedDeployment", None),
        ("c", None, UNKNOWN_GROUP_VERSION),
    ]
    assert catalogue_rows == 322

    # Started again on the same store without a spec, the sink maps with the catalogue the store kept.
    sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(db)))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{sink.url}/v1/audit/r1",
                data=event_list([event("d", verb="list", requestURI="/api/v1/namespaces/ns-2/configmaps?limit=5")]),
                headers={"Content-Type": "application/json"},
            ) as response,
        ):
            assert response.status == 200, await response.text()
    finally:
        await sink.stop()
    store = open_store(db)
    assert store.conn.execute("SELECT operation_id FROM events WHERE audit_id = 'd'").fetchall() == [
        ("listCoreV1NamespacedConfigMap",)
    ]
    store.conn.close()


async def test_a_sink_started_before_its_cluster_maps_once_the_cluster_answers(fixtures, tmp_path, server_ca):
    """Blocking webhook mode: the apiserver cannot finish starting before its webhook answers, so the sink must
    start first, store events unmapped, and map them (and the ones after) once the catalogue can be fetched."""
    with socket.socket() as probe:  # a loopback port with nobody listening yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server_ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    kubeconfig = _kubeconfig(tmp_path, f"https://127.0.0.1:{port}", {"certificate-authority": "ca.crt"}, {})
    db = tmp_path / "sink.db"
    with pytest.raises(SpecError, match=rf"^https://127.0.0.1:{port}/openapi/v3: cannot connect: .*refused"):
        await fetch_catalogue(cluster_access(kubeconfig))
    sink = await start_sink(Settings(listen="127.0.0.1:0", db=str(db), openapi="auto", kubeconfig=str(kubeconfig)))
    apiserver = None
    try:
        async with aiohttp.ClientSession() as session:

            async def post(audit_id: str, uri: str) -> None:
                body = event_list([event(audit_id, verb="get", requestURI=uri)])
                headers = {"Content-Type": "application/json"}
                async with session.post(f"{sink.url}/v1/audit/r1", data=body, headers=headers) as response:
                    assert response.status == 200, await response.text()

            await post("before", "/api/v1/namespaces/ns-1/pods/web-1")
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ca.issue_cert("127.0.0.1").configure_cert(context)
            apiserver = web.AppRunner(_apiserver(fixtures, v3=True, token=None))
            await apiserver.setup()
            await web.TCPSite(apiserver, "127.0.0.1", port, ssl_context=context).start()
            remapped = await asyncio.wait_for(sink.catalogue_task, timeout=30)
            await post("after", "/apis/apps/v1/namespaces/ns-1/deployments/web")
    finally:
        await sink.stop()
        if apiserver is not None:
            await apiserver.cleanup()
    assert (remapped.events, remapped.matched) == (1, 1)
    store = open_store(db)
    rows = store.conn.execute("SELECT audit_id, operation_id FROM events ORDER BY audit_id").fetchall()
    catalogue_rows = store.conn.execute("SELECT COUNT(*) FROM endpoints").fetchone()[0]
    store.conn.close()
    assert rows == [("after", "readAppsV1NamespacedDeployment"), ("before", "readCoreV1NamespacedPod")]
    assert catalogue_rows == 322


async def test_a_sink_with_an_unusable_kubeconfig_does_not_start(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        await start_sink(
            Settings(listen="127.0.0.1:0", db=str(tmp_path / "s.db"), openapi="auto", kubeconfig=str(tmp_path / "no"))
        )
