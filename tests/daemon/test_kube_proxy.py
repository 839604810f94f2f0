"""HTTPS_PROXY and NO_PROXY for Kubernetes API calls.

A real loopback HTTP proxy that records each CONNECT and tunnels it, and the API simulator over
HTTPS: the API server excluded by NO_PROXY (host, CIDR) is reached directly; otherwise the
tunnel goes through the proxy named by HTTPS_PROXY (not HTTP_PROXY)."""
from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.identity import find_node
from nodeagent_sim.kube import KubeSim
from tests.cluster import NODE, PROVIDER, PROXY_VARIABLES
from tests.servers import ConnectProxy, refused_port


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
    with refused_port() as dead:
        clean_env.setenv("HTTPS_PROXY", proxy.url)
        clean_env.setenv("HTTP_PROXY", f"http://127.0.0.1:{dead}")
        _call(kube)
    assert proxy.connects == [f"127.0.0.1:{kube.port}"]


def test_the_daemon_honours_no_proxy(cluster, proxy):
    """End to end: the daemon, HTTPS_PROXY set to the recording proxy and NO_PROXY naming the
    API server, reaches READY, cordons and drains, and the proxy sees no CONNECT at all."""
    cluster.add_workload(count=2)
    env = cluster.env()  # no proxy variable of this machine's
    env.update(HTTPS_PROXY=proxy.url, NO_PROXY="localhost,127.0.0.1")
    daemon = cluster.start_agent(env=env)
    notice = cluster.spot(30)
    daemon.wait_line(r"drained: ", timeout_s=30)
    cluster.finish().check(notice, fault_log=r"drained: ")
    assert proxy.connects == []
