"""The watcher as a real process against the real IMDS simulator on loopback."""
from __future__ import annotations

import json
import signal
import time

import pytest

from nodeagent_sim.imds import ImdsSim
from tests.cluster import wait_polls
from tests.helpers import Daemon, NotifySocket, daemon_env, wait_for

POLL = 0.5


@pytest.fixture
def imds():
    sim = ImdsSim().start()
    yield sim
    sim.stop()


def start_daemon(tmp_path, imds, **keys) -> Daemon:
    env = daemon_env(tmp_path, IMDS_URL=imds.url, POLL_INTERVAL=f"{POLL}s", **keys)
    daemon = Daemon(env, args=("run", "--log-only")).start()
    daemon.wait_line(r"ready: watching IMDS")
    return daemon


def spot_notice_lines(daemon: Daemon):
    return daemon.find(r"notice spot-itn-\S+ \(spot-itn: terminate\)")


def test_spot_notice_detected_within_a_poll_and_handled_once(tmp_path, imds):
    daemon = start_daemon(tmp_path, imds)
    try:
        wait_polls(imds, 4)  # polling at its steady pace
        appeared = time.monotonic()
        imds.schedule_spot(120, "terminate")
        line = daemon.wait_line(r"notice spot-itn-\S+ \(spot-itn: terminate\)", timeout_s=5)
        assert line.t - appeared <= POLL + 0.5, f"seen {line.t - appeared:.2f}s after it appeared"
        wait_polls(imds, 20)
        assert len(spot_notice_lines(daemon)) == 1, daemon.output()
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0


def test_same_notice_is_not_handled_again_after_restart(tmp_path, imds):
    imds.schedule_spot(120, "terminate")
    first = start_daemon(tmp_path, imds)
    first.wait_line(r"notice spot-itn")
    assert first.stop() == 0
    second = start_daemon(tmp_path, imds)
    try:
        wait_polls(imds, 6)
        assert not spot_notice_lines(second), second.output()
    finally:
        second.stop()
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    assert len([k for k in state["notices"] if k.startswith("spot-itn-")]) == 1


def test_sd_notify_sequence(tmp_path, imds):
    notify = NotifySocket(tmp_path)
    env = daemon_env(tmp_path, IMDS_URL=imds.url, POLL_INTERVAL=f"{POLL}s")
    env["NOTIFY_SOCKET"] = notify.path
    daemon = Daemon(env, args=("run", "--log-only")).start()
    try:
        wait_for(lambda: notify.texts().count("WATCHDOG=1") >= 3, 15, message=lambda: notify.texts())
        imds.schedule_spot(120)
        daemon.wait_line("notice spot-itn")
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(timeout=10) == 0
        wait_for(lambda: "STOPPING=1" in notify.texts(), 2)
    finally:
        daemon.kill()
        notify.close()
    texts = notify.texts()
    ready = texts.index("READY=1")
    statuses = [i for i, t in enumerate(texts) if t.startswith("STATUS=watching IMDS")]
    watchdogs = [i for i, t in enumerate(texts) if t == "WATCHDOG=1"]
    assert statuses and statuses[0] > ready
    assert len(watchdogs) >= 3 and watchdogs[0] > ready
    assert texts.index("STOPPING=1") > watchdogs[-1]
    assert any("last poll" in t for t in texts)


def test_token_expiry_gives_one_401_and_no_missed_notice(tmp_path, imds):
    daemon = start_daemon(tmp_path, imds)
    try:
        imds.expire_tokens()
        imds.schedule_spot(120)
        daemon.wait_line("notice spot-itn", timeout_s=5)
        unauthorized = [e for e in imds.request_log if e[3] == 401]
        assert len(unauthorized) == 1, unauthorized
        assert imds.counters()["tokens_issued"] >= 2
    finally:
        daemon.stop()


def test_v1_only_endpoint_with_v1_off_is_reported_plainly(tmp_path, imds):
    imds.set_v1_only(True)
    notify = NotifySocket(tmp_path)
    env = daemon_env(tmp_path, IMDS_URL=imds.url, POLL_INTERVAL=f"{POLL}s")
    env["NOTIFY_SOCKET"] = notify.path
    daemon = Daemon(env, args=("run", "--log-only")).start()
    try:
        daemon.wait_line(r"IMDSv1 fallback is disabled", timeout_s=10)
        wait_for(lambda: any("IMDS_ALLOW_V1" in t for t in notify.texts() if t.startswith("STATUS=")), 5)
        assert daemon.alive()
        assert "Traceback" not in daemon.output()
    finally:
        assert daemon.stop() == 0
        notify.close()


@pytest.mark.parametrize("fault", ["five-500s", "delay-3s", "malformed"])
def test_daemon_survives_faults_and_acts_on_next_good_response(tmp_path, imds, fault):
    daemon = start_daemon(tmp_path, imds)
    try:
        if fault == "five-500s":
            imds.inject(5, status=500)
        elif fault == "delay-3s":
            imds.inject(1, delay_s=3.0, path_prefix="/latest/meta-data/spot")
        else:
            imds.inject(3, body=b'{"action": "terminate", "time": ', path_prefix="/latest/meta-data/spot")
            imds.schedule_spot(120)
        wait_for(lambda: imds.counters()["faults_pending"] == 0, 15)  # every fault was served
        wait_polls(imds, 1)
        imds.schedule_spot(120)
        daemon.wait_line("notice spot-itn", timeout_s=10)
        assert daemon.alive()
        if fault == "malformed":
            assert daemon.find(r"malformed IMDS body"), daemon.output()
        assert "Traceback" not in daemon.output()
    finally:
        assert daemon.stop() == 0


def test_disappearing_rebalance_is_reported_cancelled(tmp_path, imds):
    daemon = start_daemon(tmp_path, imds)
    try:
        imds.set_rebalance()
        daemon.wait_line(r"notice rebalance-")
        imds.set_rebalance(None)
        daemon.wait_line(r"notice rebalance-\S+ cancelled: notice withdrawn")
    finally:
        daemon.stop()


def test_disabled_by_config_exits_zero(tmp_path, imds):
    env = daemon_env(tmp_path, IMDS_URL=imds.url, ENABLED="false")
    daemon = Daemon(env, args=("run",)).start()
    assert daemon.process.wait(timeout=20) == 0
    assert daemon.find("disabled by config")


def test_sighup_reloads_config_and_a_bad_reload_keeps_the_running_one(tmp_path, imds):
    daemon = start_daemon(tmp_path, imds)
    conf = tmp_path / "etc" / "nodeagent.conf"
    try:
        conf.write_text("ON_REBALANCE=drain\nEXEC_PLUGIN_TIMEOUT=30s\n")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_line(r"config reloaded")
        assert daemon.find(r"reload: EXEC_PLUGIN_TIMEOUT changed; that takes effect on the next restart")
        imds.set_rebalance()
        daemon.wait_line(r"notice rebalance-\S+ .*response: drain")
        conf.write_text("ON_REBALANCE=sometimes\n")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_line(r"reload failed, keeping the running config: config: ON_REBALANCE")
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0


def test_a_burst_of_signals_never_wedges_the_loop(tmp_path, imds):
    """Signal handlers take no locks: a storm of SIGHUPs, then SIGTERM, still stops at once."""
    daemon = start_daemon(tmp_path, imds)
    for _ in range(300):
        daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_line(r"config reloaded")
    assert daemon.alive()
    assert daemon.stop(signal.SIGTERM, timeout_s=15) == 0
