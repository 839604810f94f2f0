"""Config layering and validation: pure parsing, plus the real CLI's exit codes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from nodeagent import config
from nodeagent.config import ConfigError, ConfigSource, load_settings, parse_duration
from tests.helpers import REPO, daemon_env


def test_defaults_match_the_contract():
    settings = load_settings([], {})
    assert settings.imds_url == "http://169.254.169.254"
    assert settings.poll_interval == 1.0
    assert settings.imds_allow_v1 is False
    assert settings.kubeconfig == "/var/lib/kubelet/kubeconfig"
    assert settings.node_name == ""
    assert settings.state_dir == "/var/lib/nodeagent"
    assert settings.on_spot_interruption == "drain"
    assert settings.on_rebalance == "cordon"
    assert all(source == "default" for source in settings.sources.values())


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("2m", 120), ("1.5s", 1.5), ("500ms", 0.5), ("3", 3), ("1h", 3600)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "1.5", "-1s", "1d", "1 s s"])
def test_bad_durations(text):
    if text == "1.5":
        assert parse_duration(text) == 1.5
        return
    with pytest.raises(ValueError):
        parse_duration(text)


def test_layers_later_wins_and_sources_are_named():
    files = [ConfigSource("/etc/nodeagent/nodeagent.conf", "POLL_INTERVAL=2s\nON_REBALANCE=drain\n"),
             ConfigSource("/etc/nodeagent/conf.d/50-user-data.conf", "# comment\nexport ON_REBALANCE=ignore\r\n")]
    settings = load_settings(files, {"NODEAGENT_POLL_INTERVAL": "3s", "PATH": "/bin"}, {"DRY_RUN": "true"})
    assert settings.poll_interval == 3.0
    assert settings.sources["POLL_INTERVAL"] == "env NODEAGENT_POLL_INTERVAL"
    assert settings.on_rebalance == "ignore"
    assert settings.sources["ON_REBALANCE"] == "/etc/nodeagent/conf.d/50-user-data.conf:2"
    assert settings.dry_run is True and settings.sources["DRY_RUN"] == "flag"


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as caught:
        load_settings([ConfigSource("f", "POLL_INTERVALL=1s")], {})
    assert caught.value.key == "POLL_INTERVALL"
    assert "did you mean POLL_INTERVAL" in str(caught.value)


@pytest.mark.parametrize("key,value", [
    ("POLL_INTERVAL", "soon"), ("POLL_INTERVAL", "0s"), ("ON_REBALANCE", "explode"), ("IMDS_ALLOW_V1", "maybe"),
    ("IMDS_URL", "169.254.169.254"), ("SPOT_GATE", "both"), ("DRAIN_PARALLELISM", "0"), ("TAINT", "no-effect"),
    ("KUBECONFIG", "relative/path"), ("NODE_NAME", "Not_A_Node"),
])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError) as caught:
        load_settings([], {f"NODEAGENT_{key}": value})
    assert caught.value.key == key
    assert key in str(caught.value)


def test_every_key_rejects_a_bad_value_or_accepts_any_string():
    free_text = {"WEBHOOK_HEADERS", "LAST_TIER_PRIORITY_CLASSES", "NODE_NAME", "TAINT"}
    for spec in config.KEYS:
        if spec.name in free_text:
            continue
        with pytest.raises(ConfigError) as caught:
            load_settings([], {f"NODEAGENT_{spec.name}": "\x01bad value\x01"})
        assert caught.value.key == spec.name


def run_cli(tmp_path, *args, **keys):
    env = daemon_env(tmp_path, **keys)
    return subprocess.run([sys.executable, "-m", "nodeagent", *args], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("keys,named", [
    ({"POLL_INTERVALL": "1s"}, "POLL_INTERVALL"), ({"POLL_INTERVAL": "often"}, "POLL_INTERVAL"),
    ({"ON_SPOT_INTERRUPTION": "panic"}, "ON_SPOT_INTERRUPTION"),
])
def test_run_exits_78_naming_the_key(tmp_path, keys, named):
    result = run_cli(tmp_path, "run", **keys)
    assert result.returncode == 78, result
    assert named in result.stderr


def test_check_config_shows_sources(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "nodeagent.conf").write_text("ON_REBALANCE=drain\n")
    (etc / "conf.d").mkdir()
    (etc / "conf.d" / "50-user-data.conf").write_text("DRY_RUN=true\r\nWEBHOOK_URL=https://hooks.example/T0/SECRET\r\n")
    result = run_cli(tmp_path, "check-config", POLL_INTERVAL="2s")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert "(default)" in lines["IMDS_URL"]
    assert "nodeagent.conf:1" in lines["ON_REBALANCE"] and "drain" in lines["ON_REBALANCE"]
    assert "50-user-data.conf:1" in lines["DRY_RUN"]
    assert "env NODEAGENT_POLL_INTERVAL" in lines["POLL_INTERVAL"]
    assert "SECRET" not in result.stdout and "<set, hidden>" in lines["WEBHOOK_URL"]


@pytest.mark.parametrize("kind", ["directory", "not-utf8"])
def test_bad_config_files_exit_78(tmp_path, kind):
    etc = tmp_path / "etc"
    etc.mkdir()
    if kind == "directory":
        (etc / "nodeagent.conf").mkdir()
    else:
        (etc / "nodeagent.conf").write_bytes(b"ON_REBALANCE=\xff\xfe\n")
    result = run_cli(tmp_path, "check-config")
    assert result.returncode == 78
    assert "nodeagent.conf" in result.stderr


# The config reference (docs/configuration.md) is generated from KEYS: tests/unit/test_reference.py.
