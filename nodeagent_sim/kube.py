"""A Kubernetes API server simulator over HTTPS, faithful on the wire for what nodeagent and
`kubectl drain` use, with the kubelet's own credentials restricted exactly as the Node authorizer
and the NodeRestriction admission plugin restrict them.

Stdlib only. Threads: one per connection (HTTP/1.1 keep-alive), one timer thread, one accept loop.

    sim = KubeSim(time_scale=0.01).start()
    token = sim.add_node_token("ip-10-0-1-2")
    sim.add_node("ip-10-0-1-2", provider_id="aws:///us-east-1a/i-0123")
    sim.add_pod("web-1", node="ip-10-0-1-2", owner_kind="ReplicaSet", owner_name="web-abc")
    sim.write_kubeconfig("/tmp/kc", token)
    ...
    sim.stop()

Module map: kube_api (routing and behaviour), kube_store (objects, watches, timers), kube_auth
(tokens, Node authorizer, kubeconfigs, exec plugin), kube_admission (NodeRestriction, node
validation), kube_pdb (budgets), kube_patch, kube_select, kube_objects, kube_discovery, kube_tls,
kube_apf (API Priority and Fairness: seats, queue, 429).

Where the simulator departs from a real server, on purpose:
- the node lifecycle controller's `node.kubernetes.io/unschedulable` taint is written right after a
  cordon (a separate write and MODIFIED event; `controller_delay_s` delays it);
- PDB status is computed at each eviction (see kube_pdb for the expected-count model);
- a pod is removed when its grace period (times time_scale) ends, or earlier when added with
  `shutdown_s`; deletionTimestamp carries the unscaled API value;
- watch bookmarks come every `bookmark_interval_s` (5 s) instead of about a minute;
- no aggregated discovery, no OpenAPI (404), no protobuf: clients fall back to JSON;
- API Priority and Fairness is off unless asked for (`apf=ApfConfig(...)` or `set_apf`), and then
  one priority level with one queue (kube_apf says how it departs from the real filter).
"""

from __future__ import annotations

import email.utils
import json
import re
import select
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Pattern, Set

from . import kube_apf, kube_auth
from .kube_apf import ApfConfig, ApfStats, SeatGate
from .kube_api import (
    Cluster, Options, Outcome, Request, Response, WatchStream, error_response, json_response, request_attributes,
)
from .kube_auth import TokenBook, UserInfo, node_user
from .kube_objects import (
    clone, dumps, injected_error, make_daemonset, make_node, make_pdb, make_pod, new_uid, owner_api_version,
    status_body,
)
from .kube_store import Watcher
from .kube_tls import ServerCert, make_server_cert

__all__ = ["ApfConfig", "Fault", "KubeSim", "RequestRecord"]

_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 410: "Gone",
            415: "Unsupported Media Type", 422: "Unprocessable Entity", 429: "Too Many Requests",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass
class RequestRecord:
    """One request as the server saw it. status 0: the connection was cut without an answer."""

    t_monotonic: float
    method: str
    path: str
    query: Dict[str, str]
    user: str
    status: int
    verb: str
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    duration_s: float = 0.0
    injected: bool = False
    throttled: bool = False  # a throttling answer: APF turned it away, or an injected 429/503
    queued_s: float = 0.0  # time spent in the APF queue before a seat was free
    retry_after: str = ""  # the Retry-After header of the answer, as sent


