"""Replay audit events to a webhook sink the way the kube-apiserver's batch backend sends them.

`replay(items, target)` groups raw event items into `audit.k8s.io/v1` EventList batches, keeps up to
`concurrency` POSTs in flight, and retries each batch as the apiserver's webhook does (DESIGN.md §2): every
non-2xx answer and every connection error or timeout is retried, with an exponential backoff (10 s, then x1.5,
up to 5 attempts, 30 s per attempt); a batch that fails every attempt is dropped and counted as a failure.
The backoff is a `Backoff` value so tests can make it short.

Items are sent as they are: deciding whether an item is a valid event is the sink's job (it quarantines the
bad ones), so replaying a file stores exactly what importing it would.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from auditcov.merge.decode import Malformed
from auditcov.merge.errors import AuditcovError
from auditcov.merge.tokens import read_token

#: The apiserver's default batch size (`--audit-webhook-batch-max-size`).
DEFAULT_BATCH_SIZE = 400

_SUCCESS = range(200, 207)  # the apiserver's webhook treats 200..206 as success
_SINK_COUNTS = ("accepted", "duplicates", "quarantined")


class ReplayError(AuditcovError):
    """Replay cannot start: a bad URL, an unreadable token or certificate file."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a failed batch is retried: wait `initial`, then `initial * factor`, ... between `attempts` tries."""

    initial: float = 10.0
    factor: float = 1.5
    attempts: int = 5
    timeout: float = 30.0  # per attempt, as client-go's `?timeout=30s`

    def delays(self) -> list[float]:
        """The waits before the second, third, ... attempt."""
        return [self.initial * self.factor**step for step in range(self.attempts - 1)]


@dataclass(frozen=True, slots=True)
class Target:
    """Where batches go and how the client proves who it is (a webhook kubeconfig's cluster and user)."""

    url: str
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def from_files(
        cls,
        url: str,
        *,
        token_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        ca_file: str | Path | None = None,
    ) -> Target:
        """A target whose bearer token, client certificate and CA come from files, as in a kubeconfig."""
        if not url.startswith(("http://", "https://")):
            raise ReplayError(f"--to {url!r}: the sink URL must start with http:// or https://")
        if (cert_file is None) != (key_file is None):
            raise ReplayError("--cert and --key go together: give both or neither")
        token = read_token(str(token_file), "--token") if token_file is not None else None
        context = None
        if url.startswith("https://"):
            try:
                context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
                if cert_file is not None:
                    context.load_cert_chain(str(cert_file), str(key_file))
            except (OSError, ssl.SSLError) as exc:
                raise ReplayError(f"cannot load the TLS files: {exc}") from exc
        elif cert_file is not None or ca_file is not None:
            raise ReplayError(f"--to {url!r}: --cert/--key/--ca need an https:// URL")
        return cls(url=url, token=token, ssl_context=context)


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did: batches and events the sink accepted, retries made, batches given up on."""

    batches: int = 0
    events: int = 0
    retries: int = 0
    failures: int = 0
    failed_events: int = 0
    errors: list[str] = field(default_factory=list)  # one line per batch given up on: its last error
    # What an auditcov sink said it did with the batches (its answers' `accepted`, `duplicates`,
    # `quarantined`), summed; empty for a sink that answers otherwise (the apiserver ignores the answer).
    sink_counts: dict[str, int] = field(default_factory=dict)


def sendable(item: object) -> object:
    """What to send for an item: a `Malformed` one as its raw JSON, or as a JSON string if it is not JSON.

    The sink then quarantines it, raw, as an import would: replaying a file loses nothing that importing keeps.
    """
    if not isinstance(item, Malformed):
        return item
    try:
        return orjson.loads(item.raw)
    except orjson.JSONDecodeError:
        return item.raw


def event_list(items: list[object]) -> bytes:
    """The body the apiserver POSTs: an `audit.k8s.io/v1` EventList holding `items`."""
    return orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})


def batches(items: Iterable[object], size: int) -> Iterable[list[object]]:
    """Consecutive lists of at most `size` items."""
    batch: list[object] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def replay(
    items: Iterable[object],
    target: Target,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int = 4,
    backoff: Backoff = Backoff(),
    on_batch: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Send `items` to `target` in EventList batches; `on_batch(n)` is called as each batch of n ends."""
    if batch_size < 1 or concurrency < 1 or backoff.attempts < 1:
        raise ReplayError("batch size, concurrency and attempts must each be at least 1")
    summary = ReplaySummary()
    # A bounded queue keeps reading only a little ahead of sending, so a large file never sits in memory.
    queue: asyncio.Queue[list[object] | None] = asyncio.Queue(maxsize=concurrency * 2)
    headers = {"Content-Type": "application/json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    connector = aiohttp.TCPConnector(ssl=target.ssl_context if target.ssl_context is not None else True)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        sender = _Sender(session, target.url, backoff, summary)

        async def send_from_queue() -> None:
            while (batch := await queue.get()) is not None:
                await sender.send(batch)
                if on_batch is not None:
                    on_batch(len(batch))

        workers = [asyncio.create_task(send_from_queue()) for _ in range(concurrency)]
        try:
            for batch in batches(items, batch_size):
                await queue.put(batch)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
    return summary


class _Sender:
    """POSTs one batch with the apiserver's retry rules and records the outcome in the summary."""

    def __init__(self, session: aiohttp.ClientSession, url: str, backoff: Backoff, summary: ReplaySummary):
        self._session = session
        self._url = url
        self._backoff = backoff
        self._summary = summary
        # client-go appends the timeout to the webhook URL; send the same request the apiserver would.
        self._params = {"timeout": f"{backoff.timeout:g}s"}

    async def send(self, batch: list[object]) -> None:
        body = event_list(batch)
        delays = self._backoff.delays()
        for attempt in range(self._backoff.attempts):
            error = await self._post(body)
            if error is None:
                self._summary.batches += 1
                self._summary.events += len(batch)
                return
            if attempt < len(delays):
                self._summary.retries += 1
                await asyncio.sleep(delays[attempt])
        self._summary.failures += 1
        self._summary.failed_events += len(batch)
        self._summary.errors.append(
            f"batch of {len(batch)} events dropped after {self._backoff.attempts} attempts: {error}"
        )

    async def _post(self, body: bytes) -> str | None:
        """One attempt: None on success, else what went wrong."""
        timeout = aiohttp.ClientTimeout(total=self._backoff.timeout)
        try:
            async with self._session.post(self._url, data=body, params=self._params, timeout=timeout) as response:
                answer = await response.read()
                if response.status in _SUCCESS:
                    self._count(answer)
                    return None
                return f"HTTP {response.status}: {answer[:200].decode('utf-8', 'replace').strip()}"
        except TimeoutError:
            return f"no answer within {self._backoff.timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"{type(exc).__name__}: {exc}"

    def _count(self, answer: bytes) -> None:
        try:
            document = orjson.loads(answer)
        except orjson.JSONDecodeError:
            return
        if isinstance(document, dict):
            counts = self._summary.sink_counts
            for key in _SINK_COUNTS:
                if isinstance(value := document.get(key), int):
                    counts[key] = counts.get(key, 0) + value
