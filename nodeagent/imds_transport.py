"""The HTTP under the IMDS client: one kept-alive connection, every wait bounded by a deadline.

http.client, not requests: the agent polls IMDS for as long as it runs (at the defaults the spot
and ASG paths every second, rebalance every 5 s, scheduled every 30 s: pacing.py), and requests'
layers cost two to three times the CPU of http.client for the same GET (docs/performance.md);
the rest of the project uses requests. http.client never reads proxy environment variables:
IMDS must never be reached through a proxy, and a proxied token PUT would carry X-Forwarded-For
and be refused. Plain HTTP only: IMDS has no TLS endpoint.

- One connection, reused across polls: a connection the server closed while idle is noticed
  before reuse and reopened, and one that closes as it is reused is sent again once.
- Each send has a wall-clock deadline (the caller's): the read timeout applies per socket read,
  so without it a server trickling a byte a second could hold the poll loop for as long as it
  liked. Every socket read and write waits at most min(timeout, time left).
- Bodies are read with a cap; past it the connection is dropped (the rest is never read).

What fails here is a TransportError (no usable reply: its str() is the operator-facing phrase) or
BodyTooLarge. Retries, the token and what an answer means are the client's (imds.py).
"""

from __future__ import annotations

import http.client
import select
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes


class TransportError(Exception):
    """No usable reply arrived. str() is the operator-facing phrase ("refused the connection")."""


class ConnectTimeout(TransportError):
    pass


class ReadTimeout(TransportError):
    pass


class DeadlineExceeded(TransportError):
    """The call's wall-clock deadline passed: never retried, there is no time left for it."""


class _DeadlineSocket(socket.socket):
    """A socket whose every read and write waits at most min(io_timeout, time to the deadline).

    http.client reads through sock.makefile(), which calls recv_into on this object, so the
    deadline reaches header parsing and body reads alike.
    """

    io_timeout: float = 1.0
    deadline: float = float("inf")

    def _budget(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded()
        budget = min(self.io_timeout, left)
        if self.gettimeout() != budget:  # settimeout is a system call (ioctl) even when unchanged
            self.settimeout(budget)
        return budget

    def recv_into(self, buffer, nbytes=0, flags=0):
        budget = self._budget()
        try:
            return super().recv_into(buffer, nbytes, flags)
        except socket.timeout:
            if budget < self.io_timeout:
                raise DeadlineExceeded() from None
            raise ReadTimeout(f"did not answer within {self.io_timeout:g}s") from None

    def sendall(self, data, flags=0):
        budget = self._budget()
        try:
            return super().sendall(data, flags)
        except socket.timeout:
            if budget < self.io_timeout:
                raise DeadlineExceeded() from None
            raise ReadTimeout(f"did not answer within {self.io_timeout:g}s") from None


class _StaleConnection(TransportError):
    """The connection was closed before any of the answer arrived (internal to one attempt)."""


class _Connection(http.client.HTTPConnection):
    """http.client's connection with connect and I/O bounded by a per-call deadline."""

    def __init__(self, host: str, port: int | None, connect_timeout: float, io_timeout: float):
        super().__init__(host, port, timeout=io_timeout)
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.deadline = float("inf")

    def connect(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded()
        timeout = min(self.connect_timeout, left)
        try:
            raw = socket.create_connection((self.host, self.port), timeout)
        except socket.timeout:
            if timeout < self.connect_timeout:
                raise DeadlineExceeded() from None
            raise ConnectTimeout(f"did not accept a connection within {self.connect_timeout:g}s") from None
        sock = _DeadlineSocket(raw.family, raw.type, raw.proto, fileno=raw.detach())
        sock.io_timeout = self.io_timeout
        sock.deadline = self.deadline
        sock.settimeout(self.io_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client does
        self.sock = sock

    def arm(self, deadline: float) -> None:
        """Set the deadline for what follows; drop a kept-alive socket the server has closed."""
        self.deadline = deadline
        sock = self.sock
        if not isinstance(sock, _DeadlineSocket):  # none yet (connect() makes one)
            return
        # Readable while idle means EOF (or junk): the server is done with this connection.
        if select.select([sock], [], [], 0)[0]:
            self.close()
            return
        sock.deadline = deadline


class BodyTooLarge(Exception):
    """A response body exceeded the cap; the connection was dropped."""


class Transport:
    """One kept-alive HTTP connection to IMDS. Not thread safe: the client's lock serialises it.

    `requests` counts requests sent and `last_status` is the status of the last response (None
    when none arrived): the client's metrics read them."""

    def __init__(
        self,
        host: str,
        port: int | None,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_body_bytes: int,
    ):
        self._connection = _Connection(host, port, connect_timeout_s, read_timeout_s)
        self._max_body_bytes = max_body_bytes
        self.requests = 0
        self.last_status: int | None = None

    def close(self) -> None:
        self._connection.close()

    def send(self, method: str, url: str, headers: dict[str, str], deadline: float) -> Reply:
        """One request on the kept-alive connection, done by `deadline` (monotonic)."""
        connection = self._connection
        connection.arm(deadline)
        if connection.sock is not None:
            try:
                return self._send_on_connection(method, url, headers)
            except _StaleConnection:
                # The server closed the kept-alive connection as we reused it (its idle timeout
                # raced our poll): that is not IMDS failing, so resend once on a new connection.
                connection.arm(deadline)
        try:
            return self._send_on_connection(method, url, headers)
        except _StaleConnection as exc:
            raise TransportError("dropped the connection") from exc.__cause__

    def _send_on_connection(self, method: str, url: str, headers: dict[str, str]) -> Reply:
        self.requests += 1
        self.last_status = None
        connection = self._connection
        try:
            if connection.sock is None:
                connection.connect()
            connection.putrequest(method, url)  # adds Host and Accept-Encoding: identity
            for name, value in headers.items():
                connection.putheader(name, value)
            if method == "PUT":
                connection.putheader("Content-Length", "0")
            try:
                connection.endheaders()
                response = connection.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                raise _StaleConnection() from exc  # closed before a single byte of the answer
            self.last_status = response.status
            cap = self._max_body_bytes
            body = response.read(cap + 1)
            while len(body) <= cap and not response.isclosed():
                more = response.read(cap + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > cap:
                connection.close()  # the rest is never read, so the connection is unusable
                raise BodyTooLarge()
            return Reply(response.status, response.msg, body)
        except TransportError:
            connection.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError(_describe_failure(exc)) from exc
        except BaseException:
            connection.close()  # a half-read response must not be mistaken for the next one
            raise


def _describe_failure(exc: BaseException) -> str:
    """A short, operator-facing phrase instead of a nested repr."""
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "refused" in text.lower():
        return "refused the connection"
    if isinstance(exc, http.client.IncompleteRead):
        return "broke off the response"
    if isinstance(
        exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, http.client.RemoteDisconnected)
    ):
        return "dropped the connection"
    if isinstance(exc, http.client.HTTPException):
        return f"sent a malformed response ({type(exc).__name__})"
    return f"is unreachable ({type(exc).__name__}: {text[:160]})"
