"""Every Kubernetes API request has a wall-clock deadline (issue 13 row 10).

A loopback HTTPS server that trickles its answer, one byte every 0.3 s: urllib3's read timeout
(1 s here) never fires because each read gets a byte. The request must still end by connect +
read timeout (2 s) with a clear error, and the same client must work normally afterwards."""
from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest

from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import ApiUnavailable
from nodeagent_sim.kube_auth import write_kubeconfig
from nodeagent_sim.kube_tls import make_server_cert

FAST = b'{"kind": "Node", "metadata": {"name": "n"}}'


class TrickleServer:
    def __init__(self, directory: Path, gap_s: float = 0.3):
        self.cert = make_server_cert(str(directory / "tls"))
        self.context = self.cert.server_context()
        self.gap_s = gap_s
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.stop = threading.Event()
        self.bytes_trickled = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                while not self.stop.is_set():
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        head += chunk
                    path = head.split(b" ", 2)[1]
                    if path.startswith(b"/fast"):
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                     + str(len(FAST)).encode() + b"\r\n\r\n" + FAST)
                        continue
                    body = b" " * 100_000 + FAST
                    head_out = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                + str(len(body)).encode() + b"\r\n\r\n")
                    if path.startswith(b"/slow-body"):
                        conn.sendall(head_out)
                        data = body
                    else:
                        data = head_out + body
                    for index in range(len(data)):
                        if self.stop.wait(self.gap_s):
                            return
                        conn.sendall(data[index:index + 1])
                        self.bytes_trickled += 1
        except (OSError, ssl.SSLError):
            return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


@pytest.fixture
def trickle(tmp_path):
    server = TrickleServer(tmp_path)
    yield server
    server.close()


@pytest.mark.parametrize("path", ["/slow-head", "/slow-body"])
def test_a_trickled_answer_is_cut_at_the_deadline(tmp_path, trickle, path):
    kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), trickle.url, trickle.cert.ca_file, {"token": "t"})
    api = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=1.0, read_timeout_s=1.0))
    outcome = {}

    def call() -> None:
        started = time.monotonic()
        try:
            api.request("GET", path)
            outcome["result"] = "answered"
        except ApiUnavailable as error:
            outcome["result"] = str(error)
        outcome["took"] = time.monotonic() - started

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=10)
    try:
        assert not worker.is_alive(), f"still waiting after 10 s ({trickle.bytes_trickled} bytes trickled)"
        assert outcome["result"] == (f"GET {path}: no complete answer within 2s (the server is sending too "
                                     "slowly); gave up"), outcome
        assert 1.9 <= outcome["took"] < 3.5, outcome
        assert trickle.bytes_trickled >= 4  # the per-read timeout was never what ended it
        assert api.request("GET", "/fast") == {"kind": "Node", "metadata": {"name": "n"}}  # the client recovers
    finally:
        api.close()


def test_a_deadline_never_touches_requests_that_finished(tmp_path, trickle):
    """Many quick requests on kept-alive connections, each under its own deadline: none is cut
    after it has finished (the connections stay usable)."""
    kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), trickle.url, trickle.cert.ca_file, {"token": "t"})
    api = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=0.1, read_timeout_s=0.2))
    try:
        started = time.monotonic()
        while time.monotonic() - started < 1.0:
            assert api.request("GET", "/fast")["kind"] == "Node"
    finally:
        api.close()
