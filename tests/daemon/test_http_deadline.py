"""The webhook and the Auto Scaling calls have a wall-clock deadline per attempt, as the
Kubernetes client has: a loopback HTTPS server trickles its answer one byte every 0.3 s, so no
per-read timeout ever fires; each attempt must still end at its deadline with a clear error."""
from __future__ import annotations

import threading
import time
from collections import namedtuple

import pytest

from nodeagent.aws.autoscaling import AutoScalingClient, AutoScalingError
from nodeagent.report.webhook_delivery import DeliveryPolicy, WebhookSender
from nodeagent.report.worker import Worker
from tests.daemon.test_kube_deadline import TrickleServer

Frozen = namedtuple("Frozen", "access_key secret_key token")


class StaticCredentials:
    def get_frozen_credentials(self) -> Frozen:
        return Frozen("ASIATESTKEY", "test/secret", "test-token")

    def invalidate(self) -> None:
        pass


@pytest.fixture
def trickle(tmp_path):
    server = TrickleServer(tmp_path)
    yield server
    server.close()


def in_thread(call, limit_s: float) -> dict:
    outcome: dict = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = call()
        except Exception as error:  # the test looks at what it was
            outcome["error"] = error
        outcome["took"] = time.monotonic() - started

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=limit_s)
    assert not worker.is_alive(), f"still blocked after {limit_s:g}s"
    return outcome


@pytest.mark.parametrize("path", ["/slow-head", "/slow-body"])
def test_a_webhook_send_gives_up_by_its_give_up_time_against_a_trickle(trickle, path, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", trickle.cert.ca_file)  # how requests is told which CA to trust
    policy = DeliveryPolicy(connect_timeout_s=3.0, read_timeout_s=5.0, first_backoff_s=0.2)
    sender = WebhookSender(trickle.url + path, {}, policy, Worker("test-webhook"))
    try:
        outcome = in_thread(lambda: sender.send(b"{}", time.monotonic() + 3.0, "test"), 10)
        result = outcome["result"]
        assert not result.delivered, result
        assert result.problem == ("no complete answer within 3s (the server is sending too slowly); gave up "
                                  "(<redacted>)"), result
        assert outcome["took"] < 4.5, outcome  # the give-up time, not a trickle's whim
        assert trickle.bytes_trickled >= 4  # no per-read timeout ended it
        assert trickle.url not in result.problem
    finally:
        sender.close()


@pytest.mark.parametrize("path", ["/slow-head", "/slow-body"])
def test_an_auto_scaling_call_is_cut_at_connect_plus_read_timeout(trickle, path):
    client = AutoScalingClient(trickle.url + path, "us-east-1", StaticCredentials(),
                               ca_bundle=trickle.cert.ca_file, timeout=(1.0, 1.0))
    try:
        outcome = in_thread(lambda: client.record_lifecycle_action_heartbeat("nodes", "hook", "i-0123"), 10)
        error = outcome.get("error")
        assert isinstance(error, AutoScalingError), outcome
        assert str(error) == (f"RecordLifecycleActionHeartbeat: {trickle.url}{path}/: no complete answer within "
                              "2s (the server is sending too slowly); gave up"), error
        assert error.retry  # like an outage: the caller's backoff tries again
        assert 1.9 <= outcome["took"] < 3.5, outcome
        assert trickle.bytes_trickled >= 4
    finally:
        client.close()


def test_the_deadline_holds_through_an_https_proxy(trickle, monkeypatch):
    """HTTPS_PROXY set: requests makes its pools through a proxy manager, which gets the tracked
    connections too (a CONNECT tunnel through a loopback proxy to the trickling server)."""
    from tests.daemon.test_kube_proxy import PROXY_VARIABLES, ConnectProxy

    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    proxy = ConnectProxy()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", trickle.cert.ca_file)
    sender = WebhookSender(trickle.url + "/slow-body", {}, DeliveryPolicy(first_backoff_s=0.2), Worker("test-webhook"))
    try:
        outcome = in_thread(lambda: sender.send(b"{}", time.monotonic() + 2.0, "test"), 10)
        assert outcome["result"].problem.startswith("no complete answer within 2s"), outcome
        assert proxy.connects == [trickle.url[len("https://"):]]
    finally:
        sender.close()
        proxy.close()
