"""Fault matrix, process and disk: kill -9 at each step boundary, SIGTERM mid-drain, an unwritable
state directory, a corrupt state file.

Every case: the real daemon against ImdsSim and KubeSim; the five checks of tests.cluster.Cluster.check.
"""
from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from typing import Set

import pytest

from tests.cluster import NODE, Cluster, NoticeRef
from tests.faults.conftest import readonly_python
from tests.helpers import wait_for

DRAINED = r"drained: "


def _pods_evicted_or_gone(cluster: Cluster) -> Set[str]:
    """Eviction paths of pods that are terminating or gone now."""
    present = {p["metadata"]["name"]: p for p in cluster.kube.pods(node=NODE)}
    done = set()
    for request in cluster.evictions():
        name = request.path.split("/")[-2]
        pod = present.get(name)
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            done.add(request.path)
    return done


def _kill_when(cluster: Cluster, boundary: str) -> threading.Event:
    """Arrange for kill -9 at `boundary`; the event is set once the daemon is dead."""
    killed = threading.Event()
    once = threading.Lock()

    def kill() -> None:
        if once.acquire(blocking=False):
            cluster.kill9()
            killed.set()

    if boundary == "after-cordon":
        # In the server, right after the cordon is stored and before the agent hears the answer.
        cluster.kube.on_patch_node(lambda name, t, node: kill() if node["spec"].get("unschedulable") else None)
    elif boundary == "before-final-record":
        # The "drained" label is written just before the final state record is saved.
        cluster.kube.on_patch_node(
            lambda name, t, node: kill() if node["metadata"]["labels"].get("nodeagent.io/agent") == "drained" else None)
    return killed


@pytest.mark.parametrize("boundary", ["after-notice-recorded", "after-cordon", "mid-evictions", "before-final-record"])
def test_kill9_at_each_step_boundary_then_restart(make_cluster, boundary):
    """kill -9 at each step boundary, then a restart.

    Case: kill -9 right after the notice is recorded (the cordon request held in flight), then a restart
    Outcome: the next start finds the notice open in the state file ("resuming drain for <id>"), cordons and drains; the notice is not taken as new
    Case: kill -9 in the API server's hands right after the cordon is stored, before the agent hears the answer
    Outcome: the restart cordons again (idempotent), labels and drains; handled once
    Case: kill -9 in the middle of evictions (3 of 9 accepted, more in flight), then a restart
    Outcome: the restart lists the node's pods: pods already gone are not there and terminating ones are only waited for, so no pod gets a second eviction; drained
    Case: kill -9 after the drain finished but before its final record (while the "drained" label is written)
    Outcome: the restart resumes, finds nothing left to evict ("draining 0 pods"), records the notice done; no eviction is repeated
    """
    cluster = make_cluster(time_scale=0.1)
    cluster.add_workload(count=8, grace_s=15)  # 1.5 s to terminate: evicted pods may still be terminating
    cluster.start_agent(DRAIN_PARALLELISM="1")
    # The agent's own start-up writes (presence labels, then the taint probe, which logs this)
    # come first, so the faults below hit the notice's requests, not those (a race under load).
    cluster.daemon.wait_line(r"node credentials cannot taint", timeout_s=30)
    killed = _kill_when(cluster, boundary)
    held, held_from = None, time.monotonic()
    if boundary == "after-notice-recorded":
        held = cluster.kube.inject(count=2, status=None, delay_s=1.5, method="PATCH", path_regex=r"/nodes/")
    if boundary == "mid-evictions":
        held = cluster.kube.inject(count=1000, status=None, delay_s=0.3, method="POST", path_regex=r"/eviction$")
    notice = cluster.spot(40)
    if boundary == "after-notice-recorded":
        cluster.daemon.wait_line(rf"notice {notice.id} \(", timeout_s=10)
        cluster.kill9()
        killed.set()
    elif boundary == "mid-evictions":
        assert wait_for(lambda: len([r for r in cluster.evictions() if r.status == 201]) >= 3, 20)
        cluster.kill9()
        killed.set()
    assert killed.wait(20), "never reached the boundary"
    assert not cluster.daemon.alive()
    # Where exactly it died, as the state file and the node tell it.
    record = cluster.state()["notices"][notice.id]
    assert record["phase"] in ("seen", "acting") and record["drain_finished"] is None, record
    if boundary == "after-notice-recorded":
        assert not cluster.kube.node(NODE)["spec"].get("unschedulable") and not record["cordoned"]
    if boundary == "after-cordon":
        assert cluster.kube.node(NODE)["spec"]["unschedulable"] and not record["cordoned"]
    if boundary in ("mid-evictions", "before-final-record"):
        assert record["cordoned"] and record["drain_started"]
    cluster.kube.clear_faults()
    # A request in flight at the kill is still carried out by the server (an eviction held 0.3 s
    # above); systemd restarts after RestartSec=5s, so a real restart never races it.
    if held is not None:
        cluster.wait_answered(held, held_from)
    already = _pods_evicted_or_gone(cluster)
    restarted_at = time.monotonic()
    cluster.start_agent()
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=rf"resuming drain for {notice.id}")
    again = [r.path for r in cluster.evictions() if r.t_monotonic > restarted_at and r.path in already]
    assert not again, f"evicted again after the restart: {again}"
    if boundary == "before-final-record":
        assert cluster.find(r"draining 0 pods")


