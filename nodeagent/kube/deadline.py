"""A wall-clock deadline for each Kubernetes API request.

urllib3's timeouts apply to each connect and each read: a server (or anything in the path)
that sends one byte just inside the read timeout can hold a request for as long as it likes, and
with it the drain step, the worker, or startup. Here each request runs under `DEADLINES.limit`;
the connection classes installed in the client's pool report the sockets a request uses (the
raw socket while connecting and in the TLS handshake, the TLS socket once connected), and one
reaper thread shuts those sockets down when the request's time is up. The blocked read then
fails at once and the request is reported as too slow. Watches run without a limit: they are
long by design and carry their own read timeout.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection


@dataclass
class Limit:
    deadline: float
    seconds: float
    expired: bool = False
    sockets: list[socket.socket] = field(default_factory=list)


class Deadlines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._by_thread: dict[int, Limit] = {}
        self._reaper: threading.Thread | None = None

    @contextlib.contextmanager
    def limit(self, seconds: float) -> Iterator[Limit]:
        """Requests made by this thread inside the block are cut at `seconds` from now."""
        entry = Limit(time.monotonic() + seconds, seconds)
        me = threading.get_ident()
        with self._lock:
            self._by_thread[me] = entry
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, name="api-deadline", daemon=True)
                self._reaper.start()
            self._wake.notify()
        try:
            yield entry
        finally:
            with self._lock:
                self._by_thread.pop(me, None)

    def track(self, sock: socket.socket | None) -> None:
        """Called by the connection classes: this thread's current request uses `sock`."""
        if sock is None:
            return
        with self._lock:
            entry = self._by_thread.get(threading.get_ident())
            if entry is None:
                return
            entry.sockets.append(sock)
            if entry.expired:
                _cut(sock)

    def _reap(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                next_due = None
                for entry in self._by_thread.values():
                    if entry.expired:
                        continue
                    if entry.deadline <= now:
                        entry.expired = True
                        for sock in entry.sockets:
                            _cut(sock)
                    elif next_due is None or entry.deadline < next_due:
                        next_due = entry.deadline
                self._wake.wait(None if next_due is None else max(0.005, next_due - now))


def _cut(sock: socket.socket) -> None:
    """Shut the connection down under whoever is blocked on it. socket.socket.shutdown, not
    SSLSocket.shutdown: the TLS object is left to the reading thread, which sees end of stream."""
    with contextlib.suppress(OSError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


DEADLINES = Deadlines()


class _Tracked:
    def _new_conn(self):
        sock = super()._new_conn()  # type: ignore[misc]
        DEADLINES.track(sock)  # connecting and the TLS handshake
        return sock

    def request(self, *args, **kwargs):
        DEADLINES.track(getattr(self, "sock", None))  # a kept-alive connection, or the TLS socket
        return super().request(*args, **kwargs)  # type: ignore[misc]


class DeadlineHTTPConnection(_Tracked, HTTPConnection):
    pass


class DeadlineHTTPSConnection(_Tracked, HTTPSConnection):
    pass


class DeadlineHTTPConnectionPool(urllib3.HTTPConnectionPool):
    ConnectionCls = DeadlineHTTPConnection


class DeadlineHTTPSConnectionPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = DeadlineHTTPSConnection


def install(pool_manager: urllib3.PoolManager) -> None:
    """Make every pool the manager creates from now on use the tracked connections."""
    pool_manager.pool_classes_by_scheme = {
        "http": DeadlineHTTPConnectionPool,
        "https": DeadlineHTTPSConnectionPool,
    }
