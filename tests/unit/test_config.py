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


# ---------------------------------------------------------------------- hostile config files


@pytest.mark.parametrize("separator", ["\x0c", "\x0b", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029", "\r"])
def test_only_newline_ends_a_line(separator):
    """The boot shell script reads the same file line by line on \\n: a line break Python alone
    sees must not smuggle in a second setting."""
    source = ConfigSource("/etc/nodeagent/conf.d/50.conf", f"WEBHOOK_FORMAT=json{separator}DRY_RUN=true\n")
    entries = config.parse_config_text(source)
    assert [(key, line) for key, _, line in entries] == [("WEBHOOK_FORMAT", 1)]
    with pytest.raises(ConfigError) as caught:
        load_settings([source], {})
    assert caught.value.key == "WEBHOOK_FORMAT"


def test_crlf_lines_still_work():
    source = ConfigSource("f", "DRY_RUN=true\r\nON_REBALANCE=drain\r\n")
    settings = load_settings([source], {})
    assert settings.dry_run and settings.on_rebalance == "drain"


@pytest.mark.parametrize("line", [
    "hooks.slack.com/services/T0/B0/SECRETPART",
    "WEBHOOK_URL: https://hooks.example/x?token=SECRETPART",
    "Authorization Bearer SECRETPART=",
    "SECRETPART_ghp_16C7e42F292c6912E7710c838347Ae178B4a=x",
    "AKIAIOSFODNN7SECRETPART=x",
])
def test_a_bad_line_is_never_quoted(line):
    source = ConfigSource("/etc/nodeagent/conf.d/50.conf", f"# comment\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings([source], {})
    message = str(caught.value)
    assert "/etc/nodeagent/conf.d/50.conf:2" in message and caught.value.key == "CONFIG_FILE"
    assert "SECRETPART" not in message and "token" not in message and "hooks" not in message, message


def _etc(tmp_path, text="DRY_RUN=true\n"):
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True)
    conf = etc / "conf.d" / "50-user-data.conf"
    conf.write_text(text)
    conf.chmod(0o644)
    return etc, conf


def test_trust_problem_rules():
    import os as _os

    from nodeagent.config.secret_files import secret_file_rules

    def st(uid, mode, gid=0):
        return _os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))

    as_root, as_user = config.config_file_rules(0), config.config_file_rules(1000)
    assert config.trust_problem(st(0, 0o100644), as_root) is None
    assert config.trust_problem(st(1000, 0o100644), as_user) is None  # the user running the command
    assert config.trust_problem(st(1000, 0o100644), as_root) == "owned by uid 1000, not root"
    assert config.trust_problem(st(0, 0o100666), as_root) == "writable by everyone"
    assert config.trust_problem(st(0, 0o100664, gid=27), as_root) == "writable by group 27"
    assert config.trust_problem(st(0, 0o040777), as_root) == "writable by everyone"
    # Secrets: owner-only, and the service user may own them too.
    secrets = secret_file_rules(0, 990)
    assert config.trust_problem(st(990, 0o100600), secrets) is None
    assert config.trust_problem(st(0, 0o100400), secrets) is None
    assert config.trust_problem(st(0, 0o100640), secrets) == "open to group or others (mode 0640)"
    assert config.trust_problem(st(0, 0o100604), secrets) == "open to group or others (mode 0604)"
    assert config.trust_problem(st(1000, 0o100600), secrets).startswith("owned by uid 1000, not root or")
    assert config.trust_problem(st(990, 0o100600), secret_file_rules(0, None)) is not None


@pytest.mark.parametrize("change, problem", [
    ("file-0666", "writable by everyone"),
    ("file-0664", "writable by group"),
    ("dir-0777", "writable by everyone"),
    ("file-owner", "owned by uid 65534, not root"),
])
def test_config_files_others_could_change_are_refused(tmp_path, change, problem):
    import os as _os

    etc, conf = _etc(tmp_path)
    if change == "file-0666":
        conf.chmod(0o666)
    elif change == "file-0664":
        conf.chmod(0o664)
    elif change == "dir-0777":
        (etc / "conf.d").chmod(0o777)
    elif _os.geteuid() == 0:
        _os.chown(conf, 65534, 65534)
    else:
        pytest.skip("chown to another user needs root")
    where = conf.parent if change.startswith("dir") else conf
    with pytest.raises(ConfigError) as caught:
        config.read_config_files(str(etc))
    what = "directory" if change.startswith("dir") else "file"
    assert f"refusing config {what} {where}: {problem}" in str(caught.value)
    result = run_cli(tmp_path, "run")  # the daemon refuses to start on it, exit 78
    assert result.returncode == 78 and "refusing config" in result.stderr, result
    assert "DRY_RUN" not in result.stderr


def test_a_root_owned_read_only_config_is_accepted(tmp_path):
    etc, conf = _etc(tmp_path)
    sources = config.read_config_files(str(etc))
    assert [s.origin for s in sources] == [str(conf)]


def _without_file_read_privileges():
    """As root, drop CAP_DAC_OVERRIDE/READ_SEARCH so a mode-000 directory is unreadable to us."""
    import os as _os
    import shutil

    if _os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv: cannot make a directory unreadable to ourselves")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("command", [["check-config"], ["status", "--json", "--no-probe"]])
def test_an_unreadable_conf_d_is_reported_not_skipped(tmp_path, command):
    """As a user who cannot read conf.d, check-config and status say which directory could not be
    read, and exit 78: the defaults are never shown as if the drop-ins did not exist."""
    etc, conf = _etc(tmp_path)
    (etc / "conf.d").chmod(0)
    try:
        env = daemon_env(tmp_path)
        result = subprocess.run(_without_file_read_privileges() + [sys.executable, "-m", "nodeagent", *command],
                                env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60)
    finally:
        (etc / "conf.d").chmod(0o755)
    assert result.returncode == 78, result
    assert f"cannot read directory {etc / 'conf.d'}: permission denied" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_settings_has_one_field_per_key():
    """Settings spells its fields out (so mypy checks their uses): the same names as the table,
    each typed as its key's parser returns for the default value."""
    import dataclasses

    fields = {f.name: f.type for f in dataclasses.fields(config.Settings) if f.name != "sources"}
    assert sorted(fields) == sorted(spec.field for spec in config.KEYS)
    for spec in config.KEYS:
        parsed = spec.parse(spec.default)
        name = "None" if parsed is None else type(parsed).__name__
        assert name in fields[spec.field], (spec.name, parsed, fields[spec.field])


def test_restart_only_changes_names_the_flagged_keys_that_differ():
    old = load_settings([], {})
    new = load_settings([], {}, {"API_QPS": "7", "DRY_RUN": "true", "STATE_DIR": "/srv/state"})
    assert config.restart_only_changes(old, new) == ["STATE_DIR", "API_QPS"]  # DRY_RUN applies at once
    assert config.restart_only_changes(old, old) == []


def test_describe_shows_an_empty_optional_duration_as_empty_not_none():
    """POLL_INTERVAL_ASG left empty parses to None (POLL_INTERVAL applies): check-config and status
    show it as empty, as it was configured."""
    rows = {key: (value, source) for key, value, source in config.describe(load_settings([], {}))}
    assert rows["POLL_INTERVAL_ASG"] == ("", "default")
    assert "None" not in {value for value, _ in rows.values()}
    set_rows = {key: value for key, value, _ in config.describe(load_settings([], {}, {"POLL_INTERVAL_ASG": "2s"}))}
    assert set_rows["POLL_INTERVAL_ASG"] == "2s"
