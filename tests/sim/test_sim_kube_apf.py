"""API Priority and Fairness in the Kubernetes API simulator, and its throttling faults, seen by a
real HTTPS client (http.client over TLS, so the exact bytes and headers of each answer show)."""

from __future__ import annotations

import email.utils
import http.client
import json
import ssl
import threading
import time
from typing import Dict, List, Optional, Tuple

import pytest

from nodeagent_sim.kube import ApfConfig, KubeSim
from tests.helpers import wait_for

ME = "me"
NODE_PATH = "/api/v1/nodes/me"
REAL_TEXT = b"Too many requests, please try again later.\n"

Answer = Tuple[int, Dict[str, str], bytes]


class Client:
    """One kept-alive HTTPS connection with the node's bearer token."""

    def __init__(self, sim: KubeSim, token: str):
        context = ssl.create_default_context(cafile=sim.ca_file)
        self.conn = http.client.HTTPSConnection(sim.host, sim.port, context=context, timeout=30)
        self.token = token

    def request(self, method: str, path: str, body: Optional[dict] = None) -> Answer:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + self.token, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def open_watch(self, path: str) -> http.client.HTTPResponse:
        self.conn.request("GET", path, headers={"Authorization": "Bearer " + self.token})
        resp = self.conn.getresponse()
        assert resp.status == 200
        return resp

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def sim():
    s = KubeSim(time_scale=0.01).start()
    s.add_node(ME, provider_id="aws:///us-east-1a/i-0123456789abcdef0")
    yield s
    s.stop()


def in_background(client: Client, method: str, path: str, answers: List[Answer]) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(client.request(method, path)), daemon=True)
    thread.start()
    return thread


def saturate(sim: KubeSim) -> Tuple[List[Answer], List[threading.Thread], List[Client]]:
    """One request executing and one queued (seats=1, queue=1), each on its own connection."""
    token = sim.add_node_token(ME)
    clients = [Client(sim, token), Client(sim, token)]
    answers: List[Answer] = []
    threads = [in_background(clients[0], "GET", NODE_PATH, answers)]
    wait_for(lambda: sim.apf_stats().executing == 1)
    threads.append(in_background(clients[1], "GET", NODE_PATH, answers))
    wait_for(lambda: sim.apf_stats().queued == 1)
    return answers, threads, clients


def test_apf_is_off_by_default(sim):
    client = Client(sim, sim.add_node_token(ME))
    assert sim.apf_stats() is None
    answers = [client.request("GET", NODE_PATH)[0] for _ in range(20)]
    assert answers == [200] * 20 and not any(r.throttled for r in sim.requests)
    client.close()


def test_full_queue_gets_the_real_429_and_queued_requests_are_served(sim):
    sim.set_apf(ApfConfig(seats=1, queue=1, retry_after_s=2, service_time_s=3.0))
    answers, threads, clients = saturate(sim)
    third = Client(sim, sim.add_node_token(ME))
    status, headers, body = third.request("GET", NODE_PATH)
    # kube-apiserver's answer: http.Error's plain text, Retry-After in seconds
    assert status == 429
    assert headers["retry-after"] == "2"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert body == REAL_TEXT
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(a[0] for a in answers) == [200, 200]  # the executing one and the queued one
    rejected = [r for r in sim.requests if r.throttled]
    assert len(rejected) == 1 and rejected[0].status == 429 and rejected[0].retry_after == "2"
    assert rejected[0].user == "system:node:me" and rejected[0].method == "GET" and rejected[0].path == NODE_PATH
    served = sorted((r for r in sim.requests if r.status == 200), key=lambda r: r.t_monotonic)
    assert served[0].queued_s == 0 and served[1].queued_s > 1.0  # waited for the seat
    stats = sim.apf_stats()
    assert (stats.peak_executing, stats.peak_queued, stats.rejected, stats.admitted) == (1, 1, 1, 2)
    for c in clients + [third]:
        c.close()


def test_queue_wait_runs_out_and_status_body_variant(sim):
    sim.set_apf(ApfConfig(seats=1, queue=1, queue_wait_s=0.2, retry_after_s=5, service_time_s=3.0,
                          status_body=True))
    token = sim.add_node_token(ME)
    first, second = Client(sim, token), Client(sim, token)
    answers: List[Answer] = []
    thread = in_background(first, "GET", NODE_PATH, answers)
    wait_for(lambda: sim.apf_stats().executing == 1)
    status, headers, body = second.request("GET", NODE_PATH)  # queued, then turned away after 0.2 s
    assert status == 429 and headers["retry-after"] == "5"
    assert json.loads(body) == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": "Too many requests, please try again later.",
                                "reason": "TooManyRequests", "details": {"retryAfterSeconds": 5}, "code": 429}
    thread.join(timeout=30)
    assert answers[0][0] == 200
    assert sim.apf_stats().rejected == 1
    first.close()
    second.close()


