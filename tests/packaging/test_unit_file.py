"""systemd/nodeagent.service: the systemd contract, checked with systemd's own tools."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.packaging_helpers import UNIT_FILE, parse_unit, require_tool, run, words

EXPOSURE_LIMIT = 2.0
REAL_EXEC_START = "/usr/bin/nodeagent run"


@pytest.fixture(scope="module")
def unit():
    return parse_unit(UNIT_FILE.read_text())


def one(unit, section: str, key: str) -> str:
    values = unit[section].get(key)
    assert values, f"[{section}] {key}= is missing"
    return values[-1]


def runnable_copy(directory: Path) -> Path:
    """The unit with ExecStart= pointing at an executable that exists here (verify refuses a
    missing one); every other line is the shipped unit, byte for byte."""
    fake = directory / "usr-bin-nodeagent"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT_FILE.read_text()
    assert text.count(f"ExecStart={REAL_EXEC_START}\n") == 1
    copy = directory / "nodeagent.service"
    copy.write_text(text.replace(f"ExecStart={REAL_EXEC_START}\n", f"ExecStart={fake} run\n"))
    return copy


def test_verify_prints_nothing(tmp_path):
    require_tool("systemd-analyze")
    result = run(["systemd-analyze", "verify", "--man=no", runnable_copy(tmp_path)], check=False)
    # verify only fails (exit 1) for a missing executable; unknown keys and bad values are
    # reported on stderr with exit 0, so any output at all is a failure.
    assert result.returncode == 0 and result.stderr == "" and result.stdout == "", result.stderr


def test_verify_rejects_a_broken_unit(tmp_path):
    """The check above can fail: a typo'd directive is reported."""
    require_tool("systemd-analyze")
    copy = runnable_copy(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHomme=yes"))
    result = run(["systemd-analyze", "verify", "--man=no", copy], check=False)
    assert "ProtectHomme" in result.stderr


def test_security_exposure_at_most_2(tmp_path):
    require_tool("systemd-analyze")
    result = run(["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager",
                  runnable_copy(tmp_path)], check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= EXPOSURE_LIMIT, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def fake_boot_units(directory: Path) -> None:
    """The EKS units we order against, as they are shipped: cloud-init's cloud-final is itself
    After=multi-user.target (cloud-init >= 23; Ubuntu/Debian variants before that)."""
    (directory / "cloud-final.service").write_text(
        "[Unit]\nAfter=network-online.target multi-user.target\nWants=network-online.target\n"
        "[Service]\nType=oneshot\nExecStart=/bin/true\n[Install]\nWantedBy=cloud-init.target\n")
    (directory / "kubelet.service").write_text(
        "[Unit]\nAfter=network-online.target\n[Service]\nExecStart=/bin/true\n"
        "[Install]\nWantedBy=multi-user.target\n")
    wants = directory / "multi-user.target.wants"
    wants.mkdir()
    for name in ("nodeagent.service", "cloud-final.service", "kubelet.service"):
        (wants / name).symlink_to(directory / name)


@pytest.mark.parametrize("drop_multi_user_ordering", [False, True], ids=["shipped", "without-After=multi-user"])
def test_no_ordering_cycle_at_boot(tmp_path, drop_multi_user_ordering):
    """WantedBy=multi-user.target + After=cloud-final.service (itself After=multi-user.target)
    is a cycle unless the unit is explicitly After=multi-user.target; systemd would break it by
    deleting a start job, maybe ours. The second case shows that the check can fail."""
    require_tool("systemd-analyze")
    units = tmp_path / "units"
    units.mkdir()
    copy = runnable_copy(units)
    if drop_multi_user_ordering:
        copy.write_text(copy.read_text().replace("\nAfter=multi-user.target\n", "\n"))
    fake_boot_units(units)
    env = {"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin"}
    result = run(["systemd-analyze", "verify", "--man=no", "multi-user.target"], check=False, env=env)
    if drop_multi_user_ordering:
        assert "ordering cycle" in result.stderr
    else:
        assert "cycle" not in result.stderr, result.stderr


def test_notify_contract(unit):
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == REAL_EXEC_START
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert "78" in words(service["RestartPreventExitStatus"])
    assert one(unit, "Service", "RestartSec")
    assert one(unit, "Service", "StateDirectory") == "nodeagent"


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_watchdog_fits_a_one_second_poll(unit):
    """Pinged every 1 s poll: tolerant of slow IMDS/API calls, yet a wedged loop is caught well
    inside a 2-minute spot warning."""
    assert 10 <= seconds(one(unit, "Service", "WatchdogSec")) <= 60


def test_ordering(unit):
    after = words(unit["Unit"]["After"])
    for name in ("network-online.target", "cloud-final.service", "multi-user.target", "kubelet.service"):
        assert name in after, name
    assert "network-online.target" in words(unit["Unit"]["Wants"])
    # Never bound to the kubelet: the agent waits for the kubeconfig itself.
    for key in ("Requires", "BindsTo", "Requisite", "PartOf"):
        assert not any("kubelet" in w for w in words(unit["Unit"].get(key, []))), key
    assert "kubelet.service" not in words(unit["Unit"].get("Before", []))
    assert words(unit["Install"]["WantedBy"]) == ["multi-user.target"]


def test_hardening(unit):
    expected = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes", "ProtectClock": "yes",
        "ProtectHostname": "yes", "ProtectControlGroups": "yes", "ProtectProc": "invisible",
        "ProcSubset": "pid", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
        "AmbientCapabilities": "", "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert one(unit, "Service", key) == value, key
    assert sorted(words(unit["Service"]["RestrictAddressFamilies"])) == ["AF_INET", "AF_INET6", "AF_UNIX"]
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert any(f.startswith("~") and "@privileged" in f for f in filters)
    assert re.fullmatch(r"\d+M", one(unit, "Service", "MemoryMax"))
    assert one(unit, "Service", "UMask") == "0077"


def test_network_is_not_address_restricted(unit):
    """IMDS (link-local), the API server and the webhook can be anywhere: no allow list."""
    assert "IPAddressDeny" not in unit["Service"]
    assert "PrivateNetwork" not in unit["Service"]


def test_writable_home_for_the_exec_plugin(unit):
    """`aws eks get-token` needs a writable HOME under ProtectHome/ProtectSystem=strict."""
    environment = words(unit["Service"]["Environment"])
    assert "HOME=/var/cache/nodeagent" in environment
    assert one(unit, "Service", "CacheDirectory") == "nodeagent"
    assert "User" not in unit["Service"] and "DynamicUser" not in unit["Service"]
