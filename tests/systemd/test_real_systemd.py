"""The built .deb under a real systemd (PID 1 in a Debian container): every promise of
systemd/nodeagent.service, checked through systemctl and journalctl only.

One container is booted for the module (tests.systemd.container); the IMDS and Kubernetes API
simulators run inside it as units, next to a stand-in kubelet.service, and a conf.d drop-in points
the agent at them. The kubeconfig authenticates with an exec credential plugin, as on EKS. The
tests run in file order and share the container; each one sets up the pods and notices it needs
(`reset`). docs/testing.md says how to run this tier alone.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.helpers import wait_for
from tests.packaging_helpers import INSTANCE_ID, NODE, REPO, ZONE, build_packages, repo_version, run
from tests.systemd.container import Container, check_host, rootfs

UNIT = "nodeagent.service"
SIMS = "/opt/test/sims"
DEBS = "/opt/test/debs"
TEST_CONF = "/etc/nodeagent/conf.d/50-test.conf"
DROP_IN_DIR = "/etc/systemd/system/nodeagent.service.d"
DRAIN_MARGIN_S = 5

AGENT_CONF = f"""\
IMDS_URL=http://127.0.0.1:1338
POLL_INTERVAL=0.5s
DRAIN_MARGIN={DRAIN_MARGIN_S}s
"""

SIM_UNITS = {
    "imds-sim.service": f"""\
[Unit]
Description=IMDS simulator (test)
[Service]
ExecStart=/usr/bin/python3 -I {SIMS}/imds_sim.py /etc/sim-scenario.json
""",
    "kube-api-sim.service": f"""\
[Unit]
Description=Kubernetes API simulator (test)
[Service]
Type=notify
ExecStart=/usr/bin/python3 -I {SIMS}/kube_api_sim.py /etc/sim-scenario.json
""",
    # The agent orders itself After=kubelet.service; a stand-in makes that ordering real.
    "kubelet.service": """\
