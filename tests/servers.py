"""Loopback servers for the tests, beside the simulators: a webhook receiver, an HTTP(S) server for
any handler class, servers on bare sockets for behaviour http.server cannot produce (answers
trickled a byte at a time, keep-alive connections closed while idle), a CONNECT proxy, and ports
that never answer or refuse.

Every server binds 127.0.0.1 on a free port, serves on daemon threads and is a context manager
(or has stop()/close()), so a failing test leaves nothing listening.
"""
from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Type

SECRET_TOKEN = "T0SECRET/B0SECRET/xoxb-5ecret-w3bh00k-t0ken"
HEADER_SECRET = "Bearer hdr-5ecret-value-7781"


# ---------------------------------------------------------------------- http.server based


class HttpServer:
    """ThreadingHTTPServer on 127.0.0.1 with `handler`; HTTPS when `tls` (a server context) is given."""

    def __init__(self, handler: Type[BaseHTTPRequestHandler], tls: Optional[ssl.SSLContext] = None):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "HttpServer":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def answer_with(status: int, body: bytes = b"") -> Type[BaseHTTPRequestHandler]:
    """A handler class that answers every GET and POST with `status` and `body`."""

    class Fixed(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Fixed


@dataclass
class Received:
    path: str
    headers: Dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Receiver:
    """A webhook receiver: records every POST; `fail_next(n)` answers the next n with 500."""

    http: Optional[HttpServer] = None
    received: List[Received] = field(default_factory=list)
    statuses: List[int] = field(default_factory=list)
    _failures: List[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver._next_status()
                with receiver._lock:
                    receiver.statuses.append(status)
                    if status == 200:
                        receiver.received.append(Received(self.path, dict(self.headers.items()), body))
                reply = b"ok" if status == 200 else b"injected failure"
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.http = HttpServer(Handler)
        return self

    @property
    def port(self) -> int:
        assert self.http is not None
        return self.http.port

    def _next_status(self) -> int:
        with self._lock:
            if self._failures and self._failures[0] > 0:
                self._failures[0] -= 1
                return 500
            return 200

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures[:] = [count]

    def url(self, path: str = f"/services/{SECRET_TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> List[Tuple[str, object]]:
        with self._lock:
            return [(r.path, r.json()) for r in self.received]

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()


# ---------------------------------------------------------------------- bare sockets


class Listener:
    """A TCP listener on 127.0.0.1: each connection is served by `serve(conn)` on its own thread
    (TLS-wrapped first when `tls` is given); `connections` counts them, `closed` those closed."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None):
        self.tls = tls
        self.connections = 0
        self.closed = 0  # connections this server has closed
        self.bytes_trickled = 0
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)  # close() does not wake accept(): the loop looks at `stopping`
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            raw.settimeout(None)
            self.connections += 1
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            if self.tls is None:
                with raw:
                    self.serve(raw)
            else:
                with self.tls.wrap_socket(raw, server_side=True) as conn:
                    self.serve(conn)
        except (OSError, ssl.SSLError):
            return
        finally:
            self.closed += 1

    def serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def each_request(self, conn: socket.socket) -> Iterator[Tuple[str, str]]:
        """(method, target) of each request on a kept-alive connection, until the client closes it
        or the server stops."""
        rest = b""
        while not self.stopping.is_set():
            request = read_head(conn, rest)
            if request is None:
                return
            method, target, rest = request
            yield method, target

    def trickle(self, conn: socket.socket, data: bytes, gap_s: float, for_s: float = float("inf")) -> bool:
        """Send `data` one byte every `gap_s` seconds (the server's pace: wall time between bytes),
        counting them in `bytes_trickled`. False when cut short: the server stopping, or `for_s`
        passed (the caller then closes the connection)."""
        ends = time.monotonic() + for_s
        for index in range(len(data)):
            if self.stopping.wait(gap_s) or time.monotonic() > ends:
                return False
            conn.sendall(data[index:index + 1])
            self.bytes_trickled += 1
        return True

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        self.listener.close()

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_head(conn: socket.socket, buffered: bytes = b"") -> Optional[Tuple[str, str, bytes]]:
    """(method, target, bytes read past the head) of the next request; None at end of stream."""
    head = buffered
    while b"\r\n\r\n" not in head:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    method, target = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")[:2]
    return method, target, rest


def plain_answer(body: bytes, content_type: str = "text/plain", extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class TrickleServer(Listener):
    """An HTTPS API server that trickles its answers one byte every `gap_s` seconds, so no single
    read ever times out. /fast answers at once; /slow-head trickles the whole answer, /slow-body
    only the body (a 100 kB JSON document)."""

    FAST = b'{"kind": "Node", "metadata": {"name": "n"}}'

    def __init__(self, directory: Path, gap_s: float = 0.3):
        from nodeagent_sim.kube_tls import make_server_cert

        self.cert = make_server_cert(str(directory / "tls"))
        self.gap_s = gap_s
        super().__init__(tls=self.cert.server_context())

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        for _, path in self.each_request(conn):
            if path.startswith("/fast"):
                conn.sendall(plain_answer(self.FAST, "application/json"))
                continue
            body = b" " * 100_000 + self.FAST
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            if path.startswith("/slow-body"):
                conn.sendall(head)
                data = body
            else:
                data = head + body
            if not self.trickle(conn, data, self.gap_s):
                return


class RawImdsServer(Listener):
    """An IMDS look-alike on bare sockets, for behaviour the simulator cannot produce: answers
    trickled a byte at a time, and keep-alive connections closed while idle.

    `trickle` names the requests ("PUT" or "GET") answered one byte every `byte_every_s` seconds
    (for at most `trickle_for_s`, then the connection is closed). `close_after_each` closes every
    connection after one answer while still advertising keep-alive, as a server whose idle
    timeout fires between two polls does. `requests` lists "METHOD path" of each request.
    """

    def __init__(self, trickle: tuple = (), byte_every_s: float = 0.2, trickle_for_s: float = 30,
                 close_after_each: bool = False):
        self.trickled = trickle
        self.byte_every_s = byte_every_s
        self.trickle_for_s = trickle_for_s
        self.close_after_each = close_after_each
        self.requests: List[str] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, conn: socket.socket) -> None:
        for method, path in self.each_request(conn):
            self.requests.append(f"{method} {path}")
            if method == "PUT":
                answer = plain_answer(b"RAWTOKEN", extra="X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n")
            else:
                answer = plain_answer(b"i-0123456789abcdef0", extra="X-aws-ec2-metadata-token-ttl-seconds: 21000\r\n")
            if method in self.trickled:
                if not self.trickle(conn, answer, self.byte_every_s, self.trickle_for_s):
                    return
            else:
                conn.sendall(answer)
            if self.close_after_each:
                return


class ConnectProxy(Listener):
    """A forward proxy that only does CONNECT; `connects` lists the targets asked for."""

    def __init__(self) -> None:
        self.connects: List[str] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self, client: socket.socket) -> None:
        request = read_head(client)
        if request is None:
            return
        method, target, _ = request
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        self.connects.append(target)
        host, port = target.rsplit(":", 1)
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with upstream:
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            peers = {client: upstream, upstream: client}
            while not self.stopping.is_set():
                ready, _, _ = select.select(list(peers), [], [], 0.5)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (into the backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        yield int(silent.getsockname()[1])


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A port bound but not listening: a connection there is refused."""
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        yield int(dead.getsockname()[1])
