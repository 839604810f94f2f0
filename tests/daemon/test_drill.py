"""`nodeagent drill` as a real process: the real pipeline against the Kubernetes simulator over
HTTPS, with a "real" IMDS (an ImdsSim on loopback) that the drill reads its identity from."""
from __future__ import annotations

import re
import subprocess
import sys

import requests

from nodeagent.state import ACTING, AgentState, NoticeRecord, StateStore
from tests.cluster import INSTANCE_ID, NODE
from tests.helpers import REPO, Daemon, run_cli, wait_for

WRITE_METHODS = ("POST", "PATCH", "PUT", "DELETE")


def writes(kube):
    """Requests that could change something (SelfSubjectReview is a read in disguise)."""
    return [r for r in list(kube.requests) if r.method in WRITE_METHODS and r.resource != "selfsubjectreviews"]


def test_drill_drains_the_node_and_prints_a_timeline(cluster_with_pods, tmp_path):
    result = run_cli(["drill", "--yes", "--in", "30s"], cluster_with_pods.env())
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert cluster_with_pods.evictable_left() == []
    node = cluster_with_pods.kube.node(NODE)
    assert node["spec"]["unschedulable"] is True
    assert cluster_with_pods.labels()["nodeagent.io/agent"] == "drained"
    # The timeline: offsets, who, what -- in order.
    timeline = [line for line in out.splitlines() if re.match(r"\s+\+\s*\d+\.\d\ds\s", line)]
    texts = " | ".join(timeline)
    order = ["spot-itn notice posted", "notice spot-itn-", "cordoned " + NODE, "draining 5 pods",
             "drained: 5 evicted", "response ended: phase done"]
    positions = [texts.find(part) for part in order]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), texts
    assert f"instance {INSTANCE_ID} in us-east-1a, spot" in out
    assert "drill PASSED" in out
    # The daemon's state directory was not touched: the drill used its own.
    assert not (tmp_path / "state").exists()


