"""The image's HEALTHCHECK (`python -m auditcov.sink.healthcheck`) against real sinks, over HTTP and HTTPS."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import trustme

from auditcov.sink.healthcheck import check, environment_settings, health_url, main
from auditcov.sink.server import start_sink
from auditcov.sink.settings import Settings


def test_a_sink_on_every_address_is_asked_on_loopback():
    assert health_url(Settings(listen="0.0.0.0:8080")) == "http://127.0.0.1:8080/healthz"
    assert health_url(Settings(listen="[::]:8080")) == "http://[::1]:8080/healthz"
    assert health_url(Settings(listen="10.0.0.7:9000")) == "http://10.0.0.7:9000/healthz"
    tls = Settings(listen="0.0.0.0:8443", tls_cert="c.pem", tls_key="k.pem")
    assert health_url(tls) == "https://127.0.0.1:8443/healthz"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_healthy_while_serving_and_not_after(tmp_path, tls):
    settings = Settings(listen="127.0.0.1:0", db=str(tmp_path / "h.db"))
    if tls:
        # A certificate no client trusts: the check asks the sink itself and does not verify it.
        trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "s.pem"))
        settings = dataclasses.replace(settings, tls_cert=str(tmp_path / "s.pem"), tls_key=str(tmp_path / "s.pem"))
    sink = await start_sink(settings)
    serving = dataclasses.replace(settings, listen=sink.url.rsplit("/", 1)[1])
    try:
        assert await asyncio.to_thread(check, serving) is None
    finally:
        await sink.stop()
    problem = await asyncio.to_thread(check, serving)
    assert problem is not None and problem.startswith(health_url(serving))


def test_main_reads_the_file_then_the_environment(tmp_path, monkeypatch, capsys):
    config = tmp_path / "sink.toml"
    config.write_text('listen = "127.0.0.1:1"\nkeep_bodies = true\n')
    monkeypatch.setenv("AUDITCOV_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("AUDITCOV_KEEP_BODIES", "not text: left to the file")
    assert environment_settings() == {"db": str(tmp_path / "env.db")}
    # Port 1 on loopback: nothing listens, so the check fails and says where it asked.
    assert main([str(config)]) == 1
    assert "http://127.0.0.1:1/healthz" in capsys.readouterr().err
    monkeypatch.setenv("AUDITCOV_LISTEN", "no-port")
    assert main([str(config)]) == 1
    assert "listen must be host:port" in capsys.readouterr().err
