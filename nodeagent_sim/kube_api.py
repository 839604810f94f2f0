"""The simulated API server's behaviour, apart from HTTP: routing, authn/authz, admission,
storage semantics (graceful deletion, eviction with PDBs, watches), the node lifecycle controller
and a tiny ReplicaSet/StatefulSet controller. `Cluster.handle` maps a Request to a Response or a
WatchStream; the HTTP layer in kube.py only moves bytes.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union
from urllib.parse import parse_qs

from . import kube_discovery as discovery
from . import kube_pdb
from .kube_admission import check_node_update
from .kube_auth import Attributes, TokenBook, UserInfo, authorize, forbidden_error
from .kube_objects import (
    MIRROR_ANNOTATION, UNSCHEDULABLE_TAINT_KEY, ApiError, already_exists, bad_request, clone, conflict,
    controller_ref, dumps, forbidden, invalid, make_node, make_pod, method_not_supported, micro_time, new_uid,
    no_such_path, not_found, parse_rfc3339, rfc3339, status_body, unauthorized, unprocessable,
    unschedulable_taint, unsupported_media_type,
)
from .kube_patch import GENERIC_SCHEMA, NODE_SCHEMA, PATCH_TYPES, POD_SCHEMA, PatchError, apply_patch
from .kube_select import (
    FieldReq, LabelReq, SelectorError, check_fields, exact_match, fields_match, labels_match,
    parse_field_selector, parse_label_selector,
)
from .kube_store import Gone, Scheduler, Store, Watcher

JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")
DEFAULT_WATCH_TIMEOUT_S = 1800.0


@dataclass
class Request:
    method: str
    path: str
    query: Dict[str, List[str]]
    headers: Mapping[str, str]
    body: bytes = b""

    @staticmethod
    def build(method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> "Request":
        path, _, qs = target.partition("?")
        return Request(method.upper(), path, parse_qs(qs, keep_blank_values=True), headers, body)

    def q(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        """A boolean query parameter, parsed as Go's strconv.ParseBool (the python client sends "True")."""
        return self.q(name) in ("1", "t", "T", "true", "TRUE", "True")


@dataclass
class Response:
    status: int
    body: bytes
    headers: Dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))


@dataclass
class WatchStream:
    watcher: Watcher
    kind: str
    api_version: str
    timeout_s: float
    bookmarks: bool
    initial_events_end: bool  # sendInitialEvents: a BOOKMARK marks the end of the initial ADDEDs
    store: Store


@dataclass
class Outcome:
    """What the HTTP layer records about a request."""
    user: str = ""
    verb: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def json_response(status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> Response:
    h = dict(JSON_HEADERS)
    if headers:
        h.update(headers)
    return Response(status, dumps(obj), h)


def error_response(err: ApiError) -> Response:
    return json_response(err.code, err.body(), err.headers)


# ---------------------------------------------------------------------------------------------
# request info (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "GET": "get", "HEAD": "get",
          "DELETE": "delete"}


def request_attributes(req: Request) -> Attributes:
    verb = _VERBS.get(req.method, req.method.lower())
    parts = [p for p in req.path.split("/") if p]
    attrs = Attributes(verb=verb, path=req.path)
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return attrs
    if not rest:
        return attrs  # discovery document of a group version
    attrs.is_resource = True
    attrs.group, attrs.version = group, version
    watch_path = False
    if rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        attrs.namespace = rest[1]
        if len(rest) > 2:
            rest = rest[2:]
    if rest:
        attrs.resource = rest[0]
    if len(rest) > 1:
        attrs.name = rest[1]
    if len(rest) > 2:
        attrs.subresource = rest[2]
    if verb == "get" and not attrs.name:
        attrs.verb = "watch" if (watch_path or req.flag("watch")) else "list"
    elif verb == "delete" and not attrs.name:
        attrs.verb = "deletecollection"
    if attrs.verb in ("list", "watch", "deletecollection"):
        try:
            attrs.field_reqs = parse_field_selector(req.q("fieldSelector"))
        except SelectorError:
            attrs.field_reqs = []
        if attrs.verb != "deletecollection":
            pinned = exact_match(attrs.field_reqs, "metadata.name")
            if pinned:
                attrs.name = pinned
    return attrs


# ---------------------------------------------------------------------------------------------
# resources

@dataclass(frozen=True)
class ResourceInfo:
    store: str
    kind: str
    api_version: str
    namespaced: bool


