"""The API client's TLS and the memory its failed connections hold, over real sockets.

- The client's one TLS context follows its files: the kubelet renews its client certificate by
  pointing `kubelet-client-current.pem` (certificate and key in one file) at a new file, and
  the next connection must present the new certificate. A certificate that has gone is a clear
  error for that request, and the client works again once one is there.
- Connections that fail (the API server down) leave reference cycles holding their sockets; the
  first request after the failures frees them.
"""
from __future__ import annotations

import gc
import json
import os
import shutil
import ssl
import subprocess
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from nodeagent.cycles import MIN_INTERVAL_S
from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import ApiUnavailable
from nodeagent_sim.kube import KubeSim
from nodeagent_sim.kube_auth import write_kubeconfig
from nodeagent_sim.kube_tls import ServerCert, make_server_cert
from tests.cluster import NODE
from tests.helpers import garbage_count
from tests.servers import HttpServer


def _client_pem(directory: Path, ca: ServerCert, common_name: str) -> Path:
    """A client certificate signed by `ca`, with its key, in one PEM file (the kubelet's layout)."""
    key, csr, crt = (directory / f"{common_name}.{ext}" for ext in ("key", "csr", "crt"))
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/O=system:nodes/CN={common_name}")
    ca_key = str(Path(ca.ca_file).parent / "ca.key")
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", ca.ca_file, "-CAkey", ca_key,
        "-CAcreateserial", "-out", str(crt), "-days", "1", "-sha256")
    pem = directory / f"kubelet-client-{common_name}.pem"
    pem.write_bytes(crt.read_bytes() + key.read_bytes())
    return pem


class WhoAmI(BaseHTTPRequestHandler):
    """Answers with the common name of the client certificate, and closes the connection so every
    request is a new TLS handshake."""

    def do_GET(self) -> None:
        subject = dict(pair[0] for pair in self.connection.getpeercert()["subject"])
        body = json.dumps({"cn": subject["commonName"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


def _point(link: Path, target: Path) -> None:
    """Re-point `link` at `target` in one rename, as the kubelet's certificate manager does."""
    staged = link.with_name(link.name + ".new")
    os.symlink(target, staged)
    os.replace(staged, link)


def test_a_renewed_client_certificate_is_presented_on_the_next_connection(tmp_path: Path):
    server_cert = make_server_cert(str(tmp_path / "server"))
    server_context = server_cert.server_context()
    server_context.verify_mode = ssl.CERT_REQUIRED
    server_context.load_verify_locations(server_cert.ca_file)  # client certificates from the same CA
    first = _client_pem(tmp_path, server_cert, "node-first")
    renewed = _client_pem(tmp_path, server_cert, "node-renewed")
    current = tmp_path / "kubelet-client-current.pem"
    _point(current, first)
    with HttpServer(WhoAmI, tls=server_context) as server:
        kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), server.url, server_cert.ca_file,
                                      {"client-certificate": str(current), "client-key": str(current)})
        api = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=2.0, read_timeout_s=5.0))
        try:
            assert api.request("GET", "/whoami") == {"cn": "node-first"}
            assert api.request("GET", "/whoami") == {"cn": "node-first"}
            _point(current, tmp_path / "kubelet-client-gone.pem")
            with pytest.raises(ApiUnavailable) as missing:
                api.request("GET", "/whoami")
            assert "FileNotFoundError" in str(missing.value) and "/whoami" in str(missing.value)
            _point(current, renewed)
            assert api.request("GET", "/whoami") == {"cn": "node-renewed"}
            assert api.tls.builds == 2  # once per certificate, not once per connection
        finally:
            api.close()


def test_a_replaced_certificate_authority_is_read_before_the_next_connection(tmp_path: Path):
    server_cert = make_server_cert(str(tmp_path / "server"))
    other = make_server_cert(str(tmp_path / "other"))
    ca_file = tmp_path / "ca.crt"
    shutil.copy(other.ca_file, ca_file)  # the wrong authority: the server is refused
    with HttpServer(WhoAmI, tls=server_cert.server_context()) as server:
        kubeconfig = write_kubeconfig(str(tmp_path / "kubeconfig"), server.url, str(ca_file), {"token": "t"})
        api = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=2.0, read_timeout_s=5.0))
        try:
            with pytest.raises(ApiUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                api.request("GET", "/whoami")
            staged = tmp_path / "ca.crt.new"
            shutil.copy(server_cert.ca_file, staged)
            os.replace(staged, ca_file)
            with pytest.raises(ApiUnavailable) as no_client_cert:  # verified now; the server wants a cert
                api.request("GET", "/whoami")
            assert "CERTIFICATE_VERIFY_FAILED" not in str(no_client_cert.value)
        finally:
            api.close()


def test_the_request_after_failed_connections_frees_what_they_left(tmp_path: Path):
    gc.collect()
    gc.disable()  # only the client's own collection may run
    try:
        with KubeSim() as kube:
            kube.add_node(NODE, provider_id="aws:///us-east-1a/i-0123456789abcdef0")
            kubeconfig = kube.write_kubeconfig(str(tmp_path / "kubeconfig"), kube.add_node_token(NODE))
            api = KubeApi(KubeOptions(kubeconfig=kubeconfig, connect_timeout_s=2.0, read_timeout_s=5.0))
            try:
                api.request("GET", f"/api/v1/nodes/{NODE}")
                kube.down_for(60)
                with pytest.raises(ApiUnavailable):
                    api.request("GET", f"/api/v1/nodes/{NODE}")
                time.sleep(MIN_INTERVAL_S + 0.1)  # collections are spaced by at least this
                left = garbage_count(ssl.SSLSocket)
                assert left > 0  # what the collector would otherwise wait to free

                with pytest.raises(ApiUnavailable):
                    api.request("GET", f"/api/v1/nodes/{NODE}")
                time.sleep(MIN_INTERVAL_S + 0.1)  # collections are spaced by at least this
                kube.up()
                assert api.request("GET", f"/api/v1/nodes/{NODE}")["metadata"]["name"] == NODE
                assert garbage_count(ssl.SSLSocket) == 0
            finally:
                api.close()
    finally:
        gc.enable()