[Unit]
Description=kubelet (test stand-in)
After=kube-api-sim.service
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
""",
}

DAEMONSET_POD = {"name": "node-exporter-x1", "namespace": "kube-system", "owner_kind": "DaemonSet",
                 "owner_name": "node-exporter"}
# Six ReplicaSet pods that each take 3 s to exit: a drain of a few seconds.
FAST = [{"name": f"web-{i}", "owner_kind": "ReplicaSet", "owner_name": "web", "labels": {"app": "web"},
         "shutdown_s": 3} for i in range(6)] + [DAEMONSET_POD]
# Four StatefulSet pods behind a maxUnavailable=1 budget: evicted one at a time, ~3.5 s each, so
# a drain lasts ~15 s and can be interrupted with pods not yet evicted.
SLOW = [{"name": f"db-{i}", "owner_kind": "StatefulSet", "owner_name": "db", "labels": {"app": "db"},
         "grace_s": 10, "shutdown_s": 3} for i in range(4)] + [DAEMONSET_POD]
SLOW_PDBS = [{"name": "db", "selector": {"app": "db"}, "max_unavailable": 1}]


def evictable(pods: List[dict]) -> List[str]:
    return sorted(f"{p.get('namespace', 'default')}/{p['name']}" for p in pods if p.get("owner_kind") != "DaemonSet")


@dataclass
class Node:
    """The booted container with the package installed, and what the tests do to it."""
    box: Container

    # -- systemd --------------------------------------------------------------------------------
    def show(self, *props: str, unit: str = UNIT) -> Dict[str, str]:
        out = self.box.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def status_text(self) -> str:
        return self.show("StatusText")["StatusText"]

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.box.run(["systemctl", *args], check=check, timeout=timeout)

    def mark(self) -> str:
        """A point in time for journal(). (Not a journal cursor: systemd 252's journalctl
        --after-cursor together with --priority skips entries.)"""
        return f"@{time.time():.6f}"

    def journal(self, since: str, *, unit: str = UNIT, priority: Optional[str] = None) -> str:
        cmd = ["journalctl", f"--unit={unit}", f"--since={since}", "--output=cat", "--no-pager"]
        if priority:
            cmd.append(f"--priority={priority}")
        return self.box.run(cmd).stdout

    def wait_journal(self, since: str, text: str, timeout: float = 15.0) -> None:
        """Wait until the journal since `since` holds `text`. journald reads a service's stdout
        stream on its own schedule, so a line the agent has written may show up after PID 1's own
        "Stopped" (it did, once, on a loaded machine)."""
        wait_for(lambda: text in self.journal(since), timeout, 0.2,
                 message=lambda: f"{text!r} not in the journal; it holds:\n{self.journal(since)}")

    def drop_in(self, name: str, text: str) -> None:
        self.box.write(f"{DROP_IN_DIR}/{name}", text)
        self.systemctl("daemon-reload")

    def remove_drop_in(self, name: str) -> None:
        self.box.run(["rm", "-f", f"{DROP_IN_DIR}/{name}"])
        self.systemctl("daemon-reload")

    # -- the simulated world ---------------------------------------------------------------------
    def cluster(self) -> dict:
        return json.loads(self.box.run(["python3", "-I", f"{SIMS}/kubectl.py", NODE]).stdout)

    def left(self, wanted: List[str]) -> List[str]:
        return sorted(set(self.cluster()["pods"]) & set(wanted))

    def imds(self, endpoint: str, doc: dict) -> None:
        script = ("import sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
                  "'http://127.0.0.1:1338/_sim/' + sys.argv[1], data=sys.argv[2].encode(), method='POST'), "
                  "timeout=10).read()")
        self.box.run(["python3", "-I", "-c", script, endpoint, json.dumps(doc)])

    def spot(self, in_s: float) -> float:
        """Post a spot notice due in in_s seconds; returns the deadline (epoch seconds)."""
        deadline = time.time() + in_s
        self.imds("spot", {"in": in_s})
        return deadline

    def reset(self, pods: List[dict], pdbs: Optional[List[dict]] = None) -> None:
        """Agent stopped with no state, fresh simulators holding these pods, agent started (READY)."""
        self.systemctl("stop", UNIT, "nodeagent-upgrade-restart.service", check=False)
        self.box.run(["rm", "-rf", "/var/lib/nodeagent/state.json", "/var/cache/nodeagent/sim-exec-count"])
        scenario = {"node": NODE, "instance_id": INSTANCE_ID, "zone": ZONE,
                    "provider_id": f"aws:///{ZONE}/{INSTANCE_ID}", "pods": pods, "pdbs": pdbs or []}
        self.box.write("/etc/sim-scenario.json", json.dumps(scenario))
        self.systemctl("restart", "imds-sim.service", "kube-api-sim.service", "kubelet.service")
        probe = ["python3", "-I", "-c", "import socket; socket.create_connection(('127.0.0.1', 1338), 1)"]
        wait_for(lambda: self.box.run(probe, check=False).returncode == 0, 10, 0.2, "imds-sim listening")
        self.systemctl("reset-failed", UNIT, check=False)
        self.systemctl("start", UNIT, timeout=60)
        # READY=1 comes once IMDS answers; the API connection follows on the worker ("starting").
        wait_for(lambda: self.status_text().startswith("watching IMDS"), 20, 0.2, "STATUS= watching IMDS")


def bump_version(deb: Path, version: str, out: Path) -> Path:
    """The same package under a newer version (dpkg-deb, not a second nfpm run: same payload)."""
    tree = out / f"tree-{version}"
    run(["dpkg-deb", "-R", deb, tree])
    control = tree / "DEBIAN" / "control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", control.read_text()))
    target = out / f"nodeagent_{version}_all.deb"
    run(["dpkg-deb", "--root-owner-group", "-b", tree, target])
    shutil.rmtree(tree)
    return target


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    check_host()
    root = rootfs()
    shared = tmp_path_factory.mktemp("real-systemd")
    debs = shared / "debs"
    packages = build_packages(debs)
    for release in ("2", "3"):
        bump_version(packages.deb, f"{repo_version()}-{release}", debs)
    sims = shared / "sims"
    # The simulators are not in the package: a copy of the source tree's (stdlib only).
    for package in ("nodeagent_sim", "nodeagent"):
        shutil.copytree(REPO / package, sims / package, ignore=shutil.ignore_patterns("__pycache__"))
    for script in (Path(__file__).parent / "inside").glob("*.py"):
        shutil.copy(script, sims / script.name)
    box = Container(root, shared, shared / "console.log").boot()
    try:
        for name, text in SIM_UNITS.items():
            box.write(f"/etc/systemd/system/{name}", text)
        box.write(TEST_CONF, AGENT_CONF)
        box.run(["systemctl", "daemon-reload"])
        box.run(["systemctl", "enable", "kubelet.service"])
        box.run(["dpkg", "-i", f"{DEBS}/{packages.deb.name}"], timeout=120)
        yield Node(box)
    finally:
        box.shutdown()


IDLE_STATUS = re.compile(r"^watching IMDS \(([a-z-]+(, )?)+\); node " + re.escape(NODE)
                         + r"(; node \w+)?; last poll (?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$")
STATUS_POLL_TIME_MAX_AGE_S = 15  # the poll time in STATUS= is refreshed every 10 s
DRAIN_STATUS = re.compile(r"^draining: \d+/\d+ pods gone, deadline in \d+s$")


# --- READY, STATUS, the drain ------------------------------------------------------------------------

def test_ready_only_once_imds_answers_and_status_reads_as_documented(node):
    node.reset(FAST)
    node.systemctl("stop", UNIT, "imds-sim.service")
    mark = node.mark()
    node.systemctl("start", "--no-block", UNIT)
    time.sleep(3)
    state = node.show("ActiveState", "SubState", "StatusText")
    assert (state["ActiveState"], state["SubState"]) == ("activating", "start"), state
    assert state["StatusText"].startswith("waiting for IMDS at http://127.0.0.1:1338"), state

    node.systemctl("start", "imds-sim.service")
    wait_for(lambda: node.show("ActiveState")["ActiveState"] == "active", 30, 0.2, "active once IMDS answers")
    node.wait_journal(mark, "ready: watching IMDS at http://127.0.0.1:1338")
    status = wait_for(lambda: (lambda s: s if IDLE_STATUS.match(s) else None)(node.status_text()), 10, 0.2,
                      "an idle STATUS= naming the node")
    assert "spot-itn" in status and "rebalance" in status, status
    polled = datetime.strptime(IDLE_STATUS.match(status).group("at"), "%Y-%m-%dT%H:%M:%SZ")
    age = time.time() - polled.replace(tzinfo=timezone.utc).timestamp()
    assert -2 < age < STATUS_POLL_TIME_MAX_AGE_S, f"STATUS= poll time is {age:.0f}s old: {status}"


def test_spot_notice_cordons_and_drains_before_deadline(node):
    node.reset(FAST)
    mark = node.mark()
    wanted = evictable(FAST)
    deadline = node.spot(40)
    statuses = set()

    def drained() -> bool:
        statuses.add(node.status_text())
        return not node.left(wanted)

    wait_for(drained, 40, 0.1, f"every evictable pod gone ({node.left(wanted)} left)")
    assert time.time() < deadline - DRAIN_MARGIN_S + 1, "pods were gone only after the deadline"
    cluster = node.cluster()
    assert cluster["unschedulable"], "node not cordoned"
    assert "kube-system/node-exporter-x1" in cluster["pods"], "the DaemonSet pod must stay"
    assert any(DRAIN_STATUS.match(s) for s in statuses), f"no draining STATUS= seen: {sorted(statuses)}"
    # The exec credential plugin ran inside the unit's sandbox (it counts its runs in HOME).
    assert node.box.run(["cat", "/var/cache/nodeagent/sim-exec-count"]).stdout.strip(), "exec plugin never ran"
    assert node.show("ActiveState")["ActiveState"] == "active"

    # At warning and above: the notice, and nothing routine. The one other line allowed is the
    # documented, once-per-process "node credentials cannot taint" (TAINT is set by default and
    # the Node authorizer forbids it: README "Taint").
    warnings = [line for line in node.journal(mark, priority="warning").splitlines() if line.strip()]
    notices = [line for line in warnings if line.startswith("notice spot-itn-") and "response: drain" in line]
    assert notices, f"the notice is not at priority warning: {warnings}"
    taint = [line for line in warnings if line.startswith("node credentials cannot taint")]
    assert len(taint) <= 1, taint
    routine = [line for line in warnings if line not in notices + taint]
    assert not routine, f"routine lines at priority warning: {routine}"


# --- reload --------------------------------------------------------------------------------------------

def test_reload_applies_a_changed_key_and_keeps_the_old_config_on_a_bad_one(node):
    node.reset(FAST)
    pid = node.main_pid()
    assert "rebalance" in node.status_text()
    mark = node.mark()
    node.box.write("/etc/nodeagent/conf.d/60-reload.conf", "ON_REBALANCE=ignore\n")
    node.systemctl("reload", UNIT)
    wait_for(lambda: "rebalance" not in node.status_text(), 10, 0.2, "STATUS= without rebalance after the reload")
    assert node.show("ActiveState")["ActiveState"] == "active" and node.main_pid() == pid
    node.wait_journal(mark, "config reloaded")

    mark = node.mark()
    node.box.write("/etc/nodeagent/conf.d/61-bad.conf", "POLL_INTERVAL=banana\nON_REBALANCE=drain\n")
    node.systemctl("reload", UNIT)
    errors = wait_for(lambda: node.journal(mark, priority="err"), 10, 0.2, "the bad reload logged")
    assert "reload failed, keeping the running config" in errors and "POLL_INTERVAL" in errors, errors
    time.sleep(1)
    assert node.show("ActiveState")["ActiveState"] == "active" and node.main_pid() == pid
    assert "rebalance" not in node.status_text(), "the bad file's ON_REBALANCE must not apply"
    node.box.run(["rm", "-f", "/etc/nodeagent/conf.d/60-reload.conf", "/etc/nodeagent/conf.d/61-bad.conf"])


# --- stop, restart, watchdog -----------------------------------------------------------------------

def start_slow_drain(node: Node, in_s: float) -> float:
    node.reset(SLOW, SLOW_PDBS)
    deadline = node.spot(in_s)
    wanted = evictable(SLOW)
    wait_for(lambda: len(node.left(wanted)) <= len(wanted) - 1, 20, 0.2, "the first pod evicted")
    return deadline


def test_stop_mid_drain_is_clean_and_the_next_start_resumes_it(node):
    deadline = start_slow_drain(node, 60)
    wanted = evictable(SLOW)
    mark = node.mark()
    started = time.monotonic()
    node.systemctl("stop", UNIT, timeout=60)
    took = time.monotonic() - started
    state = node.show("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    assert took < 30, f"stop took {took:.1f}s (TimeoutStopSec=30s)"
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                     "ExecMainStatus": "0"}, state
    node.wait_journal(mark, "drain interrupted, it resumes on the next start")
    left = node.left(wanted)
    assert len(left) >= 2, f"too few pods left to show a resume: {left}"

    mark = node.mark()
    node.systemctl("start", UNIT)
    wait_for(lambda: not node.left(wanted), max(1.0, deadline - time.time()), 0.2, "the resumed drain to finish")
    assert time.time() < deadline - DRAIN_MARGIN_S + 1
    node.wait_journal(mark, "resuming drain")


def test_watchdog_kills_a_stopped_main_loop_and_the_drain_still_finishes(node):
    node.drop_in("50-watchdog.conf", "[Service]\nWatchdogSec=3s\n")
    try:
        deadline = start_slow_drain(node, 60)
        wanted = evictable(SLOW)
        before = node.show("MainPID", "NRestarts")
        mark = node.mark()
        node.box.run(["kill", "-STOP", before["MainPID"]])
        wait_for(lambda: node.show("NRestarts")["NRestarts"] != before["NRestarts"], 30, 0.2, "systemd to restart it")
        log = node.journal(mark)
        assert "Watchdog timeout" in log, log
        wait_for(lambda: not node.left(wanted), max(1.0, deadline - time.time()), 0.2,
                 "the drain to finish after the restart")
        assert time.time() < deadline - DRAIN_MARGIN_S + 1
        assert node.main_pid() not in (0, int(before["MainPID"]))
    finally:
        node.remove_drop_in("50-watchdog.conf")


# --- no socket, hardening ----------------------------------------------------------------------------

def test_the_agent_listens_on_no_socket(node):
    node.reset(FAST)
    pid = node.main_pid()
    listening = node.box.run(["ss", "--listening", "--tcp", "--udp", "--unix", "--processes", "--numeric"]).stdout
    assert "1338" in listening, "ss must see the simulators' sockets, or it sees nothing"
    mine = [line for line in listening.splitlines() if f"pid={pid}," in line]
    assert not mine, mine


def test_the_sandbox_is_in_force(node):
    """Asserts what the unit declares: with a non-root User=, the process is not uid 0 and
    systemd-run from inside the sandbox is refused; an empty CapabilityBoundingSet= (required when
    it runs as root) is empty in /proc/<pid>/status."""
    declared = node.show("User", "CapabilityBoundingSet", "AmbientCapabilities")
    user = declared["User"]
    node.reset(FAST)
    pid = node.main_pid()
    status = node.box.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2", "SystemCallFilter= not applied"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapAmb"], 16) == 0, status
    if user and user != "root":
        assert fields["Uid"].split()[0] != "0", f"User={user} declared, runs as uid 0"
        # systemd-run from inside the sandbox, as the agent's user: refused.
        probe = ("ExecStartPost=-/bin/sh -c 'systemd-run --wait --quiet /bin/true "
                 ">/var/lib/nodeagent/probe 2>&1; echo rc=$? >>/var/lib/nodeagent/probe'")
        node.drop_in("50-probe.conf", "[Service]\n" + probe + "\n")
        try:
            node.systemctl("restart", UNIT)
            out = wait_for(lambda: node.box.run(["cat", "/var/lib/nodeagent/probe"], check=False).stdout, 10, 0.2,
                           "the probe")
        finally:
            node.remove_drop_in("50-probe.conf")
            node.box.run(["rm", "-f", "/var/lib/nodeagent/probe"])
        print(f"systemd-run from the sandbox: {out.strip()}")
        assert "rc=0" not in out, f"systemd-run worked from inside the sandbox: {out}"
        # Refused by the sandbox (PID 1's and D-Bus's sockets hidden) or by D-Bus's policy.
        assert re.search(r"Access denied|Interactive authentication required|Failed to connect to bus", out), out
    else:
        assert declared["CapabilityBoundingSet"] == "", f"root needs an empty bounding set: {declared}"
    if declared["CapabilityBoundingSet"] == "":
        assert int(fields["CapBnd"], 16) == 0, f"CapabilityBoundingSet= not in force: {fields['CapBnd']}"


# --- nothing writable but what the unit names ---------------------------------------------------

ONESHOT = "nodeagent-spot-label.service"
ONESHOT_DROPIN = "/etc/eks/nodeadm.d/50-nodeagent-spot-label.yaml"
PROBE = "/usr/local/sbin/nodeagent-write-probe"
PROBE_NAME = ".nodeagent-write-probe"
# Every place a sandboxed process could leave a file that something outside acts on: unit
# directories (PID 1 runs what it finds there after a daemon-reload), /run and its world-writable
# corners, the persistent state and config trees, and the shared temporary directories.
PROBED_DIRS = ["/run", "/run/systemd/system", "/run/systemd", "/run/lock", "/run/user", "/run/nodeagent",
               "/etc", "/etc/systemd/system", "/etc/nodeagent", "/etc/eks", "/etc/eks/nodeadm.d", "/usr/lib",
               "/usr/local/bin", "/var/lib", "/var/lib/nodeagent", "/var/cache/nodeagent", "/var/log",
               "/var/tmp", "/tmp", "/dev/shm", "/root", "/srv", "/opt"]
# A unit that, if PID 1 ever loads it, leaves a mark outside every sandbox.
ESCAPE_UNIT = "nodeagent-escape-probe.service"
PROBE_SCRIPT = f"""#!/bin/sh
# Run inside a unit's sandbox (ExecStartPost=): try to create a file in each directory, say which worked.
for dir in {' '.join(PROBED_DIRS)}; do
    if ( : >"$dir/{PROBE_NAME}" ) 2>/dev/null; then echo "probe: wrote $dir"; fi
