"""Fault matrix, Kubernetes API: outages, 5xx/429 on every kind of call, cut watches, pods that
vanish mid-eviction, a missing Node object, bad kubeconfigs, a failing or hung exec plugin.

Every case: the real daemon against ImdsSim and KubeSim (HTTPS, the node's own credentials); the
five checks of tests.cluster.Cluster.check.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from nodeagent_sim.kube import KubeSim
from tests.cluster import NODE, PROVIDER, Cluster
from tests.faults.conftest import run_background
from tests.helpers import wait_for

DRAINED = r"drained: "
NOT_READY = r"Kubernetes not ready yet \(.*\); acting as soon as it is"


# ---------------------------------------------------------------------------- outages


def api_down_twice(tmp: Path) -> Cluster:
    cluster = Cluster(tmp)
    cluster.add_workload(count=8, grace_s=20)
    cluster.start_agent(DRAIN_PARALLELISM="1")
    # Evictions take 0.4 s each, so the drain is still evicting when the second outage starts.
    cluster.kube.inject(count=1000, status=None, delay_s=0.4, method="POST", path_regex=r"/eviction$")
    notice = cluster.spot(90)
    cluster.kube.down_for(30)
    cluster.daemon.wait_line(r"cordon failed \(.*\); retrying until the deadline", timeout_s=10)
    assert wait_for(lambda: len([r for r in cluster.evictions() if r.status == 201]) >= 3, 45)
    assert not cluster.daemon.find(DRAINED)
    cluster.kube.down_for(30)
    cluster.daemon.wait_line(DRAINED, timeout_s=60)
    cluster.notice = notice  # type: ignore[attr-defined]
    return cluster.finish()


@pytest.mark.background(scenario=api_down_twice)
def test_api_down_30s_at_notice_and_30s_mid_drain(background, request):
    """Case: the API is down (connections refused) for 30 s from the moment the notice appears, and again for 30 s in the middle of the drain (after 3 of 9 evictions); 90 s notice
    Outcome: "cordon failed (...); retrying until the deadline" and "pod watch broke ... re-listing" are logged; the cordon lands when the API is back, evictions resume after the second outage without repeating the accepted ones, and the node is drained before the deadline
    """
    cluster = run_background(background, request)
    cluster.check(cluster.notice, fault_log=r"cordon failed \(.*\); retrying until the deadline")
    assert cluster.find(r"pod watch broke|API unreachable while evicting")


def api_down_past_deadline(tmp: Path) -> Cluster:
    cluster = Cluster(tmp)
    cluster.add_workload()
    cluster.start_agent()
    notice = cluster.spot(15)
    cluster.kube.down_for(25)
    cluster.daemon.wait_line(r"cordon did not succeed before the deadline", timeout_s=30)
    wait_for(lambda: not cluster.kube.is_down(), 30)
    cluster.wait_polls(4)  # the API is back after the deadline: nothing may be written now
    cluster.notice = notice  # type: ignore[attr-defined]
    return cluster.finish()


@pytest.mark.background(scenario=api_down_past_deadline)
def test_api_down_until_after_the_deadline(background, request):
    """Case: the API is down from the notice until 10 s after its deadline (15 s notice)
    Outcome: the cordon is retried until the deadline, then "cordon did not succeed before the deadline" is logged and the notice is closed; when the API comes back nothing at all is written (no cordon, no label, no eviction after the deadline)
    """
    cluster = run_background(background, request)
    cluster.check(cluster.notice, drained=False, fault_log=r"cordon did not succeed before the deadline")


# ---------------------------------------------------------------------------- error answers


ERRORS = {
    "patch-503": (dict(status=503, method="PATCH", path_regex=r"/nodes/"), r"cordon failed \(.*HTTP 503.*\); retrying"),
    "patch-429": (dict(status=429, method="PATCH", path_regex=r"/nodes/"), r"cordon failed \(.*HTTP 429.*\); retrying"),
    "eviction-500": (dict(status=500, method="POST", path_regex=r"/eviction$"), r"eviction of \S+ got HTTP 500; retrying"),
    "eviction-429": (dict(status=429, method="POST", path_regex=r"/eviction$"), r"the API server is throttling this node"),
    "list-500": (dict(status=500, method="GET", path_regex=r"^/api/v1/pods$"), r"listing this node's pods failed \(.*HTTP 500"),
    "list-429": (dict(status=429, method="GET", path_regex=r"^/api/v1/pods$"), r"listing this node's pods failed \(.*HTTP 429"),
}


@pytest.mark.parametrize("fault", list(ERRORS))
def test_error_answers(make_cluster, fault):
    """5xx and 429 answers on the node patch, on evictions and on the pod list.

    Case: the node PATCH (cordon, labels) answers 503, or 429 "Too many requests", 5 times
    Outcome: retried with backoff (0.2 s to 1 s) until the deadline, one "cordon failed (... HTTP 503 ...); retrying until the deadline" line; cordoned and drained
    Case: evictions answer 500, or 429 without a PDB message, 8 times
    Outcome: each pod's eviction is retried with backoff, "eviction of <pod> got HTTP 500; retrying" once per status; a 429 that does not name a disruption budget is a throttling answer, not a PDB refusal: it pauses all of the node's requests ("the API server is throttling this node"); drained
    Case: the pod list answers 500 or 429, 3 times
    Outcome: "listing this node's pods failed (...); retrying until the deadline" once; drained
    """
    inject, log_line = ERRORS[fault]
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.wait_startup_writes(timeout_s=30)  # else startup's node writes take the injected answers
    count = 8 if "eviction" in fault else 5 if "patch" in fault else 3
    cluster.kube.inject(count=count, **inject)
    notice = cluster.spot(30)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=log_line)
    assert cluster.kube.count(status=inject["status"]) == count


# ---------------------------------------------------------------------------- watches, vanishing pods


WATCH_LOGS = {
    "abrupt": r"pod watch broke \(watch /api/v1/pods ended: .*\); re-listing",
    "clean": r"pod watch ended by the server; resuming from resourceVersion \d+",
}


@pytest.mark.parametrize("how", list(WATCH_LOGS))
def test_watch_stream_cut(make_cluster, how):
    """Case: the pod watch is reset mid-stream, twice, while the drain waits for pods to go
    Outcome: "pod watch broke (watch ... ended: ...); re-listing": the list shows which pods went meanwhile, the watch resumes, and the drain finishes as the pods go
    Case: the watch stream ends cleanly (as at the server's timeout), twice
    Outcome: "pod watch ended by the server; resuming from resourceVersion N": no event is lost, the drain finishes
    """
    cluster = make_cluster(time_scale=0.1)  # a 30 s grace lasts 3 s: the drain waits on the watch
    cluster.add_workload()
    cluster.start_agent()
    notice = cluster.spot(30)
    cluster.daemon.wait_line(r"draining \d+ pods", timeout_s=10)
    for _ in range(2):
        assert wait_for(lambda: cluster.kube.open_watches() > 0, 5)
        cluster.kube.cut_watches(abrupt=how == "abrupt")  # the next round waits for the new watch
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=WATCH_LOGS[how])


def test_pod_vanishes_while_being_evicted(make_cluster):
    """Case: a pod is deleted by its controller while its eviction request is in flight (the eviction then gets 404)
    Outcome: "<pod> was already gone (HTTP 404 to its eviction); counted as evicted": no retry, no failure; drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    held = cluster.kube.inject(count=1, status=None, delay_s=1.5, method="POST", path_regex=r"/web-0/eviction$")
    notice = cluster.spot(30)
    wait_for(lambda: held.hits == 1, 10)  # the eviction of web-0 is being held by the server now
    cluster.kube.delete_pod("default", "web-0", grace=0)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=r"default/web-0 was already gone \(HTTP 404 to its eviction\)")
    assert [r.status for r in cluster.evictions("web-0")] == [404]


