"""Webhooks: a local http.server receives the daemon's JSON and Slack messages; injected 500s are
retried; the URL and header values never reach the logs or `nodeagent status`."""
from __future__ import annotations

import json
import signal
import time

import pytest

from nodeagent.report.webhook_delivery import DeliveryPolicy, WebhookSender
from nodeagent.report.worker import Worker
from tests.cluster import NODE
from tests.helpers import Daemon, run_cli, wait_for
from tests.servers import HEADER_SECRET, SECRET_TOKEN, HttpServer, Receiver, answer_with, silent_port


@pytest.fixture(autouse=True)
def no_machine_proxy(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def receiver():
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def test_json_messages_with_retries_and_nothing_secret_in_logs_or_status(cluster_with_pods, receiver, tmp_path):
    env = cluster_with_pods.env(WEBHOOK_URL=receiver.url(), WEBHOOK_HEADERS=f"Authorization: {HEADER_SECRET}; X-Team: spot")
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        receiver.fail_next(2)
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: len(receiver.bodies()) >= 2, 25), daemon.output()
        status_text = run_cli(["status"], env)
        status_json = run_cli(["status", "--json"], env)
    finally:
        assert daemon.stop() == 0
    assert receiver.statuses[:3] == [500, 500, 200]
    (path1, notice), (path2, finished) = receiver.bodies()[:2]
    assert path1 == path2 == f"/services/{SECRET_TOKEN}"
    assert notice["event"] == "notice" and finished["event"] == "finished"
    for body in (notice, finished):
        assert body["source"] == "nodeagent" and body["node"] == NODE and body["kind"] == "spot-itn"
        assert body["notice_id"].startswith("spot-itn-") and body["response"] == "drain"
        assert body["drill"] is False and body["dry_run"] is False
    assert notice["deadline_in_s"] > 0 and notice["action"] == "terminate"
    assert finished["evicted"] == 5 and finished["left"] == 0 and finished["failed"] == 0
    assert finished["phase"] == "done" and finished["drain_seconds"] >= 0
    assert finished["outcome"].startswith("drained: 5 evicted")
    headers = receiver.received[0].headers
    assert headers["Authorization"] == HEADER_SECRET and headers["X-Team"] == "spot"
    assert headers["Content-Type"] == "application/json"
    logs = daemon.output()
    assert daemon.find(r"webhook attempt 1 failed \(notice spot-itn-\S+\): HTTP 500 from <redacted>; retrying")
    assert daemon.find(r"webhook delivered \(notice spot-itn-\S+, attempt 3\)")
    assert daemon.find(r"webhook delivered \(finished spot-itn-\S+, attempt 1\)")
    for text in (logs, status_text.stdout + status_text.stderr, status_json.stdout + status_json.stderr):
        for secret in (SECRET_TOKEN, "T0SECRET", HEADER_SECRET, "hdr-5ecret", receiver.url()):
            assert secret not in text
    report = json.loads(status_json.stdout)
    assert report["config"]["WEBHOOK_URL"]["value"] == "<set, hidden>"
    assert report["config"]["WEBHOOK_HEADERS"]["value"] == "<set, hidden>"
    assert "WEBHOOK_URL=<set, hidden>" in status_text.stdout


def test_slack_format_from_the_daemon(cluster_with_pods, receiver):
    env = cluster_with_pods.env(WEBHOOK_URL=receiver.url("/hook"), WEBHOOK_FORMAT="slack")
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: len(receiver.bodies()) >= 2, 20), daemon.output()
    finally:
        assert daemon.stop() == 0
    (_, notice), (_, finished) = receiver.bodies()[:2]
    assert set(notice) == {"text"} and set(finished) == {"text"}
    assert notice["text"].startswith(f":warning: *Spot interruption notice* on `{NODE}`: terminate, deadline ")
    assert "response: drain" in notice["text"]
    assert finished["text"].startswith(f":white_check_mark: *Drained* on `{NODE}`: spot interruption notice spot-itn-")
    assert "5 evicted" in finished["text"]


def test_sighup_switches_the_webhook_and_keeps_the_metrics_counters(cluster_with_pods, tmp_path):
    first, second = Receiver().start(), Receiver().start()
    metrics = tmp_path / "nodeagent.prom"
    env = cluster_with_pods.env(METRICS_TEXTFILE=str(metrics))
    conf = cluster_with_pods.tmp / "etc" / "nodeagent.conf"
    conf.write_text(f"WEBHOOK_URL={first.url('/one')}\n")
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        cluster_with_pods.imds.set_rebalance()
        assert wait_for(lambda: len(first.bodies()) >= 2, 20), daemon.output()  # notice + finished
        conf.write_text(f"WEBHOOK_URL={first.url('/one')}\nLOG_LEVEL=debug\n")  # webhook unchanged: kept
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_line(r"config reloaded")
        assert len(daemon.find(r"^<6>webhook: json format")) == 1, "rebuilt without a change"
        conf.write_text(f"WEBHOOK_URL={second.url('/two')}\nWEBHOOK_FORMAT=slack\n")
        daemon.process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: len(daemon.find(r"config reloaded")) == 2, 10), daemon.output()
        assert daemon.find(r"^<6>webhook: slack format")
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: len(second.bodies()) >= 2, 25), daemon.output()
        assert wait_for(lambda: 'nodeagent_notices_total{kind="spot-itn"} 1' in metrics.read_text(), 10)
        text = metrics.read_text()
    finally:
        assert daemon.stop() == 0
        first.stop()
        second.stop()
    assert [path for path, _ in first.bodies()] == ["/one", "/one"], "the old URL got messages after the reload"
    assert [body["event"] for _, body in first.bodies()] == ["notice", "finished"]
    assert all(set(body) == {"text"} for _, body in second.bodies()), "the new format was not applied"
    assert "Spot interruption notice" in second.bodies()[0][1]["text"]
    assert 'nodeagent_notices_total{kind="rebalance"} 1' in text, "the reload reset the counters"
    assert second.url() not in daemon.output() and first.url() not in daemon.output()


