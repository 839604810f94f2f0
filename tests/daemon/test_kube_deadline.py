"""Every Kubernetes API request has a wall-clock deadline.

A loopback HTTPS server that trickles its answer, one byte every 0.3 s: urllib3's read timeout
(1 s here) never fires because each read gets a byte. The request must still end by connect +
read timeout (2 s) with a clear error, and the same client must work normally afterwards."""
from __future__ import annotations

import threading
import time

import pytest

from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import ApiUnavailable
from nodeagent_sim.kube_auth import write_kubeconfig
from tests.servers import TrickleServer


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
