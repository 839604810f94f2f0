"""Every Kubernetes API answer is bounded: a body past MAX_BODY_BYTES and a watch event past
MAX_WATCH_LINE_BYTES fail that one request with a clear error, before the rest is read, and the
client goes on working. A real HTTPS server on loopback sends the oversized answers."""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nodeagent.kube.client import MAX_BODY_BYTES, MAX_WATCH_LINE_BYTES, KubeApi, KubeOptions
from nodeagent.kube.errors import ApiError
from nodeagent_sim.kube_auth import write_kubeconfig
from nodeagent_sim.kube_tls import make_server_cert
from tests.cluster import NODE
from tests.servers import HttpServer

SMALL = b'{"kind": "Node", "metadata": {"name": "n"}}'
HUGE = MAX_BODY_BYTES * 3  # 48 MiB of JSON whitespace before SMALL: valid JSON, far too large
CHUNK = b" " * (1 << 20)


class Oversized(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sent: dict = {}

    def log_message(self, *args) -> None:  # noqa: D102 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?")[0]
        if path == "/fast":
            self._plain(200, SMALL)
        elif path == "/declared":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(HUGE + len(SMALL)))
            self.end_headers()
            self._stream(HUGE, chunked=False)
        elif path in ("/chunked", "/error"):
            self.send_response(200 if path == "/chunked" else 500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._stream(HUGE, chunked=True)
        elif path == "/api/v1/pods":  # a watch whose first event never ends
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._stream(MAX_WATCH_LINE_BYTES * 4, chunked=True, prefix=b'{"type": "ADDED", "object": {"x": "')

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, size: int, *, chunked: bool, prefix: bytes = b"") -> None:
        sent = 0
        try:
            pieces = [prefix] if prefix else []
            while sent < size:
                pieces.append(CHUNK)
                for piece in pieces:
                    data = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
                    self.wfile.write(data)
                    sent += len(piece)
                pieces = []
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMALL), SMALL) if chunked else SMALL)
        except OSError:  # the client hung up: what we want
            pass
        finally:
            Oversized.sent[self.path.split("?")[0]] = sent
            self.close_connection = True


@pytest.fixture
def api(tmp_path: Path):
    cert = make_server_cert(str(tmp_path / "tls"))
    with HttpServer(Oversized, tls=cert.server_context()) as server:
        kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), server.url, cert.ca_file, {"token": "t"})
        client = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=2.0, read_timeout_s=20.0))
        yield client
        client.close()


@pytest.mark.parametrize("path, status", [("/declared", 200), ("/chunked", 200), ("/error", 500)])
def test_an_answer_past_the_cap_fails_that_request_clearly_and_is_not_read_whole(api, path, status):
    with pytest.raises(ApiError) as raised:
        api.request("GET", path)
    error = raised.value
    assert (error.status, error.reason) == (status, "TooLarge"), error
    assert f"GET {path}: HTTP {status} TooLarge: the answer is larger than 16 MiB; refused" == str(error)
    assert api.request("GET", "/fast") == {"kind": "Node", "metadata": {"name": "n"}}, "the client goes on"


def test_a_watch_event_past_the_cap_fails_the_watch_clearly(api):
    with pytest.raises(ApiError) as raised:
        for _ in api.stream_lines("/api/v1/pods", [("watch", "true")], read_timeout_s=20):
            pass
    assert raised.value.reason == "TooLarge" and "a watch event is larger than 4 MiB" in str(raised.value)
    assert api.request("GET", "/fast")["kind"] == "Node"


def test_the_pod_list_is_read_in_pages(tmp_path: Path):
    from nodeagent.kube.client import LIST_PAGE
    from nodeagent_sim.kube import KubeSim

    node = NODE
    with KubeSim() as kube:
        kube.add_node(node, provider_id="aws:///us-east-1a/i-0123456789abcdef0")
        for i in range(LIST_PAGE * 2 + 7):
            kube.add_pod(f"web-{i:04d}", node=node, owner_kind="ReplicaSet", owner_name="web")
        kubeconfig = kube.write_kubeconfig(str(tmp_path / "kubeconfig"), kube.add_node_token(node))
        client = KubeApi(KubeOptions(kubeconfig=kubeconfig))
        try:
            items, resource_version = client.list_all("/api/v1/pods", [("fieldSelector", f"spec.nodeName={node}")])
        finally:
            client.close()
        lists = [r for r in kube.requests if r.verb == "list"]
    assert len(items) == LIST_PAGE * 2 + 7 and len({i["metadata"]["uid"] for i in items}) == len(items)
    assert resource_version
    assert [r.query.get("limit") for r in lists] == [str(LIST_PAGE)] * 3
    assert "continue" not in lists[0].query and all("continue" in r.query for r in lists[1:])