def test_dry_run_changes_nothing(cluster_with_pods):
    node_before = cluster_with_pods.kube.node(NODE)
    pods_before = {p["metadata"]["uid"]: p["metadata"]["resourceVersion"] for p in cluster_with_pods.kube.pods(node=NODE)}
    result = run_cli(["drill", "--dry-run", "--in", "30s", "--undo"], cluster_with_pods.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DRY RUN" in result.stdout and "(dry run)" in result.stdout
    node_after = cluster_with_pods.kube.node(NODE)
    assert node_after["metadata"]["resourceVersion"] == node_before["metadata"]["resourceVersion"]
    assert node_after["metadata"]["labels"] == node_before["metadata"]["labels"]
    assert not node_after["spec"].get("unschedulable")
    pods_after = {p["metadata"]["uid"]: p["metadata"]["resourceVersion"] for p in cluster_with_pods.kube.pods(node=NODE)}
    assert pods_after == pods_before
    assert cluster_with_pods.kube.events() == []
    # It did go through the motions: every write carried dryRun=All, evictions and the cordon included.
    sent = writes(cluster_with_pods.kube)
    assert sent and all(r.query.get("dryRun") == "All" for r in sent), [(r.method, r.path, r.query) for r in sent]
    assert len([r for r in sent if r.subresource == "eviction"]) == len(cluster_with_pods.workload)
    assert [r for r in sent if r.resource == "nodes" and r.method == "PATCH"]
    assert [r for r in sent if r.resource == "events"]


def test_without_yes_it_refuses_and_touches_nothing(cluster_with_pods):
    result = run_cli(["drill", "--in", "30s"], cluster_with_pods.env())
    assert result.returncode == 2
    assert "--yes" in result.stderr and "--dry-run" in result.stderr
    assert list(cluster_with_pods.kube.requests) == []
    assert cluster_with_pods.imds.request_log == []


def test_refuses_while_the_daemon_handles_a_real_notice(cluster_with_pods, tmp_path):
    state = AgentState(agent_state="draining")
    state.notices["spot-itn-real"] = NoticeRecord(
        id="spot-itn-real", kind="spot-itn", action="terminate", deadline="2030-01-01T00:00:00Z",
        first_seen="2030-01-01T00:00:00Z", response="drain", phase=ACTING)
    state.last_notice = "spot-itn-real"
    StateStore(str(tmp_path / "state")).save(state)
    result = run_cli(["drill", "--yes", "--in", "30s"], cluster_with_pods.env())
    assert result.returncode == 75, result.stdout + result.stderr
    assert "a real notice is being handled" in result.stderr and "spot-itn-real" in result.stderr
    assert writes(cluster_with_pods.kube) == []


def test_undo_puts_the_node_back(cluster_with_pods):
    result = run_cli(["drill", "--yes", "--in", "30s", "--undo"], cluster_with_pods.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--undo: uncordoned" in result.stdout
    assert not cluster_with_pods.kube.node(NODE)["spec"].get("unschedulable")
    assert not [k for k in cluster_with_pods.labels() if k.startswith("nodeagent.io/") or "exclude-from" in k]
    assert cluster_with_pods.evictable_left() == []  # the pods were really evicted
    reasons = [e["reason"] for e in cluster_with_pods.kube.events()]
    assert reasons[-1] == "NodeUncordoned"


def test_imds_unreachable_needs_node_name(cluster_with_pods, tmp_path):
    result = run_cli(["drill", "--yes", "--in", "30s"], cluster_with_pods.env(IMDS_URL="http://127.0.0.1:9"))
    assert result.returncode == 1
    assert "IMDS at http://127.0.0.1:9 is unreachable" in result.stderr and "NODE_NAME" in result.stderr
    assert writes(cluster_with_pods.kube) == []
    # With NODE_NAME, the drill takes the identity the Node's providerID claims.
    result = run_cli(["drill", "--dry-run", "--in", "30s"], cluster_with_pods.env(IMDS_URL="http://127.0.0.1:9", NODE_NAME=NODE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from the Node's providerID (IMDS unreachable" in result.stdout
    assert f"instance {INSTANCE_ID} in us-east-1a, spot" in result.stdout


def test_rebalance_drill_cordons_by_config(cluster_with_pods):
    result = run_cli(["drill", "--yes", "--kind", "rebalance", "--in", "20s"], cluster_with_pods.env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "response: cordon (ON_REBALANCE)" in result.stdout
    assert cluster_with_pods.kube.node(NODE)["spec"]["unschedulable"] is True
    assert len(cluster_with_pods.evictable_left()) == len(cluster_with_pods.workload)  # cordon only


def test_another_process_cannot_steer_a_rebalance_drill_into_a_drain(cluster_with_pods):
    """A local user finds the drill's IMDS port and posts a spot notice of their own
    (zero seconds) to turn a cordon-only rebalance drill into a drain. The drill's IMDS has no
    control API, so the drill stays a cordon and nothing is evicted."""
    process = subprocess.Popen([sys.executable, "-m", "nodeagent", "drill", "--yes", "--kind", "rebalance",
                                "--in", "20s"], env=cluster_with_pods.env(), cwd=str(REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = []
    answers = []
    try:
        for line in process.stdout:
            lines.append(line)
            found = re.search(r"drill IMDS (http://127\.0\.0\.1:\d+)", line)
            if found:
                url = found.group(1)
                for path in ("/_sim/spot", "/_sim/asg", "/latest/meta-data/spot/instance-action"):
                    doc = {"in": 0, "action": "terminate", "state": "Terminated"}
                    answers.append((path, requests.post(url + path, json=doc, timeout=5).status_code))
                break
        out, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = "".join(lines) + out
    assert answers and all(status in (404, 405) for _, status in answers), (answers, text)
    assert process.returncode == 0, text
    assert not re.search(r"notice spot-itn-|\(spot-itn: ", text), text
    assert cluster_with_pods.kube.node(NODE)["spec"]["unschedulable"] is True
    assert len(cluster_with_pods.evictable_left()) == len(cluster_with_pods.workload), text
    assert not [r for r in writes(cluster_with_pods.kube) if r.subresource == "eviction"], text


def test_undo_leaves_the_node_alone_when_a_real_notice_arrives_during_the_drill(cluster_with_pods):
    """A spot notice reaches the daemon while `drill --yes --undo` runs: the daemon cordons and
    drains the node for real. The drill's --undo must not uncordon it afterwards; it reads the
    daemon's state and the Node again, leaves the node alone and says why."""
    # One pod that a budget keeps from being evicted: both drains last until their deadlines.
    cluster_with_pods.kube.add_pod("ledger-0", "default", node=NODE, labels={"app": "ledger"}, owner_kind="StatefulSet",
                      owner_name="ledger")
    cluster_with_pods.kube.add_pdb("ledger", "default", selector={"app": "ledger"}, min_available=1)
    daemon = Daemon(cluster_with_pods.env(FORCE_AT_DEADLINE="false")).start()
    drill = None
    try:
        daemon.wait_line("ready: watching IMDS", 20)
        drill = subprocess.Popen([sys.executable, "-m", "nodeagent", "drill", "--yes", "--undo", "--in", "12s"],
                                 env=cluster_with_pods.env(FORCE_AT_DEADLINE="false"), cwd=str(REPO),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in drill.stdout:
            lines.append(line)
            if re.search(r"cordoned " + re.escape(NODE), line):
                break
        cluster_with_pods.imds.schedule_spot(120)
        real = daemon.wait_line(r"notice spot-itn-\S+.*response: drain", 20)
        real_id = re.search(r"notice (spot-itn-\S+?):?\s", real.text).group(1)
        wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/notice-id") == real_id, 10)
        out, _ = drill.communicate(timeout=90)
        text = "".join(lines) + out
    finally:
        if drill is not None and drill.poll() is None:
            drill.kill()
            drill.wait()
        daemon.stop()
    assert "--undo skipped:" in text and "says a real notice is being handled" in text, text
    assert "--undo: uncordoned" not in text, text
    assert cluster_with_pods.kube.node(NODE)["spec"]["unschedulable"] is True, "the drill uncordoned a node a real notice holds"
    assert cluster_with_pods.labels().get("nodeagent.io/notice-id") == real_id
    assert "NodeUncordoned" not in [e["reason"] for e in cluster_with_pods.kube.events()]
