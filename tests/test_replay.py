"""sink/replay.py against real aiohttp servers on loopback: batching, retries, give-up, bearer token, mTLS."""

from __future__ import annotations

import asyncio
import socket
import ssl

import orjson
import pytest
import trustme
from aiohttp import web

from auditcov.merge.tokens import TokenFileError
from auditcov.sink.replay import Backoff, ReplayError, Target, replay

FAST = Backoff(initial=0.01, factor=1.5, attempts=5, timeout=5)


class Recorder:
    """A webhook receiver that answers `failures` times with `status`, then 200; it keeps what it was sent."""

    def __init__(self, *, failures: int = 0, status: int = 503, token: str | None = None):
        self.failures = failures
        self.status = status
        self.token = token
        self.attempts = 0
        self.bodies: list[dict] = []
        self.queries: list[dict] = []
        self.times: list[float] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.times.append(asyncio.get_running_loop().time())
        self.queries.append(dict(request.query))
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="no or wrong bearer token")
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=self.status, text="try again later")
        assert request.content_type == "application/json"
        self.bodies.append(orjson.loads(await request.read()))
        return web.json_response({"accepted": len(self.bodies[-1]["items"])})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/audit/{run}", self.handle)
        return app


@pytest.fixture
def demo_items(fixtures):
    """The 37 events of audit2rbac's demo log (JSON lines)."""
    return [orjson.loads(line) for line in (fixtures / "audit/audit2rbac/demo.log").read_bytes().splitlines()]


async def test_batches_are_event_lists_of_the_given_size(aiohttp_server, demo_items):
    recorder = Recorder()
    server = await aiohttp_server(recorder.app())
    ended: list[int] = []
    summary = await replay(
        demo_items,
        Target(str(server.make_url("/v1/audit/demo"))),
        batch_size=10,
        concurrency=3,
        backoff=FAST,
        on_batch=ended.append,
    )
    assert (summary.batches, summary.events, summary.retries, summary.failures) == (4, 37, 0, 0)
    assert sorted(len(body["items"]) for body in recorder.bodies) == [7, 10, 10, 10]
    assert sorted(ended) == [7, 10, 10, 10]
    for body in recorder.bodies:
        assert (body["kind"], body["apiVersion"], body["metadata"]) == ("EventList", "audit.k8s.io/v1", {})
    sent = sorted(item["auditID"] for body in recorder.bodies for item in body["items"])
    assert sent == sorted(item["auditID"] for item in demo_items)
    # The same URL the apiserver would call: client-go appends the timeout.
    assert recorder.queries[0] == {"timeout": "5s"}


async def test_a_batch_answered_5xx_is_retried_with_backoff_until_accepted(aiohttp_server, demo_items):
    recorder = Recorder(failures=3, status=503)
    server = await aiohttp_server(recorder.app())
    backoff = Backoff(initial=0.05, factor=2, attempts=5, timeout=5)
    summary = await replay(demo_items, Target(str(server.make_url("/v1/audit/r"))), backoff=backoff)
    assert (summary.batches, summary.events, summary.retries, summary.failures) == (1, 37, 3, 0)
    assert recorder.attempts == 4
    assert len(recorder.bodies) == 1 and len(recorder.bodies[0]["items"]) == 37
    waits = [later - earlier for earlier, later in zip(recorder.times, recorder.times[1:], strict=False)]
    # 0.05, 0.1, 0.2: each wait at least its backoff step, and growing.
    for wait, step in zip(waits, backoff.delays(), strict=False):
        assert wait >= step * 0.9
    assert waits[2] > waits[0]


async def test_a_4xx_is_retried_too_as_the_apiserver_does(aiohttp_server, demo_items):
    recorder = Recorder(failures=1, status=400)
    server = await aiohttp_server(recorder.app())
    summary = await replay(demo_items[:5], Target(str(server.make_url("/v1/audit/r"))), backoff=FAST)
    assert (summary.batches, summary.retries, summary.failures) == (1, 1, 0)


