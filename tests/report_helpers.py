"""Shared machinery for the operator-feature tests: both simulators with a small spot node, a
local webhook receiver, and running `nodeagent <command>` as a real subprocess."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from nodeagent_sim.imds import ImdsSim
from nodeagent_sim.kube import KubeSim
from tests.helpers import REPO, daemon_env

NODE = "ip-10-0-1-2.ec2.internal"
INSTANCE_ID = "i-0123456789abcdef0"
ZONE = "us-east-1a"
SECRET_TOKEN = "T0SECRET/B0SECRET/xoxb-5ecret-w3bh00k-t0ken"
HEADER_SECRET = "Bearer hdr-5ecret-value-7781"


@dataclass
class Sims:
    imds: ImdsSim
    kube: KubeSim
    kubeconfig: str
    tmp: Path
    evictable: List[str]

    def env(self, **keys: str) -> Dict[str, str]:
        base = {"IMDS_URL": self.imds.url, "KUBECONFIG": self.kubeconfig, "DRAIN_MARGIN": "2s"}
        base.update(keys)
        env = daemon_env(self.tmp, **base)
        env["TMPDIR"] = str(self.tmp)  # the drill's own state directory lands in the test's tmp_path
        for name in [k for k in env if k.lower() in ("http_proxy", "https_proxy", "all_proxy")]:
            del env[name]  # the webhook receiver is on loopback; a machine-wide proxy must not apply
        return env

    def stop(self) -> None:
        self.kube.stop()
        self.imds.stop()


def populate(kube: KubeSim, grace_s: int = 30) -> List[str]:
    """A spot node with 5 evictable pods and 3 that stay (DaemonSet, mirror, finished Job)."""
    kube.add_node(NODE, provider_id=f"aws:///{ZONE}/{INSTANCE_ID}",
                  labels={"lifecycle": "Ec2Spot", "kubernetes.io/hostname": NODE})
    evictable = []
    for i in range(3):
        kube.add_pod(f"web-{i}", "default", node=NODE, labels={"app": "web"}, owner_kind="ReplicaSet",
                     owner_name="web-7d9f", grace_s=grace_s)
        evictable.append(f"default/web-{i}")
    kube.add_pod("db-0", "default", node=NODE, owner_kind="StatefulSet", owner_name="db", grace_s=grace_s)
    kube.add_pod("coredns-0", "kube-system", node=NODE, priority_class="system-cluster-critical",
                 owner_kind="ReplicaSet", owner_name="coredns")
    evictable += ["default/db-0", "kube-system/coredns-0"]
    kube.add_pod("kube-proxy-x1", "kube-system", node=NODE, owner_kind="DaemonSet", owner_name="kube-proxy")
    kube.add_pod(f"static-{NODE}", "kube-system", node=NODE, mirror=True)
    kube.add_pod("migrate-1", "default", node=NODE, owner_kind="Job", owner_name="migrate", phase="Succeeded")
    return evictable


def start_sims(tmp_path: Path, *, time_scale: float = 0.02, grace_s: int = 30) -> Sims:
    imds = ImdsSim(instance_id=INSTANCE_ID, availability_zone=ZONE, local_hostname=NODE, life_cycle="spot").start()
    kube = KubeSim(time_scale=time_scale, replace_evicted=True).start()
    evictable = populate(kube, grace_s)
    kubeconfig = kube.write_kubeconfig(str(tmp_path / "kubeconfig"), kube.add_node_token(NODE))
    return Sims(imds, kube, kubeconfig, tmp_path, evictable)


def node_labels(kube: KubeSim) -> Dict[str, str]:
    return dict(((kube.node(NODE) or {}).get("metadata") or {}).get("labels") or {})


def evictable_left(kube: KubeSim, evictable: Sequence[str]) -> List[str]:
    present = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in kube.pods(node=NODE)}
    return [key for key in evictable if key in present]


def run_cli(args: Sequence[str], env: Dict[str, str], timeout_s: float = 90,
            python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "nodeagent", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=timeout_s)


# ------------------------------------------------------------------ a webhook receiver


@dataclass
class Received:
    path: str
    headers: Dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Receiver:
    """http.server on 127.0.0.1 recording every POST; `fail_next(n)` answers n of them with 500."""

    server: Optional[ThreadingHTTPServer] = None
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

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

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
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self) -> List[Tuple[str, object]]:
        with self._lock:
            return [(r.path, r.json()) for r in self.received]

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
