"""systemd/nodeagent.service: the systemd contract, checked with systemd's own tools."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.packaging_helpers import REPO, UNIT_FILE, parse_unit, require_tool, run, words

# `systemd-analyze security` ceilings: the figures docs/security.md gives; never to rise.
EXPOSURE_LIMIT = {"agent": 1.2, "oneshot": 1.7}
REAL_EXEC_START = "/usr/bin/nodeagent run"
ONESHOT_FILE = REPO / "systemd" / "nodeagent-spot-label.service"
SYSUSERS_FILE = REPO / "packaging" / "nodeagent.sysusers"
# The way out of a sandbox for a process that can talk to PID 1 (systemd-run, systemctl), and the
# container runtimes (root on the node). A missing path must not fail the unit: "-" prefix.
ESCAPE_SOCKETS = ("/run/systemd/private", "/run/dbus/system_bus_socket", "/var/run/dbus",
                  "/run/containerd", "/var/run/docker.sock")


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


def oneshot_copy(directory: Path) -> Path:
    """The boot oneshot with ExecStart= pointing at /bin/true; everything else as shipped."""
    text = ONESHOT_FILE.read_text()
    assert text.count("ExecStart=/usr/lib/nodeagent/spot-label\n") == 1
    copy = directory / ONESHOT_FILE.name
    copy.write_text(text.replace("ExecStart=/usr/lib/nodeagent/spot-label\n", "ExecStart=/bin/true\n"))
    return copy


@pytest.mark.parametrize("which", ["agent", "oneshot"])
def test_security_exposure_within_its_ceiling(tmp_path, which):
    """Both units, offline; tests/systemd checks the same ceilings under the real systemd 252."""
    require_tool("systemd-analyze")
    copy = runnable_copy(tmp_path) if which == "agent" else oneshot_copy(tmp_path)
    result = run(["systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager",
                  copy], check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= EXPOSURE_LIMIT[which], result.stdout
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
    """`aws eks get-token` needs a writable HOME under ProtectHome/ProtectSystem=strict: the
    service user's home, its state directory (which systemd makes and chowns to it)."""
    environment = words(unit["Service"]["Environment"])
    assert "HOME=/var/lib/nodeagent" in environment
    assert "XDG_CACHE_HOME=/var/cache/nodeagent" in environment
    assert one(unit, "Service", "StateDirectory") == "nodeagent"
    assert one(unit, "Service", "CacheDirectory") == "nodeagent"


def test_runs_as_its_own_user(unit):
    """uid 0 without capabilities is no boundary (PID 1 trusts uid 0, so
    `systemd-run` from inside the sandbox runs anything outside it). The agent has its own user,
    the one the package's sysusers.d file creates, and never gains privileges."""
    assert one(unit, "Service", "User") == "nodeagent"
    assert one(unit, "Service", "Group") == "nodeagent"
    assert "DynamicUser" not in unit["Service"], "a dynamic uid cannot keep the state across upgrades"
    sysusers = [line.split() for line in SYSUSERS_FILE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert [(fields[0], fields[1]) for fields in sysusers] == [("u", "nodeagent")]
    assert sysusers[0][-1] == "/var/lib/nodeagent"  # home: the state directory
    assert one(unit, "Service", "NoNewPrivileges") == "yes"


def test_sysusers_file_creates_the_user(tmp_path):
    """The file we ship, run through systemd-sysusers as the package scripts do (into a scratch
    root): a system user and group, home /var/lib/nodeagent, no login shell."""
    require_tool("systemd-sysusers")
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/sysusers.d").mkdir(parents=True)
    (tmp_path / "usr/lib/sysusers.d/nodeagent.conf").write_text(SYSUSERS_FILE.read_text())
    run(["systemd-sysusers", f"--root={tmp_path}", "nodeagent.conf"])
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/group").read_text().splitlines()}
    entry = passwd["nodeagent"]
    assert 0 < int(entry[2]) < 1000, entry  # a system uid, never root
    assert entry[3] == groups["nodeagent"][2]
    assert entry[5] == "/var/lib/nodeagent"
    assert entry[6].endswith("nologin"), entry


@pytest.mark.parametrize("which", ["agent", "oneshot"])
def test_no_way_to_ask_systemd_or_the_runtime(which):
    """Hidden from both units: PID 1's private socket, the system bus, the container runtimes."""
    text = UNIT_FILE.read_text() if which == "agent" else ONESHOT_FILE.read_text()
    service = parse_unit(text)["Service"]
    hidden = words(service["InaccessiblePaths"])
    for path in ESCAPE_SOCKETS:
        assert "-" + path in hidden, path
    # sd_notify and the journal must stay reachable.
    assert not [p for p in hidden if p.lstrip("-").startswith(("/run/systemd/notify", "/run/systemd/journal"))]
    for key in ("PrivateMounts", "PrivateIPC", "NoNewPrivileges", "RestrictSUIDSGID", "PrivateTmp",
                "PrivateDevices", "ProtectKernelTunables", "RestrictNamespaces", "LockPersonality"):
        assert service[key][-1] == "yes", (which, key)
    assert service["CapabilityBoundingSet"][-1] == "", which
    assert service["ProtectSystem"][-1] == "strict", which
    assert any(f.startswith("~") and "@privileged" in f for f in service["SystemCallFilter"]), which