async def test_gives_up_after_five_attempts_and_counts_the_dropped_batch(aiohttp_server, demo_items):
    recorder = Recorder(failures=1000, status=500)
    server = await aiohttp_server(recorder.app())
    summary = await replay(demo_items, Target(str(server.make_url("/v1/audit/r"))), batch_size=20, backoff=FAST)
    assert recorder.attempts == 10  # two batches, five attempts each
    assert (summary.batches, summary.events, summary.retries) == (0, 0, 8)
    assert (summary.failures, summary.failed_events) == (2, 37)
    assert all("after 5 attempts: HTTP 500: try again later" in error for error in summary.errors)


async def test_connection_errors_are_retried_and_then_given_up(demo_items):
    with socket.socket() as probe:  # a loopback port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    summary = await replay(demo_items[:3], Target(f"http://127.0.0.1:{port}/v1/audit"), backoff=FAST)
    assert (summary.batches, summary.retries, summary.failures, summary.failed_events) == (0, 4, 1, 3)
    assert "ClientConnectorError" in summary.errors[0]


async def test_a_sink_that_does_not_answer_in_time_is_retried(aiohttp_server, demo_items):
    calls = 0

    async def slow_then_fast(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(2)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/audit", slow_then_fast)
    server = await aiohttp_server(app)
    backoff = Backoff(initial=0.01, factor=1.5, attempts=5, timeout=0.3)
    summary = await replay(demo_items[:2], Target(str(server.make_url("/v1/audit"))), backoff=backoff)
    assert (calls, summary.batches, summary.retries, summary.failures) == (2, 1, 1, 0)


async def test_bearer_token_from_a_file(aiohttp_server, demo_items, tmp_path):
    recorder = Recorder(token="s3cret-token")
    server = await aiohttp_server(recorder.app())
    url = str(server.make_url("/v1/audit/r"))
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    summary = await replay(demo_items, Target.from_files(url, token_file=token_file), backoff=FAST)
    assert (summary.batches, summary.failures) == (1, 0)
    token_file.write_text("wrong-token\n")
    summary = await replay(demo_items, Target.from_files(url, token_file=token_file), backoff=FAST)
    assert (summary.batches, summary.failures) == (0, 1)
    assert "HTTP 401" in summary.errors[0]


@pytest.fixture
def tls(tmp_path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as files, plus the server context."""
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("replay-client")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(server_context)
    ca.configure_trust(server_context)
    server_context.verify_mode = ssl.CERT_REQUIRED
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client_cert.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    client_cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    return server_context, tmp_path


async def test_mtls_with_a_client_certificate(aiohttp_server, demo_items, tls):
    server_context, files = tls
    recorder = Recorder()
    server = await aiohttp_server(recorder.app(), ssl=server_context)
    url = str(server.make_url("/v1/audit/r"))
    assert url.startswith("https://127.0.0.1:")
    target = Target.from_files(
        url, cert_file=files / "client.pem", key_file=files / "client.key", ca_file=files / "ca.pem"
    )
    summary = await replay(demo_items, target, backoff=FAST)
    assert (summary.batches, summary.events, summary.failures) == (1, 37, 0)
    # Without the client certificate the handshake fails on every attempt.
    summary = await replay(demo_items, Target.from_files(url, ca_file=files / "ca.pem"), backoff=FAST)
    assert (summary.batches, summary.failures) == (0, 1)
    assert len(recorder.bodies) == 1


def test_target_refuses_inconsistent_settings(tmp_path):
    with pytest.raises(ReplayError, match="http:// or https://"):
        Target.from_files("127.0.0.1:8443/v1/audit")
    with pytest.raises(ReplayError, match="--cert and --key go together"):
        Target.from_files("https://127.0.0.1/v1/audit", cert_file=tmp_path / "c.pem")
    with pytest.raises(ReplayError, match="need an https:// URL"):
        Target.from_files("http://127.0.0.1/v1/audit", ca_file=tmp_path / "ca.pem")
    with pytest.raises(TokenFileError, match=r"--token .*missing: cannot read the token"):
        Target.from_files("http://127.0.0.1/v1/audit", token_file=tmp_path / "missing")
