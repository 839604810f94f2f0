"""A wall-clock deadline for each Kubernetes API request.

urllib3's timeouts apply to each connect and each read: a server (or anything in the path)
that sends one byte just inside the read timeout can hold a request for as long as it likes, and
with it the drain step, the worker, or startup. Here each request runs under `DEADLINES.limit`;
the connection classes installed in the client's pool report the sockets a request uses (the
raw socket while connecting and in the TLS handshake, the TLS socket once connected), and one
reaper thread shuts those sockets down when the request's time is up. The blocked read then
fails at once and the request is reported as too slow. Watches run without a limit: they are
long by design and carry their own read timeout.

A limit can also cap the answer's size (`max_bytes`): the body of a response read inside it
(an error's body too, which the client reads on its own) is refused with ResponseTooLarge once it
passes the cap, before more of it is held in memory.
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
from urllib3.response import HTTPResponse

READ_CHUNK = 64 << 10


class ResponseTooLarge(Exception):
    def __init__(self, status: int, cap: int):
        super().__init__(f"HTTP {status} answer larger than {cap} bytes")
        self.status = status
        self.cap = cap


@dataclass
class Limit:
    deadline: float
    seconds: float
    max_bytes: int | None = None
    expired: bool = False
    sockets: list[socket.socket] = field(default_factory=list)


class Deadlines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._by_thread: dict[int, Limit] = {}
        self._reaper: threading.Thread | None = None

    @contextlib.contextmanager
    def limit(self, seconds: float, max_bytes: int | None = None) -> Iterator[Limit]:
        """Requests made by this thread inside the block are cut at `seconds` from now, and their
        answers refused past `max_bytes`."""
        entry = Limit(time.monotonic() + seconds, seconds, max_bytes)
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

    def max_bytes(self) -> int | None:
        """The size cap of this thread's current request, if any."""
        with self._lock:
            entry = self._by_thread.get(threading.get_ident())
            return entry.max_bytes if entry is not None else None

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


class CappedHTTPResponse(HTTPResponse):
    """Reads no more of a body than the current limit's `max_bytes`."""

    _capped_read = 0

    def read(self, amt=None, decode_content=None, cache_content=False):
        cap = DEADLINES.max_bytes()
        if cap is None:
            return super().read(amt, decode_content, cache_content)
        if self.length_remaining is not None and self._capped_read + self.length_remaining > cap:
            raise ResponseTooLarge(self.status, cap)
        if amt is not None:
            return self._count(super().read(amt, decode_content, cache_content), cap)
        chunks = []
        while True:
            chunk = self._count(super().read(READ_CHUNK, decode_content), cap)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        if cache_content:
            self._body = data
        return data

    def _count(self, chunk: bytes, cap: int) -> bytes:
        self._capped_read += len(chunk)
        if self._capped_read > cap:
            raise ResponseTooLarge(self.status, cap)
        return chunk


class _Tracked:
    def getresponse(self, *args, **kwargs):
        response = super().getresponse(*args, **kwargs)  # type: ignore[misc]
        # urllib3 builds the response itself; same class but for `read`, so swapping is safe.
        response.__class__ = CappedHTTPResponse
        return response

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
