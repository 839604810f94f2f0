"""Who is calling, and may they: bearer tokens, the Node authorizer + RBAC NodeRules, kubeconfigs.

The authorizer follows kubernetes/kubernetes plugin/pkg/auth/authorizer/node/node_authorizer.go
(with AuthorizeNodeWithSelectors on or off) and the static NodeRules of the bootstrap policy;
`system:masters` may do anything; every authenticated user may use discovery, SelfSubjectReview
and SelfSubjectAccessReview. Everything else is denied, with the real message format.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from .kube_objects import ApiError, forbidden
from .kube_select import FieldReq

NODE_PREFIX = "system:node:"
EXEC_TOKEN_PREFIX = "k8s-aws-v1."
EXEC_API_VERSION = "client.authentication.k8s.io/v1beta1"


@dataclass(frozen=True)
class UserInfo:
    username: str
    groups: Tuple[str, ...]
    uid: str = ""

    @property
    def node_name(self) -> Optional[str]:
        """nodeidentifier: the node a `system:node:<name>` user in `system:nodes` stands for."""
        if "system:nodes" in self.groups and self.username.startswith(NODE_PREFIX):
            return self.username[len(NODE_PREFIX):]
        return None

    @property
    def is_master(self) -> bool:
        return "system:masters" in self.groups

    def as_dict(self) -> dict:
        out: dict = {"username": self.username}
        if self.uid:
            out["uid"] = self.uid
        out["groups"] = list(self.groups)
        return out


def node_user(node_name: str) -> UserInfo:
    return UserInfo(NODE_PREFIX + node_name, ("system:nodes", "system:authenticated"),
                    "aws-iam-authenticator:111122223333:AROASIMNODE%s" % _short_hash(node_name))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12].upper()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenBook:
    """Static bearer tokens plus self-verifying, expiring exec-plugin tokens (HMAC over node+times)."""

    def __init__(self) -> None:
        self.secret = secrets.token_hex(32)
        self._static: Dict[str, UserInfo] = {}
        self._revoked_before = 0.0
        self._lock = threading.Lock()

    def add(self, token: str, user: UserInfo) -> str:
        with self._lock:
            self._static[token] = user
        return token

    def new_token(self, user: UserInfo) -> str:
        return self.add(secrets.token_urlsafe(24), user)

    def revoke_all(self) -> None:
        """Every token issued so far stops working (401)."""
        with self._lock:
            self._static.clear()
            self._revoked_before = time.time()

    def mint_exec(self, node_name: str, ttl_s: float, now: Optional[float] = None) -> Tuple[str, int]:
        return mint_exec_token(self.secret, node_name, ttl_s, now)

    def verify(self, token: str, now: Optional[float] = None) -> Optional[UserInfo]:
        with self._lock:
            user = self._static.get(token)
            revoked_before = self._revoked_before
        if user is not None:
            return user
        if not token.startswith(EXEC_TOKEN_PREFIX):
            return None
        try:
            payload, sig = token[len(EXEC_TOKEN_PREFIX):].rsplit(".", 1)
        except ValueError:
            return None
        want = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, sig):
            return None
        try:
            claims = json.loads(_unb64(payload))
            node, iat, exp = str(claims["n"]), float(claims["iat"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if now >= exp or iat < revoked_before:
            return None
        return node_user(node)


def mint_exec_token(secret: str, node_name: str, ttl_s: float, now: Optional[float] = None) -> Tuple[str, int]:
    """(token, expiry epoch seconds). Mirrored by the generated exec plugin script."""
    now = time.time() if now is None else now
    exp = int(math.ceil(now + ttl_s))
    payload = _b64(json.dumps({"n": node_name, "iat": now, "exp": exp}, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return EXEC_TOKEN_PREFIX + payload + "." + sig, exp


# ---------------------------------------------------------------------------------------------
# authorization


@dataclass
class Attributes:
    """authorizer.Attributes, as RequestInfo derives them from the request."""

    verb: str
    path: str
    is_resource: bool = False
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    field_reqs: List[FieldReq] = field(default_factory=list)


# (group, resource incl. subresource) -> verbs, from bootstrappolicy NodeRules (the parts that matter here)
_NODE_RULES: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("authentication.k8s.io", "tokenreviews"): ("create",),
    ("authorization.k8s.io", "subjectaccessreviews"): ("create",),
    ("authorization.k8s.io", "localsubjectaccessreviews"): ("create",),
    ("", "services"): ("get", "list", "watch"),
    ("", "nodes"): ("create", "get", "list", "watch", "update", "patch"),
    ("", "nodes/status"): ("update", "patch"),
    ("", "events"): ("create", "update", "patch"),
    ("", "pods"): ("get", "list", "watch", "create", "delete"),
    ("", "pods/status"): ("update", "patch"),
    ("", "pods/eviction"): ("create",),
}

# system:basic-user: every authenticated user
_BASIC_RULES: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("authentication.k8s.io", "selfsubjectreviews"): ("create",),
    ("authorization.k8s.io", "selfsubjectaccessreviews"): ("create",),
    ("authorization.k8s.io", "selfsubjectrulesreviews"): ("create",),
}

PodNodeLookup = Callable[[str, str], Optional[str]]  # (namespace, name) -> spec.nodeName, None if absent


def _rules_allow(rules: Dict[Tuple[str, str], Tuple[str, ...]], attrs: Attributes) -> bool:
    resource = attrs.resource + ("/" + attrs.subresource if attrs.subresource else "")
    return attrs.verb in rules.get((attrs.group, resource), ())


def authorize(user: UserInfo, attrs: Attributes, *, selector_authz: bool,
              pod_node: PodNodeLookup) -> Tuple[bool, str]:
    """(allowed, reason). The reason is what follows the colon in a 403 message."""
    if user.is_master:
        return True, ""
    if not attrs.is_resource:
        return True, ""  # discovery, version, health: system:discovery / system:public-info-viewer
    if _rules_allow(_BASIC_RULES, attrs):
        return True, ""
    node = user.node_name
    if node is None:
        return False, ""
    if attrs.group == "" and attrs.resource == "nodes" and selector_authz:
        return _authorize_node(node, attrs)
    if attrs.group == "" and attrs.resource == "pods" and selector_authz:
        return _authorize_pod(node, attrs, pod_node)
    return _rules_allow(_NODE_RULES, attrs), ""


def _authorize_node(node: str, attrs: Attributes) -> Tuple[bool, str]:
    if attrs.subresource == "":
        if attrs.verb in ("create", "update", "patch"):
            return True, ""  # NodeRestriction admission limits these to the node's own object
        if attrs.verb in ("get", "list", "watch"):
            if attrs.name == node:
                return True, ""
            if attrs.name == "":
                return False, "node '%s' cannot read all nodes, only its own Node object" % node
            return False, "node '%s' cannot read '%s', only its own Node object" % (node, attrs.name)
    elif attrs.subresource == "status" and attrs.verb in ("update", "patch"):
        return True, ""
    return False, ""


def _related(node: str, attrs: Attributes, pod_node: PodNodeLookup) -> Tuple[bool, str]:
    """The graph check: is there an edge pod -> this node."""
    if not attrs.name:
        return False, "No Object name found"
    if attrs.namespace and pod_node(attrs.namespace, attrs.name) == node:
        return True, ""
    return False, "no relationship found between node '%s' and this object" % node


def _authorize_pod(node: str, attrs: Attributes, pod_node: PodNodeLookup) -> Tuple[bool, str]:
    if attrs.subresource == "":
        if attrs.verb == "get":
            return _related(node, attrs, pod_node)
        if attrs.verb in ("list", "watch"):
            for req in attrs.field_reqs:
                if req.field == "spec.nodeName" and req.op == "=" and req.value == node:
                    return True, ""
            if attrs.name:
                return _related(node, attrs, pod_node)
            return False, "can only list/watch pods with spec.nodeName field selector"
        if attrs.verb in ("create", "delete"):
            return True, ""  # NodeRestriction admission limits these to pods bound to the node
    elif attrs.subresource == "status" and attrs.verb in ("update", "patch"):
        return True, ""
    elif attrs.subresource == "eviction" and attrs.verb == "create":
        return True, ""
    return False, ""


def forbidden_error(user: UserInfo, attrs: Attributes, reason: str) -> ApiError:
    """responsewriters.Forbidden: the message every 403 from the authorizer carries."""
    if not attrs.is_resource:
        msg = 'User "%s" cannot %s path "%s"' % (user.username, attrs.verb, attrs.path)
        return forbidden("", "", msg + (": " + reason if reason else ""))
    resource = attrs.resource + ("/" + attrs.subresource if attrs.subresource else "")
    if attrs.namespace:
        msg = 'User "%s" cannot %s resource "%s" in API group "%s" in the namespace "%s"' % (
            user.username, attrs.verb, resource, attrs.group, attrs.namespace)
    else:
        msg = 'User "%s" cannot %s resource "%s" in API group "%s" at the cluster scope' % (
            user.username, attrs.verb, resource, attrs.group)
    if reason:
        msg += ": " + reason
    return forbidden(attrs.resource, attrs.name, msg, attrs.group)


# ---------------------------------------------------------------------------------------------
# kubeconfigs and the exec credential plugin

_EXEC_SCRIPT = '''\
"""Exec credential plugin generated by nodeagent_sim.kube (test only)."""
import base64, hashlib, hmac, json, math, sys, time

SETTINGS = %(settings)r


def main():
    with open(SETTINGS) as f:
        cfg = json.load(f)
    with open(cfg["counter"], "a") as f:
        f.write("%%f\\n" %% time.time())
    if cfg.get("hang"):
        while True:
            time.sleep(3600)
    if cfg.get("delay_s"):
        time.sleep(cfg["delay_s"])
    if cfg.get("fail"):
        sys.stderr.write(cfg.get("fail_message") or "error: simulated credential failure\\n")
        sys.exit(1)
    now = time.time()
    exp = int(math.ceil(now + cfg["ttl_s"]))
    claims = json.dumps({"n": cfg["node"], "iat": now, "exp": exp}, separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(claims).decode().rstrip("=")
    sig = hmac.new(cfg["secret"].encode(), payload.encode(), hashlib.sha256).hexdigest()
    print(json.dumps({
        "kind": "ExecCredential",
        "apiVersion": "%(api_version)s",
        "spec": {},
        "status": {
            "expirationTimestamp": time.strftime("%%Y-%%m-%%dT%%H:%%M:%%SZ", time.gmtime(exp)),
            "token": "%(prefix)s" + payload + "." + sig,
        },
    }))


main()
'''


def exec_paths(kubeconfig_path: str) -> Tuple[str, str, str]:
    """(script, settings, counter) files that sit next to an exec kubeconfig."""
    base = os.path.abspath(kubeconfig_path)
    return base + ".exec.py", base + ".exec.json", base + ".exec-count"


def write_kubeconfig(path: str, server: str, ca_file: str, user: dict) -> str:
    """A kubeconfig (JSON is valid YAML, and both clients read it)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "sim", "cluster": {"server": server, "certificate-authority": ca_file}}],
        "users": [{"name": "sim-user", "user": user}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "sim-user"}}],
        "current-context": "sim",
    }
    _atomic_write(path, json.dumps(config, indent=2) + "\n")
    return path