@dataclass
class Fault:
    """A fault for the next `count` matching requests (matched on method and on path by re.search)."""

    count: int
    status: Optional[int]
    delay_s: float
    method: Optional[str]
    path_regex: Optional[Pattern[str]]
    body: Any = None
    drop: Optional[str] = None  # "before": cut the connection unanswered; "after": serve it, then cut
    hits: int = 0
    retry_after: Optional[int] = None  # seconds; None: the status's usual answer
    retry_after_form: str = "seconds"  # "seconds", "date" (an HTTP date) or "absent"
    details_retry_after: Optional[int] = None  # Status details.retryAfterSeconds
    plain_text: bool = False  # APF's plain-text 429 body instead of a Status object

    @property
    def remaining(self) -> int:
        return self.count - self.hits

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return self.path_regex is None or self.path_regex.search(path) is not None

    def response(self) -> Optional[Response]:
        if not self.status:
            return None
        if self._custom_retry_after():
            return self._retry_after_response(self.status)
        if self.body is None:
            return error_response(injected_error(self.status))
        err_headers = injected_error(self.status).headers
        if isinstance(self.body, (dict, list)):
            return json_response(self.status, self.body, err_headers)
        raw = self.body.encode() if isinstance(self.body, str) else bytes(self.body)
        return Response(self.status, raw, dict({"Content-Type": "application/json"}, **err_headers))

    def _custom_retry_after(self) -> bool:
        return (self.retry_after is not None or self.retry_after_form != "seconds"
                or self.details_retry_after is not None or self.plain_text)

    def _retry_after_response(self, status: int) -> Response:
        """The status with Retry-After in the form asked for (the body as given, APF's plain text,
        or the real Status object for that code with details.retryAfterSeconds only when asked)."""
        headers = {"Cache-Control": "no-cache, private"}
        value = kube_apf.retry_after_header(1 if self.retry_after is None else self.retry_after,
                                            self.retry_after_form)
        if value is not None:
            headers["Retry-After"] = value
        if self.plain_text:
            return Response(status, kube_apf.plain_text_429(), dict(headers, **kube_apf.PLAIN_TEXT_HEADERS))
        if self.body is not None:
            raw = dumps(self.body) if isinstance(self.body, (dict, list)) else (
                self.body.encode() if isinstance(self.body, str) else bytes(self.body))
            return Response(status, raw, dict(headers, **{"Content-Type": "application/json"}))
        err = injected_error(status)
        details = {k: v for k, v in (err.details or {}).items() if k != "retryAfterSeconds"}
        if self.details_retry_after is not None:
            details["retryAfterSeconds"] = self.details_retry_after
        body = status_body(status, err.reason, err.message, details if details or err.details is not None else None)
        return Response(status, dumps(body), dict(headers, **{"Content-Type": "application/json"}))