@pytest.mark.parametrize("variant", ["waiting-for-pods", "api-down"])
def test_sigterm_mid_drain_then_restart(make_cluster, variant):
    """SIGTERM in the middle of a drain.

    Decision: On SIGTERM the agent stops promptly and does not try to finish the drain. At OS shutdown the drain cannot go on (systemd's TimeoutStopSec, the network going away) and the kubelet's Graceful Node Shutdown is the backstop for the pods; on a plain `systemctl restart` (an upgrade, a config change) the next start resumes it. So a stop sends STOPPING=1, lets the evictions already made stand, never uncordons, leaves the notice "acting" in the state file (`busy: true`) and exits 0 within seconds; the next start resumes the drain within the notice's original deadline, or, if that has passed, records the notice expired and does nothing.

    Case: SIGTERM while the drain waits for pods to terminate; restart 1 s later
    Outcome: exits 0 within seconds ("stopping: drain interrupted, it resumes on the next start"), node still cordoned, state busy; the restart logs "resuming drain for <id>", evicts only what was not evicted yet, and drains before the deadline
    Case: SIGTERM while the cordon is being retried against an API that is down; restart after the API is back
    Outcome: the retry loop stops at once ("cordon interrupted by the stop"), exit 0 with the notice still open; the restart cordons and drains
    """
    cluster = make_cluster(time_scale=0.2)
    cluster.add_workload(count=4, grace_s=10)  # 2 s to terminate
    cluster.start_agent()
    notice = cluster.spot(40)
    if variant == "api-down":
        cluster.kube.down_for(6)
        cluster.daemon.wait_line(r"cordon failed \(.*\); retrying until the deadline", timeout_s=10)
    else:
        cluster.daemon.wait_line(r"draining \d+ pods", timeout_s=10)
        assert wait_for(lambda: len(cluster.evictions()) >= 4, 10)
    first = cluster.daemon
    stopped_at = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout_s=15) == 0
    assert time.monotonic() - stopped_at < 12  # generous: "promptly" means seconds, not the deadline
    assert first.find(r"stopping: drain interrupted, it resumes on the next start")
    state = cluster.state()
    assert state["busy"] is True and state["notices"][notice.id]["phase"] == "acting"
    if variant == "waiting-for-pods":
        assert cluster.kube.node(NODE)["spec"].get("unschedulable") is True, "uncordoned on stop"
        time.sleep(1)  # the case: the service restarts 1 s later, while the evicted pods terminate
    else:
        assert first.find(r"cordon interrupted by the stop")
        wait_for(lambda: not cluster.kube.is_down(), 10)
    cluster.start_agent()
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=r"stopping: drain interrupted, it resumes on the next start")
    assert cluster.find(rf"resuming drain for {notice.id}")


