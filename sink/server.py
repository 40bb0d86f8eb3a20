"""Running the sink: TLS, the listening socket, the start-up banner and a graceful stop on SIGTERM/SIGINT.

`start_sink(settings)` binds and returns a `RunningSink` (its URL, and `stop()`); `serve(settings)` is what
`auditcov serve` runs: uvloop, the banner, then wait for a signal. Stopping closes the listening socket,
lets in-flight batches finish and commit, stops the writer, and returns (exit status 0).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import uvloop
from aiohttp import web

from auditcov.merge.openapi.live import cluster_version
from auditcov.merge.store import store_name
from auditcov.sink.app import DRAIN, INGESTOR, WRITER, init_app
from auditcov.sink.catalogue import follow_cluster, sink_matcher
from auditcov.sink.connections import GuardedSite, guard_app
from auditcov.sink.ingest import Matcher
from auditcov.sink.operatorfiles import (
    ENDPOINTS_POLICY,
    POLICY,
    operator_files,
    policy_text,
    template_name,
    webhook_kubeconfig,
)
from auditcov.sink.settings import Settings, SettingsError

#: How long a stop waits for in-flight batches (the apiserver gives each POST 30 s).
SHUTDOWN_TIMEOUT_S = 35.0

log = logging.getLogger(__name__)


@dataclass
class RunningSink:
    """A started sink: where it listens, and how to stop it."""

    runner: web.AppRunner
    url: str
    catalogue_task: asyncio.Task | None = None  # fetching a cluster's catalogue that did not answer at start

    async def stop(self) -> None:
        """Stop accepting, finish in-flight batches, commit, close the store."""
        if self.catalogue_task is not None:
            self.catalogue_task.cancel()
        for site in list(self.runner.sites):
            await site.stop()
        if not await self.runner.app[DRAIN].wait(SHUTDOWN_TIMEOUT_S):
            log.warning("stopping with requests still in progress after %s s", SHUTDOWN_TIMEOUT_S)
        await self.runner.cleanup()


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, requiring and verifying client certificates when `client_ca` is set."""
    if not settings.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
        if settings.client_ca:
            context.load_verify_locations(cafile=settings.client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"cannot load the TLS files: {exc}") from None
    return context


async def start_sink(settings: Settings, *, matcher: Matcher | None = None) -> RunningSink:
    """Open the store, bind `settings.listen` and start answering; with `settings.openapi`, map as events arrive."""
    context = ssl_context(settings)
    if matcher is None:
        matcher = await sink_matcher(settings)
    app = init_app(settings, matcher=matcher)
    guard = guard_app(app, settings)
    # aiohttp's keep-alive timeout is the idle timeout; the guard adds the header timeout and the limit.
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S, keepalive_timeout=settings.idle_timeout
    )
    await runner.setup()
    host, port = settings.address()
    try:
        await GuardedSite(runner, guard, host, port, ssl_context=context).start()
    except OSError as exc:
        await runner.cleanup()
        raise SettingsError(f"cannot listen on {settings.listen}: {exc.strerror}") from None
    bound_port = runner.addresses[0][1]
    shown_host = f"[{host}]" if ":" in host else host
    sink = RunningSink(runner, f"{'https' if context else 'http'}://{shown_host}:{bound_port}")
    if matcher is None and settings.openapi and cluster_version(settings.openapi) is not None:
        app = runner.app
        sink.catalogue_task = asyncio.create_task(follow_cluster(settings, app[INGESTOR], app[WRITER]))
    return sink


def banner(settings: Settings, url: str) -> str:
    """What `serve` prints at start: where it listens and how to point a kube-apiserver at it, from the files of
    config/ (see `auditcov.sink.operatorfiles`)."""
    head = f"auditcov sink listening on {url} (store {store_name(settings.db)}, run {settings.default_run!r})\n\n"
    tail = "Stop with Ctrl-C or SIGTERM.\n"
    folder = operator_files()
    if folder is None:
        return (
            f"{head}Send a kube-apiserver's audit events to {url}/v1/audit/{settings.default_run}: the audit"
            " policies and webhook kubeconfigs are in the auditcov repository's config/ folder (in the image:"
            " /etc/auditcov).\n"
            f"{tail}"
        )
    policy = folder / POLICY
    return (
        f"{head}To send a kube-apiserver's audit events here, save this as audit-webhook.kubeconfig"
        f" (made from {folder / template_name(settings)}):\n\n"
        f"{_indent(webhook_kubeconfig(folder, settings, url))}\n\n"
        f"and start kube-apiserver with the audit policy {policy}"
        f" ({folder / ENDPOINTS_POLICY} for endpoint coverage only):\n\n"
        f"    --audit-policy-file={policy.absolute()} --audit-webhook-config-file=audit-webhook.kubeconfig \\\n"
        "    --audit-webhook-mode=batch --audit-webhook-batch-max-wait=5s\n\n"
        f"{policy}:\n\n{_indent(policy_text(folder))}\n\n"
        f"(put the run name at the end of the server URL: /v1/audit/<run>). {tail}"
    )


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _tune_interpreter() -> None:
    """Settings measured with bench/ingest.py.

    Each batch allocates thousands of short-lived containers (decoded JSON): collecting every 700 of them, and
    walking the long-lived start-up objects on each full pass, cost more than the parsing itself (orjson: 6 us
    an event instead of 11). The GIL switch interval is left at its default: the writer thread takes the GIL a
    few times per batch, not per row, and 0.5 ms or 0.1 ms measured no different from 5 ms.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def serve(settings: Settings, *, out: Callable[[str], None] = print) -> None:
    """Run the sink until SIGTERM or SIGINT, then drain and return."""
    # One line per event on stderr (the banner goes to stdout): stalled clients cut, store faults, the catalogue.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        sink = await start_sink(settings)
        _tune_interpreter()
        # Handlers first: whoever reads the banner may signal at once, and must get a drain, not a kill.
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        out(banner(settings, sink.url))
        await stopping.wait()
        out("auditcov sink stopping: finishing in-flight batches")
        await sink.stop()
        out("auditcov sink stopped")

    uvloop.run(main())