RESOURCES: Dict[Tuple[str, str], ResourceInfo] = {
    ("", "nodes"): ResourceInfo("nodes", "Node", "v1", False),
    ("", "pods"): ResourceInfo("pods", "Pod", "v1", True),
    ("", "events"): ResourceInfo("events", "Event", "v1", True),
    ("apps", "daemonsets"): ResourceInfo("daemonsets", "DaemonSet", "apps/v1", True),
    ("policy", "poddisruptionbudgets"): ResourceInfo("poddisruptionbudgets", "PodDisruptionBudget", "policy/v1",
                                                     True),
}

def _without_rv(obj: dict) -> dict:
    out = dict(obj)
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return out


def _strip_type(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


# ---------------------------------------------------------------------------------------------


@dataclass
class Options:
    selector_authz: bool = True
    time_scale: float = 1.0
    replace_evicted: bool = False
    k8s_minor: int = 33
    controller_delay_s: float = 0.0
    bookmark_interval_s: float = 5.0
    replacement_node: str = "elsewhere"
    replacement_ready_after_s: float = 0.0  # a replacement is Running but not Ready this long

    @property
    def git_version(self) -> str:
        return "v1.%d.5-eks-sim" % self.k8s_minor


NodePatchHook = Callable[[str, float, dict], None]


class Cluster:
    """The state of the simulated cluster and every API operation on it."""

    def __init__(self, options: Options, tokens: TokenBook):
        self.opt = options
        self.tokens = tokens
        self.store = Store()
        self.sched = Scheduler()
        self.node_patch_hooks: List[NodePatchHook] = []
        self._scale: Dict[Tuple[str, str, str], int] = {}
        self._shutdown_s: Dict[str, float] = {}  # pod uid -> seconds the pod takes to stop on SIGTERM
        self._deletion: Dict[str, Tuple[float, int]] = {}  # pod uid -> (monotonic start, timer generation)
        self._timer_gen = 0
        self._events_log: List[dict] = []
        self._hook_lock = threading.Lock()

    def close(self) -> None:
        self.sched.stop()
        self.store.close_watchers(abrupt=True)

    # -- entry point ----------------------------------------------------------------------------

    def handle(self, req: Request, out: Outcome) -> Union[Response, WatchStream]:
        try:
            return self._handle(req, out)
        except ApiError as err:
            return error_response(err)

    def authenticate(self, req: Request) -> Optional[UserInfo]:
        header = req.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.tokens.verify(token.strip())

    def _handle(self, req: Request, out: Outcome) -> Union[Response, WatchStream]:
        attrs = request_attributes(req)
        out.verb, out.resource, out.subresource = attrs.verb, attrs.resource, attrs.subresource
        out.namespace, out.name = attrs.namespace, attrs.name
        has_credentials = bool(req.headers.get("Authorization"))
        user = self.authenticate(req)
        if user is None and (has_credentials or not req.path.startswith(PUBLIC_PATHS)):
            raise unauthorized()
        out.user = user.username if user else "system:anonymous"
        if not attrs.is_resource:
            return self._non_resource(req)
        assert user is not None
        allowed, reason = authorize(user, attrs, selector_authz=self.opt.selector_authz,
                                    pod_node=self._pod_node)
        if not allowed:
            raise forbidden_error(user, attrs, reason)
        return self._route(req, attrs, user)

    def _pod_node(self, namespace: str, name: str) -> Optional[str]:
        pod = self.store.get("pods", namespace, name)
        return None if pod is None else pod["spec"].get("nodeName", "")

    def _non_resource(self, req: Request) -> Response:
        if req.method not in ("GET", "HEAD"):
            raise method_not_supported("", req.method)
        doc = discovery.document(req.path, self.opt.git_version, self.opt.k8s_minor)
        if doc is None:
            raise no_such_path()
        if isinstance(doc, str):
            return Response(200, doc.encode(), {"Content-Type": "text/plain; charset=utf-8",
                                                "Cache-Control": "no-cache, private"})
        return json_response(200, doc)

    # -- routing --------------------------------------------------------------------------------

    def _route(self, req: Request, a: Attributes, user: UserInfo) -> Union[Response, WatchStream]:
        g, r, sub, verb = a.group, a.resource, a.subresource, a.verb
        if (g, r) == ("authentication.k8s.io", "selfsubjectreviews") and verb == "create":
            return self._self_subject_review(user)
        if (g, r) == ("authorization.k8s.io", "selfsubjectaccessreviews") and verb == "create":
            return self._self_subject_access_review(req, user)
        if (g, r) == ("events.k8s.io", "events") and verb == "create":
            return self._create_events_v1(req, a)
        if (g, r) == ("", "namespaces") and verb in ("get", "list"):
            return self._namespaces(a)
        info = RESOURCES.get((g, r))
        if info is None or a.version != info.api_version.split("/")[-1]:
            raise no_such_path()
        if info.namespaced is False and a.namespace:
            raise no_such_path()
        if sub:
            if (r, sub, verb) == ("pods", "eviction", "create"):
                return self._evict(req, a, user)
            raise no_such_path()
        if verb == "get":
            return self._get(info, a)
        if verb == "list":
            return self._list(req, info, a)
        if verb == "watch":
            return self._watch(req, info, a)
        if r == "nodes" and verb in ("patch", "update"):
            return self._update_node(req, a, user)
        if r == "nodes" and verb == "delete":
            return self._delete_node(a)
        if r == "pods" and verb == "delete":
            return self._delete_pod(req, a, user)
        if r == "pods" and verb == "patch":
            return self._patch_pod(req, a)
        if r == "events" and verb == "create":
            return self._create_event(req, a)
        if r == "events" and verb in ("patch", "update"):
            return self._update_event(req, a)
        if r == "events" and verb == "delete":
            with self.store.lock:
                gone = self.store.remove("events", a.namespace, a.name)
            if gone is None:
                raise not_found("events", a.name)
            return json_response(200, status_body(200, "", "", {"name": a.name, "kind": "events"}, "Success"))
        raise method_not_supported(r, verb, g)

    # -- reads ----------------------------------------------------------------------------------

    def _get(self, info: ResourceInfo, a: Attributes) -> Response:
        with self.store.lock:
            obj = self.store.get(info.store, a.namespace, a.name)
            if obj is not None and info.store == "poddisruptionbudgets":
                obj = self._with_pdb_status(obj)
        if obj is None:
            raise not_found(a.resource, a.name, a.group)
        return json_response(200, obj)

    def _selectors(self, req: Request, resource: str) -> Tuple[List[FieldReq], List[LabelReq]]:
        try:
            freqs = parse_field_selector(req.q("fieldSelector"))
            check_fields(resource, freqs)
            lreqs = parse_label_selector(req.q("labelSelector"))
        except SelectorError as err:
            raise bad_request(str(err))
        return freqs, lreqs

    def _matching(self, info: ResourceInfo, namespace: str, freqs: List[FieldReq],
                  lreqs: List[LabelReq]) -> List[dict]:
        """Objects matching the selectors, in storage-key order. Call with the store lock held."""
        node = exact_match(freqs, "spec.nodeName") if info.store == "pods" else None
        if node is not None:
            candidates = self.store.pods_on_node(node)
        else:
            candidates = self.store.values(info.store, namespace or None)
        out = []
        for obj in candidates:
            meta = obj["metadata"]
            if namespace and meta.get("namespace") != namespace:
                continue
            if freqs and not fields_match(info.store, freqs, obj):
                continue
            if lreqs and not labels_match(lreqs, meta.get("labels")):
                continue
            out.append(obj)
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def _list(self, req: Request, info: ResourceInfo, a: Attributes) -> Response:
        freqs, lreqs = self._selectors(req, info.store)
        limit = _int_param(req, "limit", 0)
        start: Optional[Tuple[str, str]] = None
        token = req.q("continue")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
                start = (decoded["start"][0], decoded["start"][1])
            except (ValueError, KeyError, TypeError, IndexError):
                raise bad_request("continue key is not valid: incorrect encoded start resourceVersion")
        with self.store.lock:
            items = self._matching(info, a.namespace, freqs, lreqs)
            if info.store == "poddisruptionbudgets":
                items = [self._with_pdb_status(p) for p in items]
            rv = self.store.rv
        if start is not None:
            items = [o for o in items if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start]
        meta: Dict[str, Any] = {"resourceVersion": str(rv)}
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            cont = {"v": "meta.k8s.io/v1", "rv": rv, "start": [last.get("namespace", ""), last["name"]]}
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(cont).encode()).decode().rstrip("=")
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        body = {"kind": info.kind + "List", "apiVersion": info.api_version, "metadata": meta,
                "items": [_strip_type(o) for o in items]}
        return json_response(200, body)

    def _watch(self, req: Request, info: ResourceInfo, a: Attributes) -> WatchStream:
        freqs, lreqs = self._selectors(req, info.store)
        namespace = a.namespace
        raw_rv = req.q("resourceVersion")
        send_initial = req.flag("sendInitialEvents")
        bookmarks = req.flag("allowWatchBookmarks")
        since: Optional[int] = None
        if raw_rv not in ("", "0") and not send_initial:
            try:
                since = int(raw_rv)
            except ValueError:
                raise bad_request('resourceVersion: Invalid value: "%s": must be an integer' % raw_rv)

        def pred(obj: dict) -> bool:
            meta = obj["metadata"]
            if namespace and meta.get("namespace") != namespace:
                return False
            if freqs and not fields_match(info.store, freqs, obj):
                return False
            return not lreqs or labels_match(lreqs, meta.get("labels"))

        timeout = float(_int_param(req, "timeoutSeconds", 0)) or DEFAULT_WATCH_TIMEOUT_S
        with self.store.lock:
            initial = [] if since is not None else self._matching(info, namespace, freqs, lreqs)
            try:
                w = self.store.watch(info.store, pred, since, initial)
                if send_initial and bookmarks:
                    w.queue.put(("INITIAL_END", str(self.store.rv)))
            except Gone as gone:
                w = Watcher(info.store, pred)
                err = ApiError(410, "Expired", str(gone))
                w.queue.put(("ERROR", err.body()))
                w.close()
        return WatchStream(w, info.kind, info.api_version, timeout, bookmarks, send_initial and bookmarks,
                           self.store)

    def _namespaces(self, a: Attributes) -> Response:
        with self.store.lock:
            names = {"default", "kube-system", "kube-public", "kube-node-lease"}
            for res in ("pods", "events", "daemonsets", "poddisruptionbudgets"):
                names.update(o["metadata"]["namespace"] for o in self.store.values(res))

        def ns_obj(n: str) -> dict:
            return {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}
        if a.verb == "get":
            if a.name not in names:
                raise not_found("namespaces", a.name)
            return json_response(200, dict({"kind": "Namespace", "apiVersion": "v1"}, **ns_obj(a.name)))
        return json_response(200, {"kind": "NamespaceList", "apiVersion": "v1",
                                   "metadata": {"resourceVersion": str(self.store.rv)},
                                   "items": [ns_obj(n) for n in sorted(names)]})

    # -- authentication / authorization reviews -----------------------------------------------

    def _self_subject_review(self, user: UserInfo) -> Response:
        return json_response(201, {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
                                   "metadata": {"creationTimestamp": None},
                                   "status": {"userInfo": user.as_dict()}})

    def _self_subject_access_review(self, req: Request, user: UserInfo) -> Response:
        body = _json_body(req)
        spec = body.get("spec") or {}
        ra = spec.get("resourceAttributes")
        if ra:
            attrs = Attributes(verb=ra.get("verb", ""), path="", is_resource=True, group=ra.get("group", ""),
                               version=ra.get("version", ""), resource=ra.get("resource", ""),
                               subresource=ra.get("subresource", ""), namespace=ra.get("namespace", ""),
                               name=ra.get("name", ""))
            raw = (ra.get("fieldSelector") or {}).get("rawSelector")
            if raw:
                try:
                    attrs.field_reqs = parse_field_selector(raw)
                except SelectorError:
                    attrs.field_reqs = []
        else:
            nra = spec.get("nonResourceAttributes") or {}
            attrs = Attributes(verb=nra.get("verb", "get"), path=nra.get("path", "/"))
        allowed, reason = authorize(user, attrs, selector_authz=self.opt.selector_authz, pod_node=self._pod_node)
        status: Dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        body = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}
        return json_response(201, body)

    # -- nodes ----------------------------------------------------------------------------------

    def _update_node(self, req: Request, a: Attributes, user: UserInfo) -> Response:
        dry = _dry_run(req)
        if a.verb == "patch":
            kind = _patch_kind(req)
            patch = _json_body(req, allow_list=True)
        else:
            kind, patch = "", _json_body(req)
        with self.store.lock:
            current = self.store.get("nodes", "", a.name)
            if current is None:
                raise not_found("nodes", a.name)
            if kind:
                try:
                    new = apply_patch(kind, current, patch, NODE_SCHEMA)
                except PatchError as err:
                    raise unprocessable(str(err))
            else:
                new = clone(patch)
                if (new.get("metadata") or {}).get("name") != a.name:
                    raise bad_request("the name of the object (%s) does not match the name on the URL (%s)"
                                      % ((new.get("metadata") or {}).get("name"), a.name))
            new = check_node_update(user.node_name, current, new, require_rv=(a.verb == "update"))
            if _without_rv(new) == _without_rv(current) or dry:
                return json_response(200, new if dry else current)
            stored = self.store.put("nodes", new)
            committed_at = time.monotonic()
        self._after_node_write(a.name)
        self._run_node_hooks(a.name, committed_at, stored)
        return json_response(200, stored)

    def _after_node_write(self, name: str) -> None:
        if self.opt.controller_delay_s > 0:
            self.sched.call_later(self.opt.controller_delay_s * self.opt.time_scale,
                                  lambda: self._reconcile_unschedulable_taint(name))
        else:
            self._reconcile_unschedulable_taint(name)

    def _reconcile_unschedulable_taint(self, name: str) -> None:
        """The node lifecycle controller's NoSchedule tainting pass for spec.unschedulable."""
        with self.store.lock:
            node = self.store.get("nodes", "", name)
            if node is None:
                return
            taints = list(node["spec"].get("taints") or [])
            has = any(t.get("key") == UNSCHEDULABLE_TAINT_KEY and t.get("effect") == "NoSchedule" for t in taints)
            want = bool(node["spec"].get("unschedulable"))
            if has == want:
                return
            if want:
                taints.append(unschedulable_taint())
            else:
                taints = [t for t in taints
                          if not (t.get("key") == UNSCHEDULABLE_TAINT_KEY and t.get("effect") == "NoSchedule")]
            new = clone(node)
            if taints:
                new["spec"]["taints"] = taints
            else:
                new["spec"].pop("taints", None)
            self.store.put("nodes", new)

    def _run_node_hooks(self, name: str, at: float, node: dict) -> None:
        with self._hook_lock:
            hooks = list(self.node_patch_hooks)
        for hook in hooks:
            hook(name, at, node)

    def _delete_node(self, a: Attributes) -> Response:
        with self.store.lock:
            gone = self.store.remove("nodes", "", a.name)
        if gone is None:
            raise not_found("nodes", a.name)
        return json_response(200, status_body(200, "", "", {"name": a.name, "kind": "nodes",
                                                             "uid": gone["metadata"]["uid"]}, "Success"))

    # -- pods -----------------------------------------------------------------------------------

    def _delete_pod(self, req: Request, a: Attributes, user: UserInfo) -> Response:
        options = _json_body(req) if req.body.strip() else {}
        grace = options.get("gracePeriodSeconds")
        if req.q("gracePeriodSeconds"):
            grace = _int_param(req, "gracePeriodSeconds", 0)
        dry = _dry_run(req) or "All" in (options.get("dryRun") or [])
        with self.store.lock:
            pod = self.store.get("pods", a.namespace, a.name)
            if pod is None:
                raise not_found("pods", a.name)
            node = user.node_name
            if node is not None and pod["spec"].get("nodeName", "") != node:
                raise forbidden("pods", a.name,
                                'node "%s" can only delete pods with spec.nodeName set to itself' % node)
            _check_preconditions(pod, options.get("preconditions"))
            result = self.delete_pod_locked(pod, grace, dry)
        return json_response(200, result)

    def delete_pod_locked(self, pod: dict, grace: Optional[int], dry: bool) -> dict:
        """Graceful deletion as registry/core/pod + rest.BeforeDelete do it. Store lock held."""
        meta = pod["metadata"]
        if grace is None:
            grace = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        grace = int(grace)
        if grace < 0:
            grace = 1
        if not pod["spec"].get("nodeName") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            grace = 0
        if meta.get("deletionTimestamp") is not None:
            current = meta.get("deletionGracePeriodSeconds")
            if current and grace >= current:
                return pod  # graceful deletion pending; only a shorter grace period changes it
            if dry:
                return pod
            if current and grace > 0:
                start = _epoch(meta["deletionTimestamp"]) - current
                new = clone(pod)
                new["metadata"]["deletionTimestamp"] = rfc3339(start + grace)
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                stored = self.store.put("pods", new)
                self._schedule_removal(stored, grace, restart=False)
                return stored
            self._maybe_replace(pod, removed=True)
            return self._remove_pod(pod)
        if dry:
            return pod
        if grace == 0:
            self._maybe_replace(pod, removed=True)
            return self._remove_pod(pod)
        new = clone(pod)
        new["metadata"]["deletionTimestamp"] = rfc3339(time.time() + grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        stored = self.store.put("pods", new)
        self._schedule_removal(stored, grace, restart=True)
        self._maybe_replace(stored, removed=False)
        return stored

    def _remove_pod(self, pod: dict) -> dict:
        meta = pod["metadata"]
        self._deletion.pop(meta["uid"], None)
        self._shutdown_s.pop(meta["uid"], None)
        gone = self.store.remove("pods", meta["namespace"], meta["name"])
        return gone or pod

    def _schedule_removal(self, pod: dict, grace: int, restart: bool) -> None:
        uid = pod["metadata"]["uid"]
        self._timer_gen += 1
        gen = self._timer_gen
        start = time.monotonic() if restart or uid not in self._deletion else self._deletion[uid][0]
        self._deletion[uid] = (start, gen)
        lasts = min(float(grace), self._shutdown_s.get(uid, float(grace)))
        due = start + lasts * self.opt.time_scale
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]

        def finish() -> None:
            with self.store.lock:
                if self._deletion.get(uid, (0, -1))[1] != gen:
                    return
                current = self.store.get("pods", ns, name)
                if current is None or current["metadata"]["uid"] != uid:
                    self._deletion.pop(uid, None)
                    return
                self._remove_pod(current)
                self._maybe_replace(current, removed=True)

        self.sched.call_later(due - time.monotonic(), finish)

    def _patch_pod(self, req: Request, a: Attributes) -> Response:
        kind = _patch_kind(req)
        patch = _json_body(req, allow_list=True)
        dry = _dry_run(req)
        with self.store.lock:
            pod = self.store.get("pods", a.namespace, a.name)
            if pod is None:
                raise not_found("pods", a.name)
            try:
                new = apply_patch(kind, pod, patch, POD_SCHEMA)
            except PatchError as err:
                raise unprocessable(str(err))
            if new.get("spec", {}).get("nodeName", "") != pod["spec"].get("nodeName", "") or \
                    new.get("metadata", {}).get("name") != a.name:
                raise invalid("Pod", a.name, "spec", "Forbidden: pod updates may not change fields other than "
                                                     "`spec.containers[*].image`, ...", "FieldValueForbidden")
            rv = new["metadata"].get("resourceVersion")
            if rv and rv != pod["metadata"]["resourceVersion"]:
                raise conflict("pods", a.name, "the object has been modified; please apply your changes to "
                                               "the latest version and try again")
            new["metadata"]["uid"] = pod["metadata"]["uid"]
            if dry or _without_rv(new) == _without_rv(pod):
                return json_response(200, new if dry else pod)
            stored = self.store.put("pods", new)
        return json_response(200, stored)

    # -- eviction -------------------------------------------------------------------------------

    def _evict(self, req: Request, a: Attributes, user: UserInfo) -> Response:
        body = _json_body(req)
        kind, api_version = body.get("kind", "Eviction"), body.get("apiVersion", "policy/v1")
        if kind != "Eviction" or api_version not in ("policy/v1", "policy/v1beta1"):
            raise bad_request("not a Eviction object: %s %s" % (api_version, kind))
        options = body.get("deleteOptions") or {}
        dry = _dry_run(req) or "All" in (options.get("dryRun") or [])
        with self.store.lock:
            pod = self.store.get("pods", a.namespace, a.name)
            node = user.node_name
            if node is not None:  # NodeRestriction admitPodEviction
                if pod is None:
                    raise not_found("pods", a.name)
                if pod["spec"].get("nodeName", "") != node:
                    raise forbidden("pods", a.name,
                                    "node %s can only evict pods with spec.nodeName set to itself" % node)
            if (body.get("metadata") or {}).get("name") != a.name:
                raise bad_request("name in URL does not match name in Eviction object")
            if pod is None:
                raise not_found("pods", a.name)
            _check_preconditions(pod, options.get("preconditions"))
            grace = options.get("gracePeriodSeconds")
            phase = pod["status"].get("phase")
            if phase in ("Succeeded", "Failed", "Pending") or pod["metadata"].get("deletionTimestamp"):
                self.delete_pod_locked(pod, grace, dry)  # terminal, pending or terminating: no PDB check
                return _eviction_success()
            pdbs = kube_pdb.pdbs_for(pod, self.store.values("poddisruptionbudgets", a.namespace))
            if len(pdbs) > 1:
                return json_response(500, status_body(
                    500, "", "This pod has more than one PodDisruptionBudget, which the eviction subresource "
                             "does not support."))
            if pdbs:
                refusal = kube_pdb.eviction_refusal(pod, pdbs[0], self.pdb_status(pdbs[0]))
                if refusal is not None:
                    raise refusal
            self.delete_pod_locked(pod, grace, dry)
        return _eviction_success()

    # -- PodDisruptionBudgets (status as the disruption controller computes it) ----------------

    def pdb_status(self, pdb: dict) -> Dict[str, int]:
        """Store lock held."""
        return kube_pdb.pdb_status(pdb, self.store.values("pods", pdb["metadata"]["namespace"]), self._scale)

    def _with_pdb_status(self, pdb: dict) -> dict:
        return kube_pdb.with_status(pdb, self.pdb_status(pdb))

    def add_scale(self, namespace: str, kind: str, name: str, delta: int = 1) -> None:
        with self.store.lock:
            key = (namespace, kind, name)
            self._scale[key] = self._scale.get(key, 0) + delta

    def set_scale(self, namespace: str, kind: str, name: str, replicas: int) -> None:
        with self.store.lock:
            self._scale[(namespace, kind, name)] = replicas

    def set_shutdown(self, uid: str, seconds: float) -> None:
        with self.store.lock:
            self._shutdown_s[uid] = seconds

    # -- the ReplicaSet / StatefulSet controllers (replace_evicted) ----------------------------

    def _maybe_replace(self, pod: dict, removed: bool) -> None:
        if not self.opt.replace_evicted:
            return
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") not in ("ReplicaSet", "StatefulSet"):
            return
        if pod["spec"].get("nodeName") == self.opt.replacement_node:
            return
        stateful = ref["kind"] == "StatefulSet"
        # a StatefulSet replaces a pod once it is gone (same name); a ReplicaSet as soon as it is
        # terminating, or when it is removed without a grace period
        if stateful and not removed:
            return
        if not stateful and removed and pod["metadata"].get("deletionTimestamp"):
            return
        template = clone(pod)
        self.sched.call_later(0.2 * self.opt.time_scale, lambda: self._create_replacement(template, stateful))

    def _create_replacement(self, old: dict, stateful: bool) -> None:
        meta = old["metadata"]
        name = meta["name"] if stateful else "%s-%s" % ((controller_ref(old) or {}).get("name", "pod"),
                                                       uuid.uuid4().hex[:5])
        with self.store.lock:
            if self.store.get("nodes", "", self.opt.replacement_node) is None:
                self.store.put("nodes", make_node(self.opt.replacement_node, provider_id=None, labels=None,
                                                  unschedulable=False,
                                                  kubelet_version="v1.%d.5-eks-sim" % self.opt.k8s_minor))
            if self.store.get("pods", meta["namespace"], name) is not None:
                return
            annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != MIRROR_ANNOTATION}
            fresh = make_pod(name, meta["namespace"], node=self.opt.replacement_node, labels=meta.get("labels"),
                             owner=controller_ref(old), priority_class=old["spec"].get("priorityClassName"),
                             priority=old["spec"].get("priority"),
                             grace_s=int(old["spec"].get("terminationGracePeriodSeconds", 30)), mirror=False,
                             emptydir=bool(old["spec"].get("volumes")), phase="Running",
                             ready=self.opt.replacement_ready_after_s <= 0, annotations=annotations)
            stored = self.store.put("pods", fresh)
        if self.opt.replacement_ready_after_s > 0:
            uid = stored["metadata"]["uid"]
            self.sched.call_later(self.opt.replacement_ready_after_s * self.opt.time_scale,
                                  lambda: self._become_ready(meta["namespace"], name, uid))

    def _become_ready(self, namespace: str, name: str, uid: str) -> None:
        with self.store.lock:
            pod = self.store.get("pods", namespace, name)
            if pod is None or pod["metadata"]["uid"] != uid:
                return
            new = clone(pod)
            for condition in new["status"].get("conditions") or []:
                if condition.get("type") in ("Ready", "ContainersReady"):
                    condition["status"] = "True"
            for container in new["status"].get("containerStatuses") or []:
                container["ready"] = True
            self.store.put("pods", new)

    # -- events ---------------------------------------------------------------------------------

    def _create_event(self, req: Request, a: Attributes) -> Response:
        ev = _json_body(req)
        meta = ev.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        ns = meta.get("namespace") or a.namespace
        if ns != a.namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on "
                              "the request")
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            else:
                raise invalid("Event", "", "metadata.name", "Required value: name or generateName is required",
                              "FieldValueRequired")
        if not isinstance(ev.get("involvedObject"), dict):
            raise invalid("Event", meta["name"], "involvedObject", "Required value", "FieldValueRequired")
        meta["namespace"] = ns
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = rfc3339()
        meta.pop("resourceVersion", None)
        ev["kind"], ev["apiVersion"] = "Event", "v1"
        if _dry_run(req):
            return json_response(201, ev)
        with self.store.lock:
            if self.store.get("events", ns, meta["name"]) is not None:
                raise already_exists("events", meta["name"])
            stored = self.store.put("events", ev)
            self._events_log.append(stored)
        return json_response(201, stored)

    def _update_event(self, req: Request, a: Attributes) -> Response:
        dry = _dry_run(req)
        with self.store.lock:
            cur = self.store.get("events", a.namespace, a.name)
            if cur is None:
                raise not_found("events", a.name)
            if a.verb == "patch":
                try:
                    new = apply_patch(_patch_kind(req), cur, _json_body(req, allow_list=True), GENERIC_SCHEMA)
                except PatchError as err:
                    raise unprocessable(str(err))
            else:
                new = _json_body(req)
            meta = new.setdefault("metadata", {})
            rv = meta.get("resourceVersion")
            if rv and rv != cur["metadata"]["resourceVersion"]:
                raise conflict("events", a.name, "the object has been modified; please apply your changes to "
                                                 "the latest version and try again")
            for k in ("uid", "creationTimestamp", "name", "namespace"):
                meta[k] = cur["metadata"][k]
            new["kind"], new["apiVersion"] = "Event", "v1"
            if dry:
                return json_response(200, new)
            stored = self.store.put("events", new)
            self._events_log = [stored if e["metadata"]["uid"] == stored["metadata"]["uid"] else e
                                for e in self._events_log]
        return json_response(200, stored)

    def _create_events_v1(self, req: Request, a: Attributes) -> Response:
        ev = _json_body(req)
        meta = ev.setdefault("metadata", {})
        meta.setdefault("name", (meta.get("generateName") or "event.") + uuid.uuid4().hex[:8])
        meta.update(namespace=a.namespace, uid=new_uid(), creationTimestamp=rfc3339(), resourceVersion="1")
        ev.setdefault("eventTime", micro_time())
        return json_response(201, ev)

    def events(self) -> List[dict]:
        with self.store.lock:
            return [clone(e) for e in self._events_log]


