"""`auditcov serve` as a separate process: the start-up banner, durability across SIGKILL, draining on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import textwrap
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml
from sink_support import Sink, event, event_list

from auditcov.merge.store import open_store_readonly

JSON = {"Content-Type": "application/json"}
CONFIG = Path(__file__).parent.parent / "config"


def stored_ids(db: Path, run: str) -> set[str]:
    store = open_store_readonly(db)
    try:
        assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in store.conn.execute("SELECT audit_id FROM events WHERE run = ?", (run,))}
    finally:
        store.conn.close()


def test_banner_prints_the_url_and_a_webhook_kubeconfig_from_the_config_files(tmp_path):
    """Run where config/ is the repository's (as `make run` is), the banner shows config/'s policy and its
    plain HTTP kubeconfig with this sink's URL; without those files it names where they are."""
    (tmp_path / "config").symlink_to(CONFIG)
    sink = Sink(tmp_path / "banner.db", "--default-run", "e2e-7")
    try:
        kubeconfig_text = sink.banner.split("(made from config/webhook.kubeconfig):\n\n", 1)[1].split("\n\n", 1)[0]
        kubeconfig = yaml.safe_load(textwrap.dedent(kubeconfig_text))
        assert kubeconfig["clusters"][0]["cluster"]["server"] == f"{sink.url}/v1/audit/e2e-7"
        assert kubeconfig["current-context"] == "auditcov"
        assert "--audit-webhook-config-file=audit-webhook.kubeconfig" in sink.banner
        assert f"--audit-policy-file={tmp_path / 'config/policy.yaml'}" in sink.banner
        policy = yaml.safe_load(textwrap.dedent(sink.banner.split("config/policy.yaml:\n\n", 1)[1].split("\n\n")[0]))
        assert policy == yaml.safe_load((CONFIG / "policy.yaml").read_text())
    finally:
        assert sink.stop() == 0
    (tmp_path / "config").unlink()
    bare = Sink(tmp_path / "bare.db")
    try:
        assert f"audit events to {bare.url}/v1/audit/default" in bare.banner
        assert "config/ folder" in bare.banner
    finally:
        assert bare.stop() == 0


@pytest.mark.slow
async def test_sigkill_loses_no_batch_that_was_answered_2xx(tmp_path):
    db = tmp_path / "crash.db"
    sink = Sink(db)
    answered: list[list[str]] = []

    async def stream(worker: int, session: aiohttp.ClientSession) -> None:
        for number in range(100_000):
            ids = [f"w{worker}-b{number}-e{i}" for i in range(100)]
            try:
                async with session.post(
                    f"{sink.url}/v1/audit/crash", data=event_list([event(i) for i in ids]), headers=JSON
                ) as r:
                    if r.status == 200:
                        answered.append(ids)
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as session:
        clients = [asyncio.create_task(stream(worker, session)) for worker in range(3)]
        while len(answered) < 30:
            await asyncio.sleep(0.005)
        sink.process.send_signal(signal.SIGKILL)
        await asyncio.gather(*clients)
    assert sink.process.wait(30) == -signal.SIGKILL

    restarted = Sink(db)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{restarted.url}/v1/stats", params={"run": "crash"}) as response:
                stats = await response.json()
            async with session.get(f"{restarted.url}/readyz") as response:
                assert response.status == 200
    finally:
        assert restarted.stop() == 0
    expected = {audit_id for batch in answered for audit_id in batch}
    assert stats["events"] >= len(expected)
    assert expected <= stored_ids(db, "crash")


async def test_sigterm_finishes_the_batch_in_flight_and_exits_0(tmp_path):
    db = tmp_path / "drain.db"
    sink = Sink(db)
    host, port = sink.url.removeprefix("http://").rsplit(":", 1)
    body = event_list([event(f"drain-{i}") for i in range(50)])
    head = (
        "POST /v1/audit/drain?timeout=30s HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection(host, int(port))
    idle_reader, idle_writer = await asyncio.open_connection(host, int(port))  # a keep-alive connection
    writer.write(head.encode() + body[: len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.5)  # the handler is now waiting for the rest of the body
    sink.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    with pytest.raises(OSError):  # it no longer accepts connections, new requests are turned away...
        await asyncio.open_connection(host, int(port))
    idle_writer.write(head.encode() + body)
    refused = await asyncio.wait_for(idle_reader.read(), 30)
    idle_writer.close()
    assert refused.startswith(b"HTTP/1.1 503 ")
    writer.write(body[len(body) // 2 :])  # ...but the batch in flight is finished and committed
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert orjson.loads(rest.partition(b"\r\n\r\n")[2]) == {"accepted": 50, "duplicates": 0, "quarantined": 0}
    assert sink.process.wait(60) == 0
    assert "finishing in-flight batches" in sink.process.stdout.read()
    assert stored_ids(db, "drain") == {f"drain-{i}" for i in range(50)}
