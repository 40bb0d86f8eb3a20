"""The sink's connections kept in bounds: stalled clients are cut, and there are never more than the descriptors
allow, so that a crowd of stalled or idle clients never keeps the apiserver (or /healthz) out.

aiohttp times out only idle keep-alive connections (`keepalive_timeout`, used for `idle_timeout`) and has no
limit on connections. `ConnectionGuard` wraps each connection's aiohttp protocol (it forwards every call, so
aiohttp runs unchanged) and adds:

- a header timeout: from a connection's opening, or from the first byte of each later request, the request line
  and headers must arrive within `header_timeout` seconds (`guard_middleware` sees each request start and end);
- a connection limit: `max_connections`, lowered to the descriptor limit less `RESERVED_DESCRIPTORS` (the store's
  files, outgoing connections). At the limit a new connection closes the oldest connection with no request in
  progress (idle between requests, or stalled before its headers are complete); when every connection is busy
  with a request, the new one is answered 503 with Retry-After and closed.

A body that stops arriving is cut by `sink.app.read_body` (`body_timeout` between bytes, not for the whole body,
so a slow but live sender is never cut).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Awaitable, Callable

from aiohttp import web

from auditcov.sink.settings import Settings

#: Descriptors kept for everything but incoming connections: the store, its WAL and shared memory, the
#: checkpointer's connection, catalogue fetches and coverage agents.
RESERVED_DESCRIPTORS = 64
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b'Connection: close\r\nContent-Length: 57\r\n\r\n{"error": "too many connections are busy; retry later"}\n'
)
_HEAD, _REQUEST, _IDLE = "head", "request", "idle"
#: Connections the kernel queues before they are accepted: a burst of new ones (the apiserver's several batches
#: in flight, beside clients being cut) should not be dropped and retried a second later.
BACKLOG = 1024

log = logging.getLogger(__name__)


def connection_limit(wanted: int) -> int:
    """`wanted`, or fewer when the descriptor limit (RLIMIT_NOFILE) leaves less room."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_DESCRIPTORS))


class ConnectionGuard:
    """Wraps the connections of one listening socket (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.header_timeout = settings.header_timeout
        self.limit = connection_limit(settings.max_connections)
        if self.limit < settings.max_connections:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            log.warning(
                "max_connections %d lowered to %d: the descriptor limit is %d (ulimit -n)",
                settings.max_connections,
                self.limit,
                soft,
            )
        self._open: dict[GuardedConnection, None] = {}  # in the order they opened (dicts keep it)
        self._by_handler: dict[asyncio.Protocol, GuardedConnection] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def factory(self, server: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory for `loop.create_server`: aiohttp's, guarded."""
        return lambda: GuardedConnection(self, server())

    @property
    def open(self) -> int:
        return len(self._open)

    def admit(self, connection: GuardedConnection) -> bool:
        """Count a new connection; at the limit, make room for it or say it must be refused."""
        if len(self._open) >= self.limit:
            victim = next((c for c in self._open if c.state != _REQUEST), None)
            if victim is None:
                self.refused += 1
                return False
            self.evicted += 1
            log.info("closing the %s connection from %s to make room for a new one", victim.state, victim.peer)
            self._forget(victim)
            victim.close()
        self._open[connection] = None
        self._by_handler[connection.inner] = connection
        return True

    def _forget(self, connection: GuardedConnection) -> None:
        self._open.pop(connection, None)
        self._by_handler.pop(connection.inner, None)

    def request_started(self, handler: object) -> None:
        if (connection := self._by_handler.get(handler)) is not None:
            connection.set_state(_REQUEST)

    def request_ended(self, handler: object) -> None:
        if (connection := self._by_handler.get(handler)) is not None:
            connection.set_state(_IDLE)


class GuardedConnection(asyncio.Protocol):
    """One connection: aiohttp's protocol (`inner`) with the header timeout and the limit around it."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol):
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.state = _HEAD
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.inner.connection_made(transport)
        if not self.guard.admit(self):
            log.warning("refusing a connection from %s: all %d connections are busy", self.peer, self.guard.limit)
            transport.write(_REFUSED)
            self.close()
            return
        self.set_state(_HEAD)

    def set_state(self, state: str) -> None:
        self.state = state
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if state == _HEAD:
            self._timer = asyncio.get_running_loop().call_later(self.guard.header_timeout, self._headers_late)

    def _headers_late(self) -> None:
        self._timer = None
        self.guard.timed_out += 1
        log.info("closing the connection from %s: no complete request headers within %s s", self.peer,
                 self.guard.header_timeout)  # fmt: skip
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self.state == _IDLE:
            self.set_state(_HEAD)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.guard._forget(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


GUARD = web.AppKey("connection_guard", ConnectionGuard)


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tell the guard when a connection's request starts (no header timeout from then) and ends (idle)."""
    guard = request.app[GUARD]
    protocol = request.protocol
    guard.request_started(protocol)
    try:
        return await handler(request)
    finally:
        guard.request_ended(protocol)


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with each connection guarded. It reuses TCPSite's own fields: only the protocol
    factory handed to `loop.create_server` differs (TCPSite has no parameter for it)."""

    def __init__(self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, **kwargs) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.guard.factory(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1]


def guard_app(app: web.Application, settings: Settings) -> ConnectionGuard:
    """Install the guard's middleware (first) and key in `app`, before it is frozen."""
    guard = ConnectionGuard(settings)
    app[GUARD] = guard
    app.middlewares.insert(0, guard_middleware)
    return guard