# ---------------------------------------------------------------------------------------------
# helpers


def _eviction_success() -> Response:
    return json_response(201, status_body(201, "", "", None, "Success"))


def _epoch(ts: str) -> float:
    return parse_rfc3339(ts)


def _int_param(req: Request, name: str, default: int) -> int:
    raw = req.q(name)
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise bad_request("%s: Invalid value: %s: must be an integer" % (name, json.dumps(raw)))


def _json_body(req: Request, allow_list: bool = False) -> Any:
    ctype = (req.headers.get("Content-Type") or "application/json").split(";")[0].strip().lower()
    if ctype not in ("application/json", "") and ctype not in PATCH_TYPES:
        raise unsupported_media_type(ctype)
    try:
        value = json.loads(req.body.decode() or "{}")
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request("the body of the request was not valid JSON: %s" % err)
    if isinstance(value, dict) or (allow_list and isinstance(value, list)):
        return value
    raise bad_request("the body of the request must be a JSON object")


def _patch_kind(req: Request) -> str:
    ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    kind = PATCH_TYPES.get(ctype)
    if kind is None or kind == "apply":
        raise unsupported_media_type(ctype)
    return kind


def _dry_run(req: Request) -> bool:
    values = req.query.get("dryRun") or []
    for v in values:
        if v != "All":
            raise bad_request('dryRun: Unsupported value: "%s": supported values: "All"' % v)
    return bool(values)


def _check_preconditions(obj: dict, pre: Optional[dict]) -> None:
    if not pre:
        return
    meta = obj["metadata"]
    if pre.get("uid") and pre["uid"] != meta["uid"]:
        raise conflict("pods", meta["name"], "Precondition failed: UID in precondition: %s, UID in object meta: %s"
                       % (pre["uid"], meta["uid"]))
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
        raise conflict("pods", meta["name"], "Precondition failed: ResourceVersion in precondition: %s, "
                                             "ResourceVersion in object meta: %s"
                       % (pre["resourceVersion"], meta["resourceVersion"]))