done
if printf '[Service]\\nType=oneshot\\nExecStart=/bin/touch /escaped-from-sandbox\\n' \\
        >/run/systemd/system/{ESCAPE_UNIT} 2>/dev/null; then
    echo "probe: wrote /run/systemd/system/{ESCAPE_UNIT}"
fi
exit 0
"""


def probe_writes(node: Node, unit: str, restart: List[str]) -> Dict[str, List[str]]:
    """Run the write probe in `unit`'s sandbox; returns what the probe could write inside, and which
    of those files are visible from outside the sandbox (the host's view)."""
    node.box.write(PROBE, PROBE_SCRIPT, mode="0755")
    dirs = " ".join(PROBED_DIRS)
    clean = f"for d in {dirs}; do rm -f \"$d/{PROBE_NAME}\"; done; rm -f /run/systemd/system/{ESCAPE_UNIT} /escaped-from-sandbox"
    node.box.sh(clean)
    drop_in = f"/etc/systemd/system/{unit}.d/50-write-probe.conf"
    node.box.write(drop_in, f"[Service]\nExecStartPost=-{PROBE}\n")
    node.systemctl("daemon-reload")
    mark = node.mark()
    try:
        node.systemctl(*restart, unit, timeout=90)
        wait_for(lambda: "probe:" in node.journal(mark, unit=unit) or
             node.show("ActiveState", unit=unit)["ActiveState"] in ("active", "failed"), 30, 0.2, "the probe")
        time.sleep(1)  # the probe's last lines through journald
        inside = [line.split("probe: wrote ", 1)[1] for line in node.journal(mark, unit=unit).splitlines()
                  if line.startswith("probe: wrote ")]
        outside = [d for d in PROBED_DIRS
                   if node.box.run(["test", "-e", f"{d}/{PROBE_NAME}"], check=False).returncode == 0]
        # The way out: PID 1 loads a unit it finds under /run/systemd/system and runs it as root.
        node.systemctl("daemon-reload")
        node.systemctl("start", ESCAPE_UNIT, check=False)
        if node.box.run(["test", "-e", "/escaped-from-sandbox"], check=False).returncode == 0:
            outside.append("escaped: a unit written from inside ran outside the sandbox")
    finally:
        node.box.run(["rm", "-f", drop_in])
        node.box.sh(clean)
        node.systemctl("daemon-reload")
    return {"inside": inside, "outside": outside}


def test_the_boot_oneshot_can_write_only_etc_eks_and_still_labels(node):
    """The oneshot is root without capabilities: a file it could write under /run/systemd/system
    (or anywhere PID 1 reads) would run, after the next daemon-reload, outside the sandbox with
    every capability. docs/security.md: nothing writable except /etc/eks; private /tmp and /dev."""
    node.reset(FAST)
    node.box.write("/usr/bin/nodeadm", "#!/bin/sh\nexit 0\n", mode="0755")  # ConditionFileIsExecutable=
    node.box.run(["mkdir", "-p", "/etc/eks/nodeadm.d"])
    node.box.run(["rm", "-f", ONESHOT_DROPIN])
    try:
        seen = probe_writes(node, ONESHOT, ["restart"])
        print(f"oneshot write probe: {seen}")
        assert seen["outside"] == ["/etc/eks", "/etc/eks/nodeadm.d"], str(seen)
        # Written inside but not visible outside: the private /tmp, /var/tmp and /dev/shm only.
        assert set(seen["inside"]) <= {"/etc/eks", "/etc/eks/nodeadm.d", "/tmp", "/var/tmp", "/dev/shm"}, str(seen)
        state = node.show("ActiveState", "Result", unit=ONESHOT)
        assert state == {"ActiveState": "active", "Result": "success"}, state
        # Still does its job: the IMDS simulator says spot, so the nodeadm drop-in is written.
        dropin = node.box.run(["cat", ONESHOT_DROPIN]).stdout
        assert "--node-labels=lifecycle=Ec2Spot" in dropin, dropin
    finally:
        node.box.run(["rm", "-f", "/usr/bin/nodeadm", ONESHOT_DROPIN])
        node.systemctl("stop", ONESHOT, check=False)


def test_the_agent_can_write_only_its_state_and_cache(node):
    node.reset(FAST)
    seen = probe_writes(node, UNIT, ["restart"])
    print(f"agent write probe: {seen}")
    assert seen["outside"] == ["/var/lib/nodeagent", "/var/cache/nodeagent"], str(seen)
    assert set(seen["inside"]) <= {"/var/lib/nodeagent", "/var/cache/nodeagent", "/tmp", "/var/tmp",
                                   "/dev/shm"}, str(seen)
    wait_for(lambda: node.status_text().startswith("watching IMDS"), 20, 0.2, "the agent watching IMDS again")


# --- the drill and the daemon's real state ---------------------------------------------------------

def test_the_drill_reads_the_units_state_whatever_the_caller_points_at(node):
    """The drill refuses while the daemon handles a real notice. Its check read STATE_DIR from the
    caller's environment, config directory and --set flags, so pointing them elsewhere skipped
    it. It always reads the unit's /var/lib/nodeagent/state.json now; a user who may not read it
    is refused too."""
    start_slow_drain(node, 60)
    node.box.run(["mkdir", "-p", "/tmp/drill-etc"])
    elsewhere = ["env", "NODEAGENT_STATE_DIR=/tmp/drill-state", "NODEAGENT_CONFIG_DIR=/tmp/drill-etc",
                 "nodeagent", "drill", "--yes", "--in", "30s", "--set", "STATE_DIR=/tmp/drill-state",
                 "--set", "IMDS_URL=http://127.0.0.1:1338"]
    as_root = node.box.run(elsewhere, check=False, timeout=90)
    assert as_root.returncode == 75, as_root.stdout + as_root.stderr
    assert "/var/lib/nodeagent/state.json says a real notice is being handled" in as_root.stderr, as_root.stderr
    as_user = node.box.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *elsewhere],
                           check=False, timeout=90)
    assert as_user.returncode == 75, as_user.stdout + as_user.stderr
    assert ("cannot read /var/lib/nodeagent/state.json: permission denied (run as root, or with sudo)"
            in as_user.stderr), as_user.stderr


