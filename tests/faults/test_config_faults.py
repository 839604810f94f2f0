"""Fault matrix, configuration: every key fed a bad value, config files that are directories, not
UTF-8 or CRLF, and a bad value on reload.

A bad config stops the daemon on purpose: exit 78 (EX_CONFIG), which the unit's
RestartPreventExitStatus=78 keeps systemd from restarting; nothing is contacted or done, and the
message names the key. Cases that run (CRLF, bad reload) get the five checks of
tests.cluster.Cluster.check.
"""
from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from nodeagent import config
from nodeagent_sim.imds import ImdsSim
from tests.helpers import daemon_env, run_cli

EX_CONFIG = 78

BAD_VALUES = {
    "ENABLED": "maybe",
    "IMDS_URL": "169.254.169.254",
    "POLL_INTERVAL": "0s",
    "POLL_INTERVAL_ASG": "2m",
    "POLL_INTERVAL_REBALANCE": "0.05s",
    "POLL_INTERVAL_SCHEDULED": "11m",
    "IMDS_ALLOW_V1": "perhaps",
    "KUBECONFIG": "var/lib/kubelet/kubeconfig",
    "NODE_NAME": "Not_A_Node",
    "STATE_DIR": "var/lib/nodeagent",
    "DRY_RUN": "2",
    "LOG_LEVEL": "verbose",
    "ON_SPOT_INTERRUPTION": "panic",
    "ON_REBALANCE": "evict",
    "ON_SCHEDULED_EVENT": "reboot",
    "ON_ASG_TERMINATION": "terminate",
    "SPOT_GATE": "label-xor-imds",
    "DRAIN_MARGIN": "11m",
    "DRAIN_WINDOW": "0s",
    "FORCE_AT_DEADLINE": "always",
    "EXCLUDE_FROM_LB": "sometimes",
    "TAINT": "nodeagent.io/x:NoWhere",
    "EVICT_LOCAL_STORAGE": "on-demand",
    "EVICT_UNMANAGED": "-1",
    "LAST_TIER_PRIORITY_CLASSES": "system-cluster-critical;system-node-critical",
    "DRAIN_PARALLELISM": "0",
    "API_QPS": "0",
    "API_BURST": "fast",
    "SPOT_LABEL": "Ec2Spot",
    "SPOT_LABEL_AT_BOOT": "later",
    "UNCORDON_AFTER_REBOOT": "x",
    "EXEC_PLUGIN_TIMEOUT": "0.5s",
    "EVENTS": "all",
    "WEBHOOK_URL": "hooks.slack.com/services/T000/B000/SECRETTOKEN",
    "WEBHOOK_FORMAT": "xml",
    "WEBHOOK_TEMPLATE": "template.json",
    "WEBHOOK_HEADERS": "Authorization Bearer SECRETTOKEN",
    "WEBHOOK_URL_FILE": "secrets/webhook-url",
    "WEBHOOK_HEADERS_FILE": "webhook-headers",
    "METRICS_TEXTFILE": "nodeagent.prom",
    "WITHDRAWN_AFTER_POLLS": "0",
    "WITHDRAWN_AFTER": "2h",
    "ASG_LIFECYCLE_HOOK": " bad\tname",
    "ASG_NAME": "x" * 256,
    "ASG_HEARTBEAT_TIMEOUT": "10s",
    "ASG_HEARTBEAT_SHARE": "1.5",
    "ASG_HEARTBEAT_MAX": "3d",
    "ASG_FIPS": "sometimes",
    "ASG_ENDPOINT_URL": "http://autoscaling.us-east-1.amazonaws.com",
    "ASG_CA_BUNDLE": "ca.pem",
}


def run_daemon(tmp_path: Path, imds: ImdsSim, **keys: str) -> subprocess.CompletedProcess:
    settings = dict(IMDS_URL=imds.url, KUBECONFIG=str(tmp_path / "kubeconfig"))
    settings.update(keys)
    env = daemon_env(tmp_path, **settings)
    return run_cli(["run"], env, timeout_s=60)


@pytest.fixture(scope="module")
def imds():
    sim = ImdsSim().start()
    yield sim
    sim.stop()


def test_every_key_has_a_bad_value():
    assert sorted(BAD_VALUES) == sorted(spec.name for spec in config.KEYS)


@pytest.mark.parametrize("key", sorted(BAD_VALUES))
def test_every_key_fed_a_bad_value(tmp_path, imds, key):
    """Case: each config key in turn (all of config.KEYS) is given a bad value through NODEAGENT_<KEY>
    Outcome: `nodeagent run` exits 78 at once with "config: <KEY>: <what is wrong> (from env NODEAGENT_<KEY>)"; IMDS is never contacted, nothing is done; secret keys (WEBHOOK_URL, WEBHOOK_HEADERS) are named but their values never printed
    """
    before = len(imds.request_log)
    result = run_daemon(tmp_path, imds, **{key: BAD_VALUES[key]})
    assert result.returncode == EX_CONFIG, result
    assert f"config: {key}: " in result.stderr and f"(from env NODEAGENT_{key})" in result.stderr, result.stderr
    assert len(imds.request_log) == before, "contacted IMDS with a bad config"
    assert not (tmp_path / "state").exists(), "wrote state with a bad config"
    if key in ("WEBHOOK_URL", "WEBHOOK_HEADERS"):
        assert "SECRETTOKEN" not in result.stderr + result.stdout, "a secret value was printed"


