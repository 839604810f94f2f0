"""HTTPS_PROXY and NO_PROXY for Kubernetes API calls (issue 13 row 4).

A real loopback HTTP proxy that records each CONNECT and tunnels it, and the API simulator over
HTTPS: the API server excluded by NO_PROXY (host, CIDR) is reached directly; otherwise the
tunnel goes through the proxy named by HTTPS_PROXY (not HTTP_PROXY)."""
from __future__ import annotations

import select
import socket
import threading
from pathlib import Path
from typing import List

import pytest

from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.identity import find_node
from nodeagent_sim.kube import KubeSim
from tests.faults.conftest import NODE, PROVIDER, Cluster

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy",
                   "ALL_PROXY", "all_proxy")


class ConnectProxy:
    """A forward proxy on 127.0.0.1 that only does CONNECT; `connects` lists the targets asked for."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.connects: List[str] = []
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            method, target, _ = request_line.split(" ", 2)
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
                self._pipe(client, upstream)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.5)
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                peers[sock].sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()


@pytest.fixture
def proxy():
    made = ConnectProxy()
    yield made
    made.close()


@pytest.fixture
def kube(tmp_path):
    sim = KubeSim().start()
    sim.add_node(NODE, provider_id=PROVIDER)
    sim.kubeconfig = sim.write_kubeconfig(str(tmp_path / "kubeconfig"), sim.add_node_token(NODE))
    yield sim
    sim.stop()


@pytest.fixture
def clean_env(monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _call(kube: KubeSim, server: str = "") -> None:
    path = kube.kubeconfig
    if server:  # the same API server under another name
        text = Path(path).read_text().replace(kube.url, server)
        path = path + ".named"
        Path(path).write_text(text)
    api = KubeApi(KubeOptions(kubeconfig=path))
    try:
        assert find_node(api, "", "i-0123456789abcdef0", "us-east-1a").name == NODE
    finally:
        api.close()


@pytest.mark.parametrize("no_proxy", ["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8, 127.0.0.1", "*"])
def test_no_proxy_excludes_the_api_server(clean_env, proxy, kube, no_proxy):
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    clean_env.setenv("NO_PROXY", no_proxy)
    _call(kube)
    assert proxy.connects == []


def test_no_proxy_by_host_name_and_domain_suffix(clean_env, proxy, kube):
    clean_env.setenv("https_proxy", proxy.url)
    clean_env.setenv("no_proxy", ".example.com,localhost")
    _call(kube, server=kube.url.replace("127.0.0.1", "localhost"))
    assert proxy.connects == []


@pytest.mark.parametrize("no_proxy", [None, "", "10.0.0.0/8,.example.com,127.0.0.2"])
def test_the_proxy_is_used_when_the_server_is_not_excluded(clean_env, proxy, kube, no_proxy):
    clean_env.setenv("HTTPS_PROXY", proxy.url)
    if no_proxy is not None:
        clean_env.setenv("NO_PROXY", no_proxy)
    _call(kube)
    assert proxy.connects and set(proxy.connects) == {f"127.0.0.1:{kube.port}"}


def test_an_https_server_uses_https_proxy_not_http_proxy(clean_env, proxy, kube):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # bound, never listening: a connection there is refused
    try:
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead.getsockname()[1]}")
        _call(kube)
    finally:
        dead.close()
    assert proxy.connects == [f"127.0.0.1:{kube.port}"]


def test_the_daemon_honours_no_proxy(tmp_path, proxy):
    """End to end: the daemon, HTTPS_PROXY set to the recording proxy and NO_PROXY naming the
    API server, reaches READY, cordons and drains, and the proxy sees no CONNECT at all."""
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=2)
        env_keys = cluster.settings()
        from tests.helpers import Daemon, daemon_env

        env = daemon_env(tmp_path, **env_keys)
        for name in PROXY_VARIABLES:
            env.pop(name, None)
        env.update(HTTPS_PROXY=proxy.url, NO_PROXY="localhost,127.0.0.1")
        daemon = Daemon(env)
        cluster.daemons.append(daemon)
        daemon.start()
        daemon.wait_line(r"acting on node", timeout_s=30)
        notice = cluster.spot(30)
        daemon.wait_line(r"drained: ", timeout_s=30)
        cluster.finish().check(notice, fault_log=r"drained: ")
        assert proxy.connects == []
    finally:
        cluster.finish()
