"""TLS and mTLS with real certificates (trustme): a client must present a certificate signed by client_ca."""

from __future__ import annotations

import ssl

import aiohttp
import pytest
import trustme
from sink_support import event, event_list

from auditcov.merge.store import open_store_readonly
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
async def mtls_sink(tmp_path, server_ca, client_ca):
    server_cert = server_ca.issue_cert("127.0.0.1", "localhost")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    settings = Settings(
        listen="127.0.0.1:0",
        db=str(tmp_path / "tls.db"),
        tls_cert=str(tmp_path / "server.pem"),
        tls_key=str(tmp_path / "server.pem"),
        client_ca=str(tmp_path / "client-ca.pem"),
    )
    sink = await start_sink(settings)
    yield sink, settings
    await sink.stop()


def client_context(server_ca: trustme.CA, issuer: trustme.CA | None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    server_ca.configure_trust(context)
    if issuer is not None:
        issuer.issue_cert("kube-apiserver").configure_cert(context)
    return context


async def send(url: str, context: ssl.SSLContext, audit_id: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/audit/tls", data=event_list([event(audit_id)]), headers=JSON, ssl=context) as r,
    ):
        return r.status


def stored(settings: Settings) -> list[str]:
    db = open_store_readonly(settings.db)
    try:
        return [row[0] for row in db.conn.execute("SELECT audit_id FROM events ORDER BY audit_id")]
    finally:
        db.conn.close()


async def test_mtls_accepts_a_certificate_from_the_client_ca(mtls_sink, server_ca, client_ca):
    sink, settings = mtls_sink
    assert sink.url.startswith("https://127.0.0.1:")
    assert await send(sink.url, client_context(server_ca, client_ca), "trusted") == 200
    assert stored(settings) == ["trusted"]


async def test_mtls_rejects_a_client_without_a_certificate(mtls_sink, server_ca):
    sink, settings = mtls_sink
    with pytest.raises(aiohttp.ClientError):
        await send(sink.url, client_context(server_ca, None), "anonymous")
    assert stored(settings) == []


async def test_mtls_rejects_a_certificate_from_another_ca(mtls_sink, server_ca):
    sink, settings = mtls_sink
    with pytest.raises(aiohttp.ClientError):
        await send(sink.url, client_context(server_ca, trustme.CA()), "stranger")
    assert stored(settings) == []


async def test_tls_with_a_bearer_token_and_no_client_certificates(tmp_path, server_ca):
    server_ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    (tmp_path / "token").write_text("s3cret")
    settings = Settings(
        listen="127.0.0.1:0",
        db=str(tmp_path / "token.db"),
        tls_cert=str(tmp_path / "server.pem"),
        tls_key=str(tmp_path / "server.pem"),
        ingest_token_file=str(tmp_path / "token"),
    )
    sink = await start_sink(settings)
    try:
        context = client_context(server_ca, None)
        assert await send(sink.url, context, "no-token") == 401
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer s3cret"}) as session:
            body = event_list([event("with-token")])
            async with session.post(f"{sink.url}/v1/audit/tls", data=body, headers=JSON, ssl=context) as response:
                assert response.status == 200
    finally:
        await sink.stop()
    assert stored(settings) == ["with-token"]