def write_exec_kubeconfig(path: str, server: str, ca_file: str, secret: str, node_name: str, *,
                          delay_s: float, ttl_s: float, fail: bool, hang: bool) -> str:
    script, settings, counter = exec_paths(path)
    _atomic_write(script, _EXEC_SCRIPT % {"settings": settings, "api_version": EXEC_API_VERSION,
                                          "prefix": EXEC_TOKEN_PREFIX})
    _atomic_write(settings, json.dumps({"node": node_name, "secret": secret, "counter": counter,
                                        "delay_s": delay_s, "ttl_s": ttl_s, "fail": fail, "hang": hang}))
    open(counter, "a").close()
    user = {"exec": {"apiVersion": EXEC_API_VERSION, "command": sys.executable, "args": ["-I", script],
                     "interactiveMode": "Never", "provideClusterInfo": False}}
    return write_kubeconfig(path, server, ca_file, user)


def configure_exec(kubeconfig_path: str, **changes: object) -> None:
    """Change how the plugin behind an exec kubeconfig behaves from its next run on
    (keys: delay_s, ttl_s, fail, fail_message, hang)."""
    _, settings, _ = exec_paths(kubeconfig_path)
    with open(settings) as f:
        cfg = json.load(f)
    unknown = set(changes) - {"delay_s", "ttl_s", "fail", "fail_message", "hang"}
    if unknown:
        raise TypeError("unknown exec settings: %s" % ", ".join(sorted(unknown)))
    cfg.update(changes)
    _atomic_write(settings, json.dumps(cfg))


def exec_invocations(kubeconfig_path: str) -> int:
    """How many times the exec plugin of this kubeconfig has been started."""
    _, _, counter = exec_paths(kubeconfig_path)
    try:
        with open(counter) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def _atomic_write(path: str, text: str) -> None:
    tmp = "%s.tmp%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