def test_state_dir_not_writable(make_cluster, tmp_path):
    """Case: the state directory is read-only (EROFS bind mount; a plain file in its place where that is not possible)
    Outcome: "cannot write .../state.json (Read-only file system); carrying on from memory", said once; the notice is still handled once (remembered in memory, not re-handled on every poll) and the node drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    python = readonly_python(tmp_path, cluster.state_dir)
    cluster.start_agent(python=python)
    notice = cluster.spot(30)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.wait_polls(3)  # more polls with the notice still there
    fault_log = r"cannot write \S+state\.json \(.*\); carrying on from memory"
    cluster.finish().check(notice, phase=None, fault_log=fault_log)
    assert len(cluster.find(fault_log)) == 1, "said on every save"
    assert not (cluster.state_dir / "state.json").exists() or cluster.state_dir.is_file()


@pytest.mark.parametrize("when", ["mid-drain", "after-drain", "idle"])
def test_corrupt_state_file(make_cluster, when):
    """Case: the agent is killed mid-drain, its state file is then corrupted, and it restarts while the API is down for 3 s
    Outcome: the file is moved aside ("corrupt state file ...; moved aside to state.json.corrupt-<t>; rebuilding from the node's own labels"); notices are held until the API answers, then the node's labels and annotations (notice id, kind, deadline, action, agent state) give back the notice: "state rebuilt from the node's labels: notice <id> ... in progress: resuming it"; drained within the original deadline, the notice not taken as new
    Case: the state file is corrupted after the drain finished (node label nodeagent.io/agent=drained)
    Outcome: rebuilt as "already finished": no second drain, nothing evicted again
    Case: the state file is corrupt while no notice is in progress
    Outcome: quarantined; "no notice in progress on it"; the next notice is handled normally
    """
    cluster = make_cluster(time_scale=0.2)
    cluster.add_workload(count=4, grace_s=10)  # 2 s to terminate
    cluster.start_agent()
    if when == "idle":
        notice = None
        cluster.kill9()
    else:
        notice = _spot_then_kill9(cluster, when)
    (cluster.state_dir / "state.json").write_bytes(b'{"schema": 1, "notices": {"x": \x00\xff truncated')
    if when == "mid-drain":
        cluster.kube.down_for(3)
    cluster.start_agent(ready=r"ready: watching IMDS")
    if when == "idle":
        cluster.daemon.wait_line(r"no notice in progress on it", timeout_s=10)
        notice = cluster.spot(30)
    _await_rebuilt_outcome(cluster, when)
    fault_log = r"state: corrupt state file: .*; moved aside to \S+state\.json\.corrupt-\d+; rebuilding from the node's own labels"
    cluster.finish().check(notice, fault_log=fault_log)
    assert list(cluster.state_dir.glob("state.json.corrupt-*"))
    if when == "mid-drain":
        assert cluster.find(rf"state rebuilt from the node's labels: notice {notice.id} .*in progress: resuming it")
        assert cluster.find(r"holding notices until the node's own labels can be read")
    if when == "after-drain":
        assert len(cluster.find(DRAINED)) == 1, "drained twice"
        assert json.loads((cluster.state_dir / "state.json").read_text())["notices"][notice.id]["phase"] == "done"


@pytest.mark.parametrize("when", ["mid-drain", "after-drain"])
def test_state_directory_wiped(make_cluster, when):
    """Case: the agent is killed mid-drain, its state directory is then deleted, and it restarts
    Outcome: a missing state file is read as a possible wipe, not only a first start: "state: no state file, but the node's labels name notice <id>", and the drain resumes within the original deadline; the notice is not taken as new
    Case: the state directory is deleted after the drain finished
    Outcome: rebuilt as "already finished": no second drain, nothing evicted again
    """
    cluster = make_cluster(time_scale=0.2)
    cluster.add_workload(count=4, grace_s=10)  # 2 s to terminate
    cluster.start_agent()
    notice = _spot_then_kill9(cluster, when)
    shutil.rmtree(cluster.state_dir)
    cluster.start_agent(ready=r"ready: watching IMDS")
    _await_rebuilt_outcome(cluster, when)
    fault_log = rf"state: no state file, but the node's labels name notice {notice.id}"
    cluster.finish().check(notice, fault_log=fault_log)
    if when == "mid-drain":
        assert cluster.find(rf"state rebuilt from the node's labels: notice {notice.id} .*in progress: resuming it")
    else:
        assert len(cluster.find(DRAINED)) == 1, "drained twice"


def _spot_then_kill9(cluster: Cluster, when: str) -> NoticeRef:
    """A spot notice; kill -9 once the drain is under way ("mid-drain") or finished ("after-drain")."""
    notice = cluster.spot(40)
    if when == "mid-drain":
        cluster.daemon.wait_line(r"draining \d+ pods", timeout_s=20)
        assert wait_for(lambda: len(cluster.evictions()) >= 2, 10)
    else:  # the "drained" line comes just before the final label write: kill only after it
        cluster.daemon.wait_line(DRAINED, timeout_s=20)
        assert wait_for(lambda: _agent_label(cluster) == "drained", 10), cluster.daemon.output()
    cluster.kill9()
    return notice


def _await_rebuilt_outcome(cluster: Cluster, when: str) -> None:
    """After the restart: a finished drain is only recognised (then a few more polls); any other is drained."""
    if when == "after-drain":
        cluster.daemon.wait_line(r"state rebuilt from the node's labels: .*already finished", timeout_s=10)
        cluster.wait_polls(3)
    else:
        cluster.daemon.wait_line(DRAINED, timeout_s=30)


def _agent_label(cluster: Cluster) -> str:
    return cluster.labels().get("nodeagent.io/agent", "")