# ---------------------------------------------------------------------------- the Node object


def _threads(cluster: Cluster) -> int:
    status = Path(f"/proc/{cluster.daemon.process.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def test_node_object_missing_at_start(make_cluster):
    """Case: this node's Node object does not exist when the agent starts (exec-plugin credentials); a notice comes; the kubelet registers the node 4 s later
    Outcome: "Kubernetes not ready: node '<name>' (from SelfSubjectReview) could not be read: ... 404" once, retried every poll without piling up threads; the notice waits ("acting as soon as it is") and the node is cordoned and drained once it exists
    """
    cluster = make_cluster(exec_plugin=True)
    cluster.add_workload()
    node = cluster.kube.node(NODE)
    cluster.kube.delete_node(NODE)
    cluster.start_agent(ready=r"could not be read")
    notice = cluster.spot(30)
    cluster.daemon.wait_line(NOT_READY, timeout_s=10)
    threads_before = _threads(cluster)

    def node_reads() -> int:
        return cluster.kube.count(method="GET", status=404, path_regex=rf"/nodes/{re.escape(NODE)}$")

    reads_before = node_reads()
    wait_for(lambda: node_reads() >= reads_before + 5, 20)  # 5 startup retries
    assert _threads(cluster) <= threads_before + 2, "a thread per startup retry"
    cluster.kube.add_node(NODE, provider_id=PROVIDER, labels=node["metadata"]["labels"])
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=rf"Kubernetes not ready: node '{NODE}' \(from SelfSubjectReview\) could not be read: .*404")
    assert len(cluster.find(r"^<\d>Kubernetes not ready: .*could not be read")) == 1, "logged on every retry"