def test_drill_messages_say_so(cluster_with_pods, receiver, tmp_path):
    template = tmp_path / "slack.tmpl"
    template.write_text('{"text": "${drill_prefix}${headline} ${node} ${evicted}", "channel": "#spot"}\n')
    env = cluster_with_pods.env(WEBHOOK_URL=receiver.url("/hook"), WEBHOOK_FORMAT="slack", WEBHOOK_TEMPLATE=str(template))
    result = run_cli(["drill", "--dry-run", "--in", "20s"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    bodies = [body for _, body in receiver.bodies()]
    assert bodies == [
        {"text": f"[drill] Spot interruption notice {NODE} 0", "channel": "#spot"},
        {"text": f"[drill] Drained {NODE} 5", "channel": "#spot"},
    ]
    assert "webhook delivered" in result.stdout


# ------------------------------------------------------------------ in-process, real sockets


def sender(url: str, policy: DeliveryPolicy = DeliveryPolicy(first_backoff_s=0.05), headers=None) -> WebhookSender:
    return WebhookSender(url, headers or {}, policy, Worker("test-webhook"))


def test_retries_stop_at_the_give_up_time_and_a_4xx_is_not_retried(receiver):
    receiver.fail_next(1000)
    result = sender(receiver.url()).send(b"{}", time.monotonic() + 1.0, "test")
    assert not result.delivered and result.attempts >= 3
    assert result.problem == "HTTP 500 from <redacted>"

    with HttpServer(answer_with(403)) as server:
        result = sender(f"{server.url}/x").send(b"{}", time.monotonic() + 5, "t")
        assert not result.delivered and result.attempts == 1 and "HTTP 403" in result.problem


def test_a_receiver_that_never_answers_times_out_and_is_retried():
    with silent_port() as port:
        policy = DeliveryPolicy(connect_timeout_s=0.5, read_timeout_s=0.3, first_backoff_s=0.05)
        url = f"http://127.0.0.1:{port}/services/{SECRET_TOKEN}"
        started = time.monotonic()
        result = sender(url, policy).send(b"{}", time.monotonic() + 1.5, "t")
        assert not result.delivered and result.attempts >= 2
        assert result.problem == "timed out (<redacted>)"
        assert time.monotonic() - started < 10  # bounded by the timeouts, not hung


def test_the_standard_proxy_variables_are_honoured(monkeypatch, receiver):
    # The receiver plays the proxy: a proxied plain-HTTP request carries the absolute URL.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = sender("http://webhook.example.invalid/services/abc").send(b'{"a": 1}', time.monotonic() + 5, "t")
    assert result.delivered
    assert receiver.received[-1].path == "http://webhook.example.invalid/services/abc"


def test_secrets_and_kubeconfig_from_systemd_credentials(cluster_with_pods, receiver, tmp_path):
    """LoadCredential=webhook-url:..., webhook-headers:..., kubeconfig:... in a unit drop-in: systemd
    puts owner-only copies in $CREDENTIALS_DIRECTORY and the agent picks them up by name, with
    nothing in the config (nor in user-data) and nothing of them in the logs or status."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, text in (("webhook-url", receiver.url() + "\n"),
                       ("webhook-headers", f"Authorization: {HEADER_SECRET}\n"),
                       ("kubeconfig", open(cluster_with_pods.kubeconfig).read())):
        (credentials / name).write_text(text)
        (credentials / name).chmod(0o400)
    env = cluster_with_pods.env()
    del env["NODEAGENT_KUBECONFIG"]  # left at its default: the credential takes its place
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: len(receiver.bodies()) >= 2, 25), daemon.output()
        status_text = run_cli(["status"], env)
    finally:
        assert daemon.stop() == 0
    assert receiver.received[0].headers["Authorization"] == HEADER_SECRET
    assert receiver.bodies()[1][1]["evicted"] == 5, "drained through the kubeconfig credential"
    assert "credential kubeconfig" in status_text.stdout and "credential webhook-url" in status_text.stdout
    for text in (daemon.output(), status_text.stdout + status_text.stderr):
        for leaked in (SECRET_TOKEN, HEADER_SECRET, receiver.url()):
            assert leaked not in text


def test_a_group_readable_secret_file_stops_the_agent_without_showing_it(cluster_with_pods, receiver, tmp_path):
    url_file = tmp_path / "webhook-url"
    url_file.write_text(receiver.url())
    url_file.chmod(0o640)
    env = cluster_with_pods.env(WEBHOOK_URL_FILE=str(url_file))
    daemon = Daemon(env).start()
    assert daemon.process.wait(timeout=20) == 78
    output = daemon.output()
    assert "config: WEBHOOK_URL_FILE:" in output and "0640" in output and "chmod 0600" in output
    assert SECRET_TOKEN not in output and receiver.url() not in output
    assert receiver.bodies() == []
