"""`nodeagent status`: the JSON schema key by key and type by type, field values against a running
daemon and the simulators, the text form, and a user who may not read the state file."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from nodeagent import __version__
from nodeagent.state import ACTING, AgentState, NoticeRecord, StateStore
from nodeagent.status import STATUS_SCHEMA
from tests.cluster import INSTANCE_ID, NODE
from tests.helpers import REPO, Daemon, run_cli, wait_for

TYPES = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None),
    "object": dict, "array[string]": list,
}


def flatten(report):
    """{'daemon.pid': 12, ...} for every key, one level of nesting (as STATUS_SCHEMA lists them)."""
    flat = {}
    for key, value in report.items():
        flat[key] = value
        if isinstance(value, dict) and key != "config":
            for member, inner in value.items():
                flat[f"{key}.{member}"] = inner
    return flat


def check_schema(report):
    flat = flatten(report)
    present_objects = {key for key, value in report.items() if isinstance(value, dict)}
    expected = {key for key in STATUS_SCHEMA if "." not in key or key.split(".")[0] in present_objects}
    assert set(flat) == expected, (set(flat) ^ expected)
    for key, value in flat.items():
        kinds = STATUS_SCHEMA[key].split(" ")[0].split("|")
        assert any(isinstance(value, TYPES[kind]) and not (kind in ("integer", "number") and isinstance(value, bool))
                   for kind in kinds), (key, value, kinds)
        if STATUS_SCHEMA[key] == "array[string]":
            assert all(isinstance(item, str) for item in value), key
    for key, entry in report["config"].items():
        assert set(entry) == {"value", "source"} and all(isinstance(v, str) for v in entry.values()), key


def status_json(env, *extra):
    result = run_cli(["status", "--json", *extra], env)
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def test_json_schema_and_fields_against_a_running_daemon(cluster_with_pods):
    env = cluster_with_pods.env(WEBHOOK_URL="https://hooks.example.com/services/SECRET")
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        # READY=1 does not wait for Kubernetes (a hung credential plugin must not hold it)
        assert wait_for(lambda: status_json(env, "--no-probe")[1]["daemon"]["status"].startswith("watching IMDS"), 10)
        code, idle = status_json(env)
        cluster_with_pods.imds.schedule_spot(30)
        daemon.wait_line(r"drained: 5 evicted", timeout_s=20)
        assert wait_for(lambda: status_json(env, "--no-probe")[1]["daemon"]["agent_state"] == "drained", 10)
        code_after, after = status_json(env)
    finally:
        assert daemon.stop() == 0
    for report in (idle, after):
        check_schema(report)
    assert code == 0 and idle["healthy"] is True and idle["problems"] == []
    assert idle["schema"] == 1 and idle["version"] == __version__
    daemon_part = idle["daemon"]
    assert daemon_part["running"] is True and daemon_part["pid"] == daemon.process.pid
    assert daemon_part["agent_state"] == "watching" and daemon_part["busy"] is False
    assert daemon_part["status"].startswith("watching IMDS") and daemon_part["state_file_error"] is None
    assert daemon_part["state_file"].endswith("/state/state.json") and daemon_part["notices_recorded"] == 0
    assert idle["last_notice"] is None and idle["drain_progress"] is None
    imds = idle["imds"]
    assert imds["checked"] is True and imds["reachable"] is True and imds["url"] == cluster_with_pods.imds.url
    assert imds["instance_id"] == INSTANCE_ID and imds["availability_zone"] == "us-east-1a"
    assert imds["life_cycle"] == "spot" and imds["instance_type"] == "m5.large" and imds["error"] is None
    api = idle["api"]
    assert api["reachable"] is True and api["server"] == cluster_with_pods.kube.url and api["node"] == NODE
    assert api["node_from"] == "SelfSubjectReview" and api["unschedulable"] is False
    assert api["agent_label"] == "watching" and api["version_label"] == __version__
    assert api["latency_ms"] >= 0 and imds["latency_ms"] >= 0
    assert idle["config"]["WEBHOOK_URL"] == {"value": "<set, hidden>", "source": "env NODEAGENT_WEBHOOK_URL"}
    assert idle["config"]["ON_SPOT_INTERRUPTION"] == {"value": "drain", "source": "default"}
    assert "SECRET" not in json.dumps(idle)

    assert code_after == 0
    notice = after["last_notice"]
    assert notice["id"].startswith("spot-itn-") and notice["kind"] == "spot-itn" and notice["action"] == "terminate"
    assert notice["response"] == "drain" and notice["phase"] == "done" and notice["cordoned"] is True
    assert (notice["evicted"], notice["forced"], notice["failed"], notice["left"]) == (5, 0, 0, [])
    assert notice["drain_started"] and notice["drain_finished"] and notice["outcome"].startswith("drained: 5")
    assert 0 < notice["deadline_in_s"] <= 30
    assert after["daemon"]["agent_state"] == "drained" and after["daemon"]["notices_recorded"] == 1
    assert after["api"]["unschedulable"] is True and after["api"]["agent_label"] == "drained"


def test_busy_state_shows_drain_progress_and_a_dead_daemon(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])  # a live pid that is not nodeagent
    try:
        state = AgentState(agent_state="draining", status="draining: 3/8 pods gone, deadline in 60s", pid=sleeper.pid)
        state.notices["spot-itn-x"] = NoticeRecord(
            id="spot-itn-x", kind="spot-itn", action="terminate", deadline="2099-01-01T00:00:00Z",
            first_seen="2098-12-31T23:58:00Z", response="drain", phase=ACTING, cordoned=True,
            drain_started="2098-12-31T23:58:01Z")
        state.last_notice = "spot-itn-x"
        state.drain_progress = {"notice": "spot-itn-x", "gone": 3, "total": 8, "deadline": "2099-01-01T00:00:00Z"}
        StateStore(str(tmp_path / "state")).save(state)
        from tests.helpers import daemon_env

        env = daemon_env(tmp_path)
        code, report = status_json(env, "--no-probe")
        text = run_cli(["status", "--no-probe"], env).stdout
    finally:
        sleeper.kill()
        sleeper.wait()
    check_schema(report)
    assert code == 1 and report["healthy"] is False
    assert report["problems"] == ["the daemon is not running"]
    assert report["daemon"]["running"] is False and report["daemon"]["busy"] is True
    assert report["drain_progress"]["gone"] == 3 and report["drain_progress"]["total"] == 8
    assert report["drain_progress"]["deadline_in_s"] > 0
    assert report["last_notice"]["phase"] == "acting" and report["last_notice"]["drain_finished"] is None
    assert report["imds"]["checked"] is False and report["imds"]["reachable"] is None
    assert report["api"]["checked"] is False and report["api"]["node"] is None
    assert "BUSY: a notice is being handled" in text and "drain:       3/8 pods gone" in text
    assert "IMDS:        not probed (--no-probe)" in text


def test_text_output(cluster_with_pods):
    env = cluster_with_pods.env()
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        result = run_cli(["status"], env)
    finally:
        assert daemon.stop() == 0
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"nodeagent {__version__} status (")
    text = result.stdout
    assert f"daemon:      running (pid {daemon.process.pid}); node watching" in text
    assert "last notice: none" in text
    assert f"IMDS:        reachable at {cluster_with_pods.imds.url}" in text and f"{INSTANCE_ID} m5.large in us-east-1a, spot" in text
    assert f"API:         reachable at {cluster_with_pods.kube.url}" in text
    assert f"node {NODE} (from SelfSubjectReview), schedulable, nodeagent.io/agent=watching" in text
    assert "config:      responses: spot-itn=drain rebalance=cordon scheduled=drain asg=drain" in text
    assert "problems:    none" in text


def test_unreachable_endpoints_are_problems_not_crashes(tmp_path):
    from tests.helpers import daemon_env

    env = daemon_env(tmp_path, IMDS_URL="http://127.0.0.1:9", KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    code, report = status_json(env)
    check_schema(report)
    assert code == 1
    assert report["imds"]["reachable"] is False and "refused" in report["imds"]["error"]
    assert report["api"]["reachable"] is False and "does not exist" in report["api"]["error"]
    assert len(report["problems"]) == 3  # no state file, IMDS, API


def _without_file_read_privileges():
    """Run as a user who cannot read a mode-000 file: as root, drop CAP_DAC_OVERRIDE/READ_SEARCH."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv: cannot make a file unreadable to ourselves")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search"]


def test_an_unreadable_state_file_is_reported_not_a_crash(tmp_path):
    StateStore(str(tmp_path / "state")).save(AgentState())
    state_file = tmp_path / "state" / "state.json"
    os.chmod(state_file, 0)
    from tests.helpers import daemon_env

    env = daemon_env(tmp_path)
    prefix = _without_file_read_privileges()
    outputs = {}
    for flag in ("--json", None):
        command = prefix + [sys.executable, "-m", "nodeagent", "status", "--no-probe"] + ([flag] if flag else [])
        result = subprocess.run(command, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 1
        outputs[flag] = result.stdout
    report = json.loads(outputs["--json"])
    check_schema(report)
    assert report["daemon"]["state_file_error"] == f"cannot read {state_file}: permission denied (run as root, or with sudo)"
    assert report["daemon"]["running"] is None and report["daemon"]["busy"] is None
    assert report["problems"] == [report["daemon"]["state_file_error"]]
    assert f"daemon:      unknown: cannot read {state_file}: permission denied" in outputs[None]