def test_node_object_deleted_before_the_notice(make_cluster):
    """Case: the Node object is deleted after the agent started, just before the notice
    Outcome: the cordon and labels get 404: "cannot cordon node <name>: the Node object is missing (...); evicting its pods anyway"; the pods still bound to it are evicted; drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.kube.delete_node(NODE)
    notice = cluster.spot(30)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=rf"cannot cordon node {NODE}: the Node object is missing")


def node_back_after_deadline(tmp: Path) -> Cluster:
    cluster = Cluster(tmp)
    cluster.add_workload()
    node = cluster.kube.node(NODE)
    cluster.kube.delete_node(NODE)
    cluster.start_agent(ready=r"could not be read")
    notice = cluster.spot(12)
    cluster.daemon.wait_line(NOT_READY, timeout_s=10)
    wait_for(lambda: time.monotonic() > notice.deadline_mono + 1, 30)
    cluster.kube.add_node(NODE, provider_id=PROVIDER, labels=node["metadata"]["labels"])
    cluster.daemon.wait_line(r"passed before Kubernetes was ready; not acting", timeout_s=10)
    cluster.wait_polls(4)  # nothing may be written after the deadline, now that the API can be reached
    cluster.notice = notice  # type: ignore[attr-defined]
    return cluster.finish()


@pytest.mark.background(scenario=node_back_after_deadline)
def test_node_object_back_only_after_the_deadline(background, request):
    """Case: the Node object is missing from before the notice until after its deadline (12 s notice)
    Outcome: the waiting plan is dropped when Kubernetes becomes ready: "its deadline ... passed before Kubernetes was ready; not acting"; no cordon, notice label, eviction or event after the deadline (only the agent's own presence labels at startup)
    """
    cluster = run_background(background, request)
    # The five checks, with "nothing after the deadline" read as "nothing about the notice": the
    # late startup still writes the agent's own presence labels (and a dry-run taint probe).
    assert cluster.alive_at_end and cluster.exit_codes[-1] == 0
    assert cluster.find(r"passed before Kubernetes was ready; not acting")
    assert len(cluster.find(rf"notice {cluster.notice.id} \(.*; response: ")) == 1
    assert cluster.state()["notices"][cluster.notice.id]["phase"] == "expired"
    late = [r for r in cluster.writes_after(cluster.notice.deadline_mono) if "/nodes/" not in r.path]
    assert not late, late  # no eviction, no pod delete, no event
    node = cluster.kube.node(NODE)
    assert not node["spec"].get("unschedulable"), "cordoned after the deadline"
    assert not {"nodeagent.io/notice-id", "nodeagent.io/interruption"} & set(node["metadata"]["labels"])
    assert not cluster.evictions()


# ---------------------------------------------------------------------------- kubeconfig


def _break_kubeconfig(path: Path, how: str, good: bytes) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    if how == "unreadable":
        path.mkdir()  # root reads any file; a directory cannot be read as one
    elif how == "not-utf8":
        path.write_bytes(b"\xff\xfe" + good)
    elif how == "malformed-yaml":
        path.write_text("apiVersion: v1\nclusters: [\n  - name: {broken\n")
    elif how == "not-a-kubeconfig":
        path.write_text("apiVersion: v1\nkind: Config\ncontexts: []\nusers: []\n")
    elif how == "good":
        path.write_bytes(good)


KUBECONFIG_LOGS = {
    "missing": r"waiting for \S+kubeconfig$",
    "unreadable": r"cannot read kubeconfig \S+: .*Is a directory",
    "not-utf8": r"cannot read kubeconfig \S+: .*codec can't decode",
    "malformed-yaml": r"kubeconfig \S+ is not valid YAML",
    "not-a-kubeconfig": r"kubeconfig has no context named",
}


def test_kubeconfig_missing_unreadable_or_malformed(make_cluster):
    """Case: with a notice pending, the kubeconfig is missing, then unreadable (a directory), then not UTF-8, then not YAML, then YAML that is not a kubeconfig, and finally good
    Outcome: one clear line for each state, naming the file and the problem ("waiting for <path>", "cannot read kubeconfig ...: Is a directory", "... codec can't decode ...", "... is not valid YAML", "kubeconfig has no context named ..."); the agent keeps watching IMDS, keeps the notice ("acting as soon as it is"), re-reads the file every poll and drains once it is good
    """
    cluster = make_cluster()
    cluster.add_workload()
    path = Path(cluster.kubeconfig)
    good = path.read_bytes()
    _break_kubeconfig(path, "missing", good)
    cluster.start_agent(ready=r"ready: watching IMDS")
    notice = cluster.spot(40)
    cluster.daemon.wait_line(NOT_READY, timeout_s=10)
    for how, pattern in KUBECONFIG_LOGS.items():
        _break_kubeconfig(path, how, good)
        cluster.daemon.wait_line(r"^<\d>" + pattern, timeout_s=10)
        cluster.wait_polls(2)  # retried on the next polls, but not logged again
    _break_kubeconfig(path, "good", good)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.finish().check(notice, fault_log=KUBECONFIG_LOGS["missing"])
    for how, pattern in KUBECONFIG_LOGS.items():
        assert len(cluster.find(r"^<\d>" + pattern)) == 1, f"{how}: logged more than once"


# ---------------------------------------------------------------------------- exec credential plugin


def _plugin_processes(kubeconfig: str) -> int:
    script = kubeconfig + ".exec.py"
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if script.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    count += 1
            except OSError:
                pass
    return count


@pytest.mark.parametrize("how", ["fails", "hangs"])
def test_exec_plugin_fails_or_hangs(make_cluster, how):
    """Case: the kubeconfig's exec credential plugin exits 1 with an error, from start until 4 s after the notice
    Outcome: "Kubernetes not ready: credential plugin '<cmd>' failed: exit status 1: <its stderr>"; retried every poll; the notice waits and the node is drained once the plugin works
    Case: the exec plugin hangs (never answers), EXEC_PLUGIN_TIMEOUT=2s
    Outcome: "credential plugin '<cmd>' did not answer within 2s; killed it": the hung process is killed at the timeout (none left behind), the next poll runs it again, and once it answers the node is drained
    """
    cluster = make_cluster(exec_plugin=True, fail=how == "fails", hang=how == "hangs")
    cluster.add_workload()
    cluster.start_agent(ready=r"Kubernetes not ready: credential plugin")
    notice = cluster.spot(40)
    cluster.daemon.wait_line(NOT_READY, timeout_s=10)
    runs = KubeSim.exec_invocations(cluster.kubeconfig)
    # Two more runs of the plugin: a hung one was killed at its timeout, a failing one failed again.
    wait_for(lambda: KubeSim.exec_invocations(cluster.kubeconfig) >= runs + 2, 20)
    if how == "hangs":
        assert _plugin_processes(cluster.kubeconfig) <= 1, "hung plugins piling up"
    KubeSim.configure_exec(cluster.kubeconfig, fail=False, hang=False)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    log_line = (r"Kubernetes not ready: credential plugin '\S+' failed: exit status 1: error: simulated credential failure"
                if how == "fails" else r"credential plugin '\S+' did not answer within 2s; killed it")
    cluster.finish().check(notice, fault_log=log_line)
    assert _plugin_processes(cluster.kubeconfig) == 0