def test_bad_value_in_a_file_names_file_and_line(tmp_path, imds):
    """Case: a bad value in /etc/nodeagent/conf.d/50-x.conf (line 3)
    Outcome: exit 78, "config: DRAIN_MARGIN: ... (from <file>:3)"
    """
    drop_ins = tmp_path / "etc" / "conf.d"
    drop_ins.mkdir(parents=True)
    (drop_ins / "50-x.conf").write_text("# spot pool\nENABLED=true\nDRAIN_MARGIN=forever\n")
    result = run_daemon(tmp_path, imds)
    assert result.returncode == EX_CONFIG
    assert "config: DRAIN_MARGIN: " in result.stderr and f"{drop_ins / '50-x.conf'}:3" in result.stderr


@pytest.mark.parametrize("fault", ["directory", "drop-in-directory", "not-utf8"])
def test_config_file_that_is_a_directory_or_not_utf8(tmp_path, imds, fault):
    """Case: /etc/nodeagent/nodeagent.conf is a directory, or a conf.d/*.conf entry is a directory
    Outcome: exit 78, "config: CONFIG_FILE: <path> is a directory, expected a KEY=value file"; nothing contacted
    Case: nodeagent.conf is not UTF-8 (Latin-1 bytes)
    Outcome: exit 78, "config: CONFIG_FILE: <path> is not UTF-8 (byte N)"
    """
    etc = tmp_path / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    if fault == "directory":
        (etc / "nodeagent.conf").mkdir()
        expected = f"config: CONFIG_FILE: {etc / 'nodeagent.conf'} is a directory"
    elif fault == "drop-in-directory":
        (etc / "conf.d" / "10-spot.conf").mkdir(parents=True)
        expected = f"config: CONFIG_FILE: {etc / 'conf.d' / '10-spot.conf'} is a directory"
    else:
        (etc / "nodeagent.conf").write_bytes("# réglages\nDRY_RUN=true\n".encode("latin-1"))
        expected = f"config: CONFIG_FILE: {etc / 'nodeagent.conf'} is not UTF-8 (byte 3)"
    before = len(imds.request_log)
    result = run_daemon(tmp_path, imds)
    assert result.returncode == EX_CONFIG, result
    assert expected in result.stderr, result.stderr
    assert len(imds.request_log) == before


def test_crlf_config_file(make_cluster, tmp_path):
    """Case: nodeagent.conf and a drop-in written on Windows: CRLF line endings, a UTF-8 BOM, quoted values
    Outcome: read as intended (no stray \\r in any value: `check-config` shows them clean); the daemon runs with them and drains on a notice
    """
    cluster = make_cluster()
    cluster.add_workload()
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "nodeagent.conf").write_bytes(
        b"\xef\xbb\xbf# written by a Windows editor\r\nPOLL_INTERVAL=0.5s\r\nDRAIN_MARGIN=\"3s\"\r\n"
        b"ON_SPOT_INTERRUPTION=drain\r\n")
    (etc / "conf.d" / "20-log.conf").write_bytes(b"LOG_LEVEL=debug\r\nEVICT_UNMANAGED=true\r\n\r\n")
    env = daemon_env(tmp_path, IMDS_URL=cluster.imds.url, KUBECONFIG=cluster.kubeconfig, STATE_DIR=str(cluster.state_dir))
    for key in ("POLL_INTERVAL", "DRAIN_MARGIN", "LOG_LEVEL"):
        env.pop(f"NODEAGENT_{key}", None)  # from the files, not the environment
    shown = run_cli(["check-config"], env, timeout_s=60)
    assert shown.returncode == 0, shown
    assert "\r" not in shown.stdout
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.strip()}
    assert " 3s " in lines["DRAIN_MARGIN"] and "nodeagent.conf:3" in lines["DRAIN_MARGIN"]
    assert " debug " in lines["LOG_LEVEL"] and "20-log.conf:1" in lines["LOG_LEVEL"]
    daemon = cluster.start_agent(env=env)
    notice = cluster.spot(30)
    daemon.wait_line(r"drained: ", timeout_s=30)
    cluster.finish().check(notice, fault_log=r"ready: watching IMDS at \S+ \(spot-itn every 0\.5s")


def test_bad_value_on_reload(make_cluster, tmp_path):
    """Case: SIGHUP after a bad value was written into nodeagent.conf
    Outcome: "reload failed, keeping the running config: config: ON_REBALANCE: ..."; the daemon keeps running with the old config (no exit 78 mid-flight) and drains on the next notice
    """
    cluster = make_cluster()
    cluster.add_workload()
    daemon = cluster.start_agent()
    (tmp_path / "etc" / "nodeagent.conf").write_text("ON_REBALANCE=explode\n")
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_line(r"reload failed, keeping the running config: config: ON_REBALANCE: ", timeout_s=10)
    cluster.wait_polls(2)  # still polling, with the running config
    notice = cluster.spot(30)
    daemon.wait_line(r"drained: ", timeout_s=30)
    cluster.finish().check(notice, fault_log=r"reload failed, keeping the running config: config: ON_REBALANCE")