# The figures docs/security.md gives (tests/packaging/test_unit_file.py checks the same offline).
EXPOSURE_CEILING = {UNIT: 1.2, ONESHOT: 1.7}


@pytest.mark.parametrize("unit", sorted(EXPOSURE_CEILING))
def test_security_exposure_under_real_systemd(node, unit):
    """`systemd-analyze security` of the units as PID 1 loaded them, drop-ins and all."""
    result = node.box.run(["systemd-analyze", "security", "--no-pager", unit], check=False)
    match = re.search(r"Overall exposure level for " + re.escape(unit) + r": (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= EXPOSURE_CEILING[unit], result.stdout


# --- package scripts ----------------------------------------------------------------------------------

def dpkg_install(node: Node, deb: str, timeout: float = 120) -> float:
    started = time.monotonic()
    node.box.run(["dpkg", "-i", f"{DEBS}/{deb}"], timeout=timeout)
    return time.monotonic() - started


def test_upgrade_with_imds_unreachable_returns_promptly(node):
    node.reset(FAST)
    node.systemctl("stop", "imds-sim.service")
    took = dpkg_install(node, f"nodeagent_{repo_version()}-2_all.deb", timeout=40)
    assert took < 20, f"dpkg -i took {took:.1f}s with IMDS unreachable"
    assert node.box.run(["dpkg-query", "-W", "-f=${Version}", "nodeagent"]).stdout == f"{repo_version()}-2"
    node.systemctl("start", "imds-sim.service")
    wait_for(lambda: node.show("ActiveState")["ActiveState"] == "active", 30, 0.2, "the agent active again")


def test_upgrade_during_a_drain_defers_the_restart_until_it_is_over(node):
    deadline = start_slow_drain(node, 60)
    wanted = evictable(SLOW)
    pid = node.main_pid()
    took = dpkg_install(node, f"nodeagent_{repo_version()}-3_all.deb")
    assert took < 20, f"dpkg -i took {took:.1f}s during a drain"
    assert node.main_pid() == pid, "the upgrade restarted the agent mid-drain"
    waiter = node.show("ActiveState", unit="nodeagent-upgrade-restart.service")["ActiveState"]
    assert waiter == "active", f"no deferred restart waiting: {waiter}"
    restarted = {}

    def watch() -> bool:
        if node.main_pid() != pid and "at" not in restarted:
            restarted["at"] = time.time()
            restarted["left"] = node.left(wanted)
        return not node.left(wanted)

    wait_for(watch, max(1.0, deadline - time.time()), 0.3, "the drain to finish")
    drained_at = time.time()
    assert drained_at < deadline - DRAIN_MARGIN_S + 1
    assert restarted.get("left", []) == [], f"restarted with pods still to drain: {restarted}"
    wait_for(lambda: node.main_pid() not in (0, pid), 30, 0.2, "the deferred restart once idle")
    wait_for(lambda: node.show("ActiveState")["ActiveState"] == "active", 30, 0.2, "active after the deferred restart")


STATE_FILE = "/var/lib/nodeagent/state.json"
LATEST_DEB = f"nodeagent_{repo_version()}-3_all.deb"


def plant(node: Node, script: str) -> None:
    """Put something in the agent's state directory as the agent's own user would."""
    node.box.run(["setpriv", "--reuid=nodeagent", "--regid=nodeagent", "--init-groups", "sh", "-c", script])


def status_as_root(node: Node) -> subprocess.CompletedProcess:
    return node.box.run(["nodeagent", "status", "--no-probe"], check=False, timeout=30)


def installed(node: Node) -> str:
    return node.box.run(["dpkg-query", "-W", "-f=${Status} ${Version}", "nodeagent"]).stdout


def test_a_fifo_state_file_hangs_neither_status_nor_an_upgrade(node):
    """The state directory is the service user's; root reads from it. A FIFO at state.json hung
    `nodeagent status` and the deb's postinst (upgrade-restart), leaving the package half-configured."""
    node.reset(FAST)
    plant(node, f"rm -f {STATE_FILE} && mkfifo -m 0644 {STATE_FILE}")
    try:
        result = status_as_root(node)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"{STATE_FILE} is a FIFO, not a regular file" in result.stdout, result.stdout
        assert "Traceback" not in result.stderr, result.stderr
        took = dpkg_install(node, LATEST_DEB, timeout=60)
        assert took < 20, f"dpkg -i took {took:.1f}s"
        assert installed(node) == f"install ok installed {repo_version()}-3"
        waiter = node.show("ActiveState", unit="nodeagent-upgrade-restart.service")["ActiveState"]
        assert waiter == "active", f"an unreadable state file counts as busy: the restart waits ({waiter})"
    finally:
        node.systemctl("stop", "nodeagent-upgrade-restart.service", check=False)
        node.box.run(["rm", "-f", STATE_FILE])


def test_a_deeply_nested_state_file_is_a_clear_error(node):
    """JSON nested deeper than the parser's recursion limit raised RecursionError at start (the
    daemon died and restarted in a loop) and in `nodeagent status`."""
    node.reset(FAST)
    node.systemctl("stop", UNIT)
    plant(node, f"python3 -c 'print(\"[\" * 100000 + \"]\" * 100000)' > {STATE_FILE}")
    result = status_as_root(node)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{STATE_FILE} is not valid JSON (nested too deeply to parse)" in result.stdout, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    mark = node.mark()
    node.systemctl("start", UNIT)
    node.wait_journal(mark, "state: corrupt state file: nested too deeply to parse; moved aside to")
    wait_for(lambda: node.status_text().startswith("watching IMDS"), 20, 0.2, "the agent watching IMDS")
    assert "Traceback" not in node.journal(mark)
    node.box.sh("rm -f /var/lib/nodeagent/state.json.corrupt-*")


def test_an_agent_that_says_busy_forever_is_restarted_after_the_bound(node):
    """A compromised agent keeps "busy": true in its state file to hold back the upgrade that
    would replace it. The deferred restart waits NODEAGENT_RESTART_MAX_WAIT (here 5 s; passed on
    from dpkg's environment to the transient unit), then restarts anyway."""
    node.reset(FAST)
    pid = node.main_pid()
    plant(node, f"echo '{{\"schema\": 1, \"busy\": true, \"notices\": {{}}}}' > {STATE_FILE}")
    mark = node.mark()
    started = time.monotonic()
    node.box.run(["env", "NODEAGENT_RESTART_MAX_WAIT=5", "NODEAGENT_RESTART_POLL=1",
                  "dpkg", "-i", f"{DEBS}/{LATEST_DEB}"], timeout=60)
    assert time.monotonic() - started < 20
    assert node.main_pid() == pid, "restarted at once although the state file says busy"
    wait_for(lambda: node.main_pid() not in (0, pid), 40, 0.2, "the restart after the bound")
    waiter = node.journal(mark, unit="nodeagent-upgrade-restart.service")
    assert "still busy after 5s: restarting anyway" in waiter, waiter
    wait_for(lambda: node.show("ActiveState")["ActiveState"] == "active", 30, 0.2, "active after the restart")


def test_remove_does_not_follow_a_symlink_in_the_state_directory(node):
    """The removal marker was written into the state directory by root: a symlink the service
    user put there made `dpkg -r` truncate the root-owned file it named. It lives in
    /var/lib/misc (root's) now, and a reinstall still applies the presets."""
    node.reset(FAST)
    node.box.write("/etc/victim", "precious\n", mode="0600")
    plant(node, "ln -sf /etc/victim /var/lib/nodeagent/.package-removed")
    try:
        node.box.run(["dpkg", "-r", "nodeagent"], timeout=120)
        assert node.box.run(["cat", "/etc/victim"]).stdout == "precious\n"
        owner = node.box.run(["stat", "-c", "%U %F", "/var/lib/misc/nodeagent.package-removed"]).stdout
        assert owner.strip() == "root regular empty file", owner
        node.box.run(["dpkg", "-i", f"{DEBS}/{LATEST_DEB}"], timeout=120)
        assert installed(node) == f"install ok installed {repo_version()}-3"
        enabled = node.systemctl("is-enabled", UNIT, ONESHOT, check=False).stdout.split()
        assert enabled == ["enabled", "enabled"], "a reinstall after a remove applies the presets"
        assert node.box.run(["test", "-e", "/var/lib/misc/nodeagent.package-removed"], check=False).returncode == 1
        assert node.box.run(["cat", "/etc/victim"]).stdout == "precious\n"
    finally:
        node.box.run(["rm", "-f", "/etc/victim", "/var/lib/nodeagent/.package-removed"])


def test_remove_and_purge_leave_nothing(node):
    node.reset(FAST)
    ours = [f for f in node.box.run(["dpkg-query", "-L", "nodeagent"]).stdout.splitlines() if "nodeagent" in f]
    assert "/usr/bin/nodeagent" in ours, ours
    node.box.run(["dpkg", "-r", "nodeagent"], timeout=120)
    assert node.show("ActiveState", "LoadState") == {"ActiveState": "inactive", "LoadState": "not-found"}
    assert node.box.run(["pgrep", "-f", "/usr/bin/nodeagent"], check=False).returncode == 1, "agent still running"
    assert node.box.run(["test", "-e", "/etc/nodeagent/nodeagent.conf"], check=False).returncode == 0, \
        "dpkg -r must keep the conffile"
    node.box.run(["rm", "-f", TEST_CONF])  # the test's own drop-in: not the package's to remove
    node.box.run(["dpkg", "--purge", "nodeagent"], timeout=120)
    candidates = ours + ["/etc/nodeagent", "/var/lib/nodeagent", "/var/lib/private/nodeagent",
                         "/var/lib/misc/nodeagent.package-removed",
                         "/var/cache/nodeagent", "/var/cache/private/nodeagent",
                         "/etc/systemd/system/multi-user.target.wants/nodeagent.service",
                         "/etc/systemd/system/multi-user.target.wants/nodeagent-spot-label.service"]
    leftovers = [f for f in candidates if node.box.run(["test", "-e", f], check=False).returncode == 0]
    assert not leftovers, leftovers
    assert node.box.run(["dpkg-query", "-W", "nodeagent"], check=False).returncode != 0
    assert node.show("LoadState")["LoadState"] == "not-found"