def test_watches_hold_no_seat_and_masters_are_exempt(sim):
    sim.set_apf(ApfConfig(seats=1, queue=0, service_time_s=0.0))
    token = sim.add_node_token(ME)
    watchers = [Client(sim, token) for _ in range(3)]
    streams = [w.open_watch("/api/v1/pods?fieldSelector=spec.nodeName%3Dme&watch=true&timeoutSeconds=30")
               for w in watchers]
    wait_for(lambda: sim.open_watches() == 3)
    assert sim.apf_stats().executing == 0  # three watches open, the one seat is free
    client = Client(sim, token)
    assert client.request("GET", NODE_PATH)[0] == 200
    sim.set_apf(ApfConfig(seats=1, queue=0, service_time_s=3.0))
    answers: List[Answer] = []
    thread = in_background(client, "GET", NODE_PATH, answers)
    wait_for(lambda: sim.apf_stats().executing == 1)
    admin = Client(sim, sim.admin_token())
    assert admin.request("GET", NODE_PATH)[0] == 200  # system:masters: the exempt level
    assert Client(sim, token).request("GET", NODE_PATH)[0] == 429  # the node is not
    thread.join(timeout=30)
    sim.cut_watches()
    for stream in streams:
        stream.close()
    for c in watchers + [client, admin]:
        c.close()


def test_throttling_faults_retry_after_forms(sim):
    client = Client(sim, sim.add_node_token(ME))
    sim.inject(count=2, status=429, method="GET", path_regex=r"/nodes/me$", retry_after=3)
    for _ in range(2):
        status, headers, body = client.request("GET", NODE_PATH)
        assert status == 429 and headers["retry-after"] == "3"
        doc = json.loads(body)
        assert doc["reason"] == "TooManyRequests" and "retryAfterSeconds" not in doc.get("details", {})
    assert client.request("GET", NODE_PATH)[0] == 200  # the fault was for the next two only

    sim.inject(status=503, path_regex=r"/nodes/me$", retry_after=4, retry_after_form="date")
    before = time.time()
    status, headers, body = client.request("GET", NODE_PATH)
    assert status == 503 and json.loads(body)["reason"] == "ServiceUnavailable"
    when = email.utils.parsedate_to_datetime(headers["retry-after"]).timestamp()
    assert before + 3 <= when <= time.time() + 5

    sim.inject(status=429, path_regex=r"/nodes/me$", retry_after_form="absent")
    status, headers, _ = client.request("GET", NODE_PATH)
    assert status == 429 and "retry-after" not in headers

    sim.inject(status=429, path_regex=r"/nodes/me$", retry_after=3600, details_retry_after=3600)
    status, headers, body = client.request("GET", NODE_PATH)
    assert status == 429 and headers["retry-after"] == "3600"
    assert json.loads(body)["details"] == {"retryAfterSeconds": 3600}

    sim.inject(status=429, path_regex=r"/nodes/me$", retry_after=2, plain_text=True)
    status, headers, body = client.request("GET", NODE_PATH)
    assert (status, headers["retry-after"], headers["content-type"], body) == (
        429, "2", "text/plain; charset=utf-8", REAL_TEXT)

    sim.add_pod("p", node=ME)
    sim.inject(status=429, method="POST", path_regex=r"/eviction$", retry_after=1, details_retry_after=1)
    status, headers, body = client.request("POST", "/api/v1/namespaces/default/pods/p/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}})
    assert status == 429 and headers["retry-after"] == "1"
    assert json.loads(body)["details"]["retryAfterSeconds"] == 1
    throttled = [r for r in sim.requests if r.throttled]
    values = [r.retry_after for r in throttled]
    assert values[:2] == ["3", "3"] and values[2].endswith(" GMT") and values[3:] == ["", "3600", "2", "1"]
    assert all(r.injected and r.user == "system:node:me" for r in throttled)
    client.close()


def test_bad_retry_after_form_is_refused(sim):
    with pytest.raises(ValueError):
        sim.inject(status=429, retry_after_form="soon")
    with pytest.raises(ValueError):
        ApfConfig(seats=0)


def test_replacements_become_ready_after_the_delay(tmp_path):
    with KubeSim(time_scale=0.1, replace_evicted=True, replacement_ready_after_s=5) as sim:
        sim.add_node(ME)
        for i in range(2):
            sim.add_pod("web-%d" % i, node=ME, labels={"app": "web"}, owner_kind="ReplicaSet", owner_name="web-rs")
        sim.add_pdb("web-pdb", "default", selector={"app": "web"}, max_unavailable=1)
        client = Client(sim, sim.add_node_token(ME))

        def evict(name: str) -> int:
            return client.request("POST", "/api/v1/namespaces/default/pods/%s/eviction" % name, {
                "apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": "default"}})[0]

        assert evict("web-0") == 201
        replacement = wait_for(lambda: [p for p in sim.pods() if p["spec"]["nodeName"] == "elsewhere"])[0]
        ready = {c["type"]: c["status"] for c in replacement["status"]["conditions"]}
        assert ready["Ready"] == "False"
        assert evict("web-1") == 429  # the replacement is not Ready yet: the budget is spent
        wait_for(lambda: sim.pdb_status("default", "web-pdb")["disruptionsAllowed"] == 1, timeout_s=10)
        assert evict("web-1") == 201
        client.close()