class KubeSim:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, time_scale: float = 1.0,
                 selector_authz: bool = True, replace_evicted: bool = False, k8s_minor: int = 33,
                 controller_delay_s: float = 0.0, bookmark_interval_s: float = 5.0,
                 replacement_ready_after_s: float = 0.0, apf: Optional[ApfConfig] = None):
        """time_scale multiplies every simulated duration (grace periods, replacement delay);
        selector_authz is AuthorizeNodeWithSelectors (k8s >= 1.32); replace_evicted makes
        ReplicaSet/StatefulSet pods that are deleted come back Running on node "elsewhere", Ready
        at once or replacement_ready_after_s (simulated seconds) later; apf turns on API Priority
        and Fairness (kube_apf: seats, a bounded queue, 429 with Retry-After), off by default."""
        self.host, self._port = host, port
        self._tokens = TokenBook()
        self._cluster = Cluster(Options(selector_authz=selector_authz, time_scale=time_scale,
                                        replace_evicted=replace_evicted, k8s_minor=k8s_minor,
                                        controller_delay_s=controller_delay_s,
                                        bookmark_interval_s=bookmark_interval_s,
                                        replacement_ready_after_s=replacement_ready_after_s), self._tokens)
        self._admin_token = self._tokens.new_token(UserInfo("kubernetes-admin",
                                                            ("system:masters", "system:authenticated")))
        self.requests: List[RequestRecord] = []
        self._faults: List[Fault] = []
        self._faults_lock = threading.Lock()
        self._down_until = 0.0
        self._gate: Optional[SeatGate] = SeatGate(apf) if apf is not None else None
        self._owner_uids: Dict[tuple, str] = {}
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._tmpdir: Optional[str] = None
        self._cert: Optional[ServerCert] = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> "KubeSim":
        self._tmpdir = tempfile.mkdtemp(prefix="kubesim-")
        self._cert = make_server_cert(self._tmpdir)
        self._server = _Server((self.host, self._port), self, self._cert.server_context())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="kubesim-accept", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.abort_connections()
            self._server = None
        self._cluster.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "KubeSim":
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("KubeSim is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return "https://%s:%d" % (self.host, self.port)

    @property
    def ca_file(self) -> str:
        if self._cert is None:
            raise RuntimeError("KubeSim is not started")
        return self._cert.ca_file

    # -- tokens and kubeconfigs -----------------------------------------------------------------

    def add_node_token(self, node_name: str) -> str:
        """A bearer token for system:node:<node_name> (groups system:nodes, system:authenticated)."""
        return self._tokens.new_token(node_user(node_name))

    def admin_token(self) -> str:
        """A bearer token in group system:masters: may do anything."""
        return self._admin_token

    def add_token(self, username: str, groups: tuple = ("system:authenticated",)) -> str:
        """A bearer token for any identity (a non-node, non-master user is denied all resources)."""
        return self._tokens.new_token(UserInfo(username, tuple(groups)))

    def mint_exec_token(self, node_name: str, ttl_s: float) -> str:
        """A token of the kind the exec plugin prints (negative ttl_s gives an expired one)."""
        return self._tokens.mint_exec(node_name, ttl_s)[0]

    def revoke_tokens(self) -> None:
        """Every token issued so far (static and exec) gets 401 from now on; the admin token too,
        after which admin_token() returns a fresh one."""
        self._tokens.revoke_all()
        self._admin_token = self._tokens.new_token(UserInfo("kubernetes-admin",
                                                            ("system:masters", "system:authenticated")))

    def write_kubeconfig(self, path: str, token: str) -> str:
        return kube_auth.write_kubeconfig(path, self.url, self.ca_file, {"token": token})

    def write_exec_kubeconfig(self, path: str, node_name: str, *, delay_s: float = 0.0, ttl_s: float = 900,
                              fail: bool = False, hang: bool = False) -> str:
        """A kubeconfig whose user runs an exec credential plugin (client.authentication.k8s.io/v1beta1),
        a script next to it run by this interpreter. Each run is counted (exec_invocations)."""
        return kube_auth.write_exec_kubeconfig(path, self.url, self.ca_file, self._tokens.secret, node_name,
                                               delay_s=delay_s, ttl_s=ttl_s, fail=fail, hang=hang)

    configure_exec = staticmethod(kube_auth.configure_exec)
    exec_invocations = staticmethod(kube_auth.exec_invocations)

    # -- objects --------------------------------------------------------------------------------

    def add_node(self, name: str, *, provider_id: Optional[str] = None, labels: Optional[dict] = None,
                 unschedulable: bool = False) -> dict:
        node = make_node(name, provider_id=provider_id, labels=labels, unschedulable=unschedulable,
                         kubelet_version=self._cluster.opt.git_version)
        with self._store.lock:
            if self._store.get("nodes", "", name) is not None:
                raise ValueError("node %r already exists" % name)
            return clone(self._store.put("nodes", node))

    def add_pod(self, name: str, namespace: str = "default", *, node: str = "", labels: Optional[dict] = None,
                owner_kind: Optional[str] = None, owner_name: Optional[str] = None,
                priority_class: Optional[str] = None, grace_s: int = 30, mirror: bool = False,
                emptydir: bool = False, phase: str = "Running", annotations: Optional[dict] = None,
                ready: bool = True, priority: Optional[int] = None, shutdown_s: Optional[float] = None) -> dict:
        """A pod in real API shape. shutdown_s: how long it takes to exit after SIGTERM (default:
        it uses its whole grace period). A DaemonSet owner is created if missing."""
        owner = None
        with self._store.lock:
            if self._store.get("pods", namespace, name) is not None:
                raise ValueError("pod %s/%s already exists" % (namespace, name))
            if owner_kind:
                owner_name = owner_name or name + "-owner"
                if owner_kind == "DaemonSet" and self._store.get("daemonsets", namespace, owner_name) is None:
                    self._store.put("daemonsets", make_daemonset(owner_name, namespace))
                ds = self._store.get("daemonsets", namespace, owner_name) if owner_kind == "DaemonSet" else None
                uid = ds["metadata"]["uid"] if ds else self._owner_uids.setdefault(
                    (namespace, owner_kind, owner_name), new_uid())
                owner = {"apiVersion": owner_api_version(owner_kind), "kind": owner_kind, "name": owner_name,
                         "uid": uid, "controller": True, "blockOwnerDeletion": True}
                if owner_kind in ("ReplicaSet", "StatefulSet", "ReplicationController"):
                    self._cluster.add_scale(namespace, owner_kind, owner_name)
            elif mirror and node:
                n = self._store.get("nodes", "", node)
                owner = {"apiVersion": "v1", "kind": "Node", "name": node,
                         "uid": n["metadata"]["uid"] if n else new_uid(), "controller": True}
            pod = make_pod(name, namespace, node=node, labels=labels, owner=owner, priority_class=priority_class,
                           priority=priority, grace_s=grace_s, mirror=mirror, emptydir=emptydir, phase=phase,
                           ready=ready, annotations=annotations)
            if shutdown_s is not None:
                self._cluster.set_shutdown(pod["metadata"]["uid"], shutdown_s)
            return clone(self._store.put("pods", pod))

    def add_pdb(self, name: str, namespace: str, *, selector: dict, min_available: Any = None,
                max_unavailable: Any = None, unhealthy_pod_eviction_policy: Optional[str] = None) -> dict:
        """selector: {"app": "x"} (matchLabels) or a full LabelSelector; min/max: int or "50%"."""
        if "matchLabels" not in selector and "matchExpressions" not in selector:
            selector = {"matchLabels": dict(selector)}
        pdb = make_pdb(name, namespace, selector=selector, min_available=min_available,
                       max_unavailable=max_unavailable, unhealthy_pod_eviction_policy=unhealthy_pod_eviction_policy)
        with self._store.lock:
            return clone(self._store.put("poddisruptionbudgets", pdb))

    def add_daemonset(self, name: str, namespace: str) -> dict:
        with self._store.lock:
            return clone(self._store.put("daemonsets", make_daemonset(name, namespace)))

    def set_scale(self, namespace: str, kind: str, name: str, replicas: int) -> None:
        """The replica count a PDB's percentage/maxUnavailable is computed against (default: the
        number of pods added with that owner)."""
        self._cluster.set_scale(namespace, kind, name, replicas)

    def node(self, name: str) -> Optional[dict]:
        with self._store.lock:
            obj = self._store.get("nodes", "", name)
            return None if obj is None else clone(obj)

    def pods(self, node: Optional[str] = None) -> List[dict]:
        with self._store.lock:
            objs = self._store.values("pods") if node is None else self._store.pods_on_node(node)
            out = [clone(p) for p in objs]
        out.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
        return out

    def pod_count(self, node: str, namespace: Optional[str] = None) -> int:
        """How many pods are bound to the node (in the namespace, when given), without copying them."""
        with self._store.lock:
            return sum(1 for p in self._store.pods_on_node(node)
                       if namespace is None or p["metadata"]["namespace"] == namespace)

    def pod(self, ns: str, name: str) -> Optional[dict]:
        with self._store.lock:
            obj = self._store.get("pods", ns, name)
            return None if obj is None else clone(obj)

    def events(self) -> List[dict]:
        """core/v1 Events created through the API, oldest first (latest version of each)."""
        return self._cluster.events()

    def pdb_status(self, namespace: str, name: str) -> Dict[str, int]:
        with self._store.lock:
            pdb = self._store.get("poddisruptionbudgets", namespace, name)
            if pdb is None:
                raise KeyError("%s/%s" % (namespace, name))
            return self._cluster.pdb_status(pdb)

    def delete_node(self, name: str) -> None:
        with self._store.lock:
            self._store.remove("nodes", "", name)

    def delete_pod(self, ns: str, name: str, grace: Optional[int] = None) -> Optional[dict]:
        """Delete as a controller or the kubelet would (no authorization); grace None = the pod's own."""
        with self._store.lock:
            pod = self._store.get("pods", ns, name)
            return None if pod is None else clone(self._cluster.delete_pod_locked(pod, grace, False))

    def mutate_node(self, name: str, fn: Callable[[dict], Optional[dict]]) -> dict:
        """Apply fn to a copy of the node (in place, or return a new dict) and store it (MODIFIED)."""
        return self._mutate("nodes", "", name, fn)

    def mutate_pod(self, ns: str, name: str, fn: Callable[[dict], Optional[dict]]) -> dict:
        return self._mutate("pods", ns, name, fn)

    def set_pod_ready(self, ns: str, name: str, ready: bool, phase: Optional[str] = None) -> dict:
        def change(pod: dict) -> None:
            if phase:
                pod["status"]["phase"] = phase
            for c in pod["status"].get("conditions") or []:
                if c.get("type") == "Ready":
                    c["status"] = "True" if ready else "False"
        return self.mutate_pod(ns, name, change)

    def _mutate(self, resource: str, ns: str, name: str, fn: Callable[[dict], Optional[dict]]) -> dict:
        with self._store.lock:
            cur = self._store.get(resource, ns, name)
            if cur is None:
                raise KeyError("%s %s/%s" % (resource, ns, name))
            new = clone(cur)
            result = fn(new)
            new = result if isinstance(result, dict) else new
            stored = self._store.put(resource, new)
            if resource == "nodes":
                self._cluster._reconcile_unschedulable_taint(name)
                stored = self._store.get("nodes", "", name) or stored
            return clone(stored)

    @property
    def _store(self):  # noqa: ANN202 - internal
        return self._cluster.store

    # -- faults ---------------------------------------------------------------------------------

    def inject(self, *, count: int = 1, status: Optional[int] = 500, delay_s: float = 0.0,
               method: Optional[str] = None, path_regex: Optional[str] = None, body: Any = None,
               drop: Optional[str] = None, retry_after: Optional[int] = None, retry_after_form: str = "seconds",
               details_retry_after: Optional[int] = None, plain_text: bool = False) -> Fault:
        """The next `count` matching requests wait delay_s, then get `status` with a real-looking
        Status body (or `body`); 429 carries Retry-After: 1. status=None: only the delay, then the
        request is served normally. drop="before" closes the connection without an answer;
        drop="after" carries the request out, then closes the connection instead of answering (the
        change happened, the client cannot know). Faults apply before authentication, in the order
        added; path_regex is searched in the path (without the query).

        Throttling answers (any status, typically 429 or 503): retry_after=N sends `Retry-After: N`;
        retry_after_form="date" sends it as an HTTP date N seconds ahead, "absent" leaves it out;
        details_retry_after=M puts retryAfterSeconds M in the Status details (left out otherwise);
        plain_text=True answers with APF's plain-text body instead of a Status object. Any of these
        replaces the status's usual Retry-After."""
        if drop not in (None, "before", "after"):
            raise ValueError("drop must be None, 'before' or 'after'")
        if retry_after_form not in kube_apf.RETRY_AFTER_FORMS:
            raise ValueError("retry_after_form must be one of %s" % ", ".join(kube_apf.RETRY_AFTER_FORMS))
        fault = Fault(count, None if drop else status, delay_s, method,
                      re.compile(path_regex) if path_regex else None, body, drop, retry_after=retry_after,
                      retry_after_form=retry_after_form, details_retry_after=details_retry_after,
                      plain_text=plain_text)
        with self._faults_lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Optional[Fault]:
        with self._faults_lock:
            for fault in self._faults:
                if fault.remaining > 0 and fault.matches(method, path):
                    fault.hits += 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- API Priority and Fairness ---------------------------------------------------------------

    def set_apf(self, config: Optional[ApfConfig]) -> None:
        """Turn APF on with these seats and queue (a fresh gate: counters start at zero), or off
        (None). Requests already holding a seat give it back to the gate they took it from."""
        self._gate = SeatGate(config) if config is not None else None

    def apf_stats(self) -> Optional[ApfStats]:
        """Seats and queue in use now, their peaks, requests admitted and rejected; None when off."""
        gate = self._gate
        return None if gate is None else gate.stats()

    def down_for(self, seconds: float) -> None:
        """For `seconds`, new connections are accepted and closed at once (the client sees a
        connection error) and every open connection, watches included, is cut now."""
        self._down_until = time.monotonic() + seconds
        self._cluster.store.close_watchers(abrupt=True)
        if self._server is not None:
            self._server.abort_connections()

    def up(self) -> None:
        self._down_until = 0.0

    def is_down(self) -> bool:
        return time.monotonic() < self._down_until

    def cut_watches(self, abrupt: bool = False) -> int:
        """End every open watch now: cleanly (the chunked stream ends, as at a server timeout) or,
        with abrupt=True, by resetting the connection mid-stream. Returns how many were open."""
        return self._cluster.store.close_watchers(abrupt)

    def open_watches(self) -> int:
        return self._cluster.store.open_watches()

    def compact(self) -> None:
        """Forget the change history: a watch resuming from an older resourceVersion gets 410 Gone."""
        self._cluster.store.compact()

    # -- observability --------------------------------------------------------------------------

    def reset_requests(self) -> None:
        del self.requests[:]

    def count(self, verb: Optional[str] = None, path_regex: Optional[str] = None, *,
              method: Optional[str] = None, status: Optional[int] = None, user: Optional[str] = None) -> int:
        rx = re.compile(path_regex) if path_regex else None
        return sum(1 for r in list(self.requests)
                   if (verb is None or r.verb == verb) and (rx is None or rx.search(r.path))
                   and (method is None or r.method == method.upper()) and (status is None or r.status == status)
                   and (user is None or r.user == user))

    def on_patch_node(self, callback: Callable[[str, float, dict], None]) -> None:
        """callback(node_name, t_monotonic, new_node) after each successful PATCH/PUT of a node."""
        with self._cluster._hook_lock:
            self._cluster.node_patch_hooks.append(callback)

    # -- called by the HTTP layer ---------------------------------------------------------------

    def _record(self, t0: float, req: Request, out: Outcome, status: int, injected: bool = False, *,
                throttled: bool = False, queued_s: float = 0.0, headers: Optional[Dict[str, str]] = None) -> None:
        self.requests.append(RequestRecord(
            t0, req.method, req.path, {k: v[-1] for k, v in req.query.items()}, out.user, status, out.verb,
            out.resource, out.subresource, out.namespace, out.name, time.monotonic() - t0, injected,
            throttled, queued_s, (headers or {}).get("Retry-After", "")))


# ---------------------------------------------------------------------------------------------
# HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple, sim: KubeSim, context: ssl.SSLContext):
        self.sim = sim
        self.context = context
        self._conns: Set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.sim.is_down():
            _hard_close(request)
            return
        try:
            request.settimeout(10)
            conn = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            _hard_close(request)
            return
        with self._conns_lock:
            self._conns.add(conn)
        try:
            _Handler(conn, client_address, self)
        except (OSError, ssl.SSLError, ValueError, _Aborted):
            pass  # the client went away, or the connection was cut on purpose
        finally:
            with self._conns_lock:
                self._conns.discard(conn)
            _hard_close(conn)

    def abort_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connection-level noise (resets, TLS failures) is expected in fault tests


def _outcome_of(sim: KubeSim, req: Request) -> Outcome:
    """What a request would have been recorded as, for one a fault answers instead of the server."""
    attrs = request_attributes(req)
    user = sim._cluster.authenticate(req)
    return Outcome(user.username if user else "", attrs.verb, attrs.resource, attrs.subresource,
                   attrs.namespace, attrs.name)


def _gated(sim: KubeSim, req: Request) -> bool:
    """Does APF hold this request to a seat? Not one that fails authentication (it gets 401 before
    APF sees it) nor one from system:masters (the exempt priority level)."""
    user = sim._cluster.authenticate(req)
    return user is not None and not kube_apf.is_exempt(user.groups)


def _hard_close(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Aborted(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self) -> None:
        sim = self.server.sim
        t0 = time.monotonic()
        if sim.is_down():
            self.close_connection = True
            return
        body = self._read_body()
        req = Request.build(self.command, self.path, self.headers, body)
        out = Outcome()
        fault = sim._take_fault(req.method, req.path)
        if fault is not None:
            if fault.delay_s:
                time.sleep(fault.delay_s)
            if fault.drop == "before":
                sim._record(t0, req, _outcome_of(sim, req), 0, injected=True)
                raise _Aborted()
            injected = fault.response()
            if injected is not None:
                sim._record(t0, req, _outcome_of(sim, req), injected.status, injected=True,  # before the client sees it
                            throttled=injected.status in (429, 503), headers=injected.headers)
                self._write(injected)
                return
        gate = sim._gate if sim._gate is not None and _gated(sim, req) else None
        queued_s = 0.0
        if gate is not None:
            waited = gate.acquire()
            if waited is None:
                status, raw, headers = kube_apf.rejection(gate.config)
                sim._record(t0, req, _outcome_of(sim, req), status, throttled=True, headers=headers)
                self._write(Response(status, raw, headers))
                return
            queued_s = waited
            t_seat = time.monotonic()
            try:
                result = sim._cluster.handle(req, out)
                # hold the seat for the service time (a watch only for its setup, as in APF)
                rest = gate.config.service_time_s - (time.monotonic() - t_seat)
                if rest > 0:
                    time.sleep(rest)
            finally:
                gate.release()
        else:
            result = sim._cluster.handle(req, out)
        if fault is not None and fault.drop == "after":
            if isinstance(result, WatchStream):
                result.store.unwatch(result.watcher)
            sim._record(t0, req, out, 0, injected=True)
            raise _Aborted()
        if isinstance(result, WatchStream):
            sim._record(t0, req, out, 200, queued_s=queued_s)
            self._stream(result)
            return
        sim._record(t0, req, out, result.status, queued_s=queued_s, headers=result.headers)
        self._write(result)

    def _head(self, status: int, headers: Dict[str, str]) -> List[str]:
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Unknown"))]
        headers = dict(headers)
        headers.setdefault("Audit-Id", str(uuid.uuid4()))
        headers["Date"] = email.utils.formatdate(usegmt=True)
        headers["X-Kubernetes-Pf-Flowschema-Uid"] = "sim"
        headers["X-Kubernetes-Pf-Prioritylevel-Uid"] = "sim"
        if self.close_connection:
            headers["Connection"] = "close"
        lines.extend("%s: %s" % kv for kv in headers.items())
        return lines

    def _write(self, resp: Response) -> None:
        head = self._head(resp.status, dict(resp.headers, **{"Content-Length": str(len(resp.body))}))
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(data if self.command == "HEAD" else data + resp.body)

    def _stream(self, ws: WatchStream) -> None:
        """A chunked stream of watch events, one JSON object per line."""
        w, store = ws.watcher, ws.store
        head = self._head(200, {"Content-Type": "application/json", "Cache-Control": "no-cache, private",
                                "Transfer-Encoding": "chunked"})
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        interval = max(0.05, self.server.sim._cluster.opt.bookmark_interval_s)
        now = time.monotonic()
        deadline, next_bookmark, next_probe = now + ws.timeout_s, now + interval, now + 1.0
        try:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_probe, next_bookmark if ws.bookmarks else deadline) - now
                try:
                    item = w.queue.get(timeout=max(0.0, wait))
                except Exception:  # queue.Empty
                    item = None
                if item is Watcher.CLOSED:
                    if w.abrupt:
                        raise _Aborted()
                    break
                if item is not None:
                    etype, obj = item  # type: ignore[misc]
                    if etype == "INITIAL_END":
                        self._chunk(_bookmark(ws, obj, initial_end=True))
                    else:
                        self._chunk({"type": etype, "object": obj})
                    continue
                now = time.monotonic()
                if ws.bookmarks and now >= next_bookmark:
                    with store.lock:
                        rv = str(store.rv) if w.queue.empty() else None
                    if rv is not None:
                        self._chunk(_bookmark(ws, rv))
                    next_bookmark = now + interval
                if now >= next_probe:
                    if self._client_gone():
                        raise _Aborted()
                    next_probe = now + 1.0
            self.wfile.write(b"0\r\n\r\n")
        except _Aborted:
            self.close_connection = True
            _hard_close(self.connection)
        finally:
            store.unwatch(w)

    def _chunk(self, event: dict) -> None:
        data = (json.dumps(event, separators=(",", ":")) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _client_gone(self) -> bool:
        """Has the client closed a connection we only write to?"""
        conn = self.connection
        try:
            readable, _, _ = select.select([conn], [], [], 0)
        except (OSError, ValueError):
            return True
        if not readable:
            return False
        try:
            conn.settimeout(0.0)
            data = conn.recv(1)
        except ssl.SSLWantReadError:
            return False
        except (OSError, ssl.SSLError):
            return True
        finally:
            try:
                conn.settimeout(self.timeout)
            except OSError:
                pass
        if not data:
            return True
        self.close_connection = True  # a pipelined request we cannot serve after a watch
        return False


def _bookmark(ws: WatchStream, rv: str, initial_end: bool = False) -> dict:
    meta: Dict[str, Any] = {"resourceVersion": rv, "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"type": "BOOKMARK", "object": {"kind": ws.kind, "apiVersion": ws.api_version, "metadata": meta}}
