"""`nodeagent demo`: the whole pipeline against both simulators, with a timeline.

A spot node with about 30 pods (ReplicaSet, StatefulSet, DaemonSet, mirror, critical, PDB-guarded)
gets a rebalance recommendation (-> cordon), then a spot interruption notice (-> drain by the
deadline). The simulated pods terminate at a time-scale so the demo takes seconds, not minutes.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from typing import Dict, List

from nodeagent import config
from nodeagent.agent import Agent
from nodeagent.kube.responder import KubeResponder
from nodeagent.timeline import NullNotifier, Timeline, TimelineHandler, wait_until

NODE = "ip-10-0-1-2.ec2.internal"
INSTANCE_ID = "i-0123456789abcdef0"
ZONE = "us-east-1a"


def populate(sim) -> List[str]:
    """~30 pods of every sort. Returns the keys of the pods that must be evicted."""
    sim.add_node(NODE, provider_id=f"aws:///{ZONE}/{INSTANCE_ID}",
                 labels={"lifecycle": "Ec2Spot", "kubernetes.io/hostname": NODE})
    evictable: List[str] = []

    def pod(name: str, namespace: str = "default", **kwargs) -> None:
        sim.add_pod(name, namespace, node=NODE, **kwargs)

    for i in range(8):
        pod(f"web-7d9f-{i}", labels={"app": "web"}, owner_kind="ReplicaSet", owner_name="web-7d9f")
        evictable.append(f"default/web-7d9f-{i}")
    sim.add_pdb("web", "default", selector={"app": "web"}, min_available=6)
    for i in range(6):
        pod(f"api-5c4b-{i}", labels={"app": "api"}, owner_kind="ReplicaSet", owner_name="api-5c4b", grace_s=45)
        evictable.append(f"default/api-5c4b-{i}")
    for i in range(3):
        pod(f"db-{i}", labels={"app": "db"}, owner_kind="StatefulSet", owner_name="db", grace_s=60)
        evictable.append(f"default/db-{i}")
    sim.add_pdb("db", "default", selector={"app": "db"}, max_unavailable=1)
    pod("report-batch", grace_s=10)
    pod("scratch-cache", emptydir=True, owner_kind="ReplicaSet", owner_name="scratch")
    pod("slow-shutdown", grace_s=600, owner_kind="ReplicaSet", owner_name="slow")
    evictable += ["default/report-batch", "default/scratch-cache", "default/slow-shutdown"]
    for i in range(2):
        pod(f"coredns-{i}", "kube-system", priority_class="system-cluster-critical",
            owner_kind="ReplicaSet", owner_name="coredns", labels={"k8s-app": "kube-dns"})
        evictable.append(f"kube-system/coredns-{i}")
    pod("metrics-server-0", "kube-system", priority_class="system-cluster-critical",
        owner_kind="ReplicaSet", owner_name="metrics-server")
    evictable.append("kube-system/metrics-server-0")
    for name in ("aws-node", "kube-proxy", "ebs-csi-node", "fluent-bit"):
        pod(f"{name}-x7k2p", "kube-system", owner_kind="DaemonSet", owner_name=name,
            priority_class="system-node-critical")
    pod(f"kube-scheduler-probe-{NODE}", "kube-system", mirror=True)
    pod("db-migrate-28391", owner_kind="Job", owner_name="db-migrate", phase="Succeeded")
    pod("nightly-report-1", owner_kind="Job", owner_name="nightly-report")
    evictable.append("default/nightly-report-1")
    return evictable


def main_demo(args) -> int:
    from nodeagent_sim.imds import ImdsSim
    from nodeagent_sim.kube import KubeSim

    quick = bool(getattr(args, "quick", False))
    timeline = Timeline(time.monotonic())
    workdir = tempfile.mkdtemp(prefix="nodeagent-demo-")
    imds = ImdsSim(instance_id=INSTANCE_ID, availability_zone=ZONE, local_hostname=NODE, life_cycle="spot").start()
    kube = KubeSim(time_scale=0.05, replace_evicted=True).start()
    try:
        return _run(imds, kube, workdir, timeline, quick)
    finally:
        kube.stop()
        imds.stop()


def _run(imds, kube, workdir: str, timeline: Timeline, quick: bool) -> int:
    evictable = populate(kube)
    kubeconfig = kube.write_kubeconfig(f"{workdir}/kubeconfig", kube.add_node_token(NODE))
    settings = config.load_settings([], {}, {
        "IMDS_URL": imds.url, "KUBECONFIG": kubeconfig, "STATE_DIR": f"{workdir}/state",
        "POLL_INTERVAL": "0.5s", "POLL_INTERVAL_REBALANCE": "1s", "POLL_INTERVAL_SCHEDULED": "1s", "DRAIN_MARGIN": "3s", "DRAIN_WINDOW": "30s",
    })
    print(f"nodeagent demo: IMDS simulator {imds.url}, Kubernetes API simulator {kube.url}")
    print(f"node {NODE}: {len(kube.pods(node=NODE))} pods, {len(evictable)} of them evictable; "
          "pods' grace runs at 1/20 speed\n")
    handler = TimelineHandler(timeline)
    root = logging.getLogger("nodeagent")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    agent = Agent(settings, KubeResponder(settings), notifier=NullNotifier(timeline))
    runner = threading.Thread(target=agent.run, name="agent", daemon=True)
    runner.start()
    try:
        if not wait_until(lambda: agent.responder_ready, 20):
            timeline.say("demo", "the agent did not get ready")
            return 1
        timeline.say("imds", "rebalance recommendation posted")
        imds.set_rebalance()
        wait_until(lambda: bool((kube.node(NODE) or {}).get("spec", {}).get("unschedulable")), 10)
        time.sleep(1.0)
        notice_in = 20 if quick else 30
        timeline.say("imds", f"spot interruption notice: terminate in {notice_in}s")
        imds.schedule_spot(notice_in, "terminate")
        finished = wait_until(lambda: _spot_done(agent), notice_in + 5)
        timeline.say("demo", "drain finished" if finished else "deadline reached")
    finally:
        agent.request_stop()
        runner.join(timeout=15)
    return _report(kube, evictable)


def _spot_done(agent: Agent) -> bool:
    return any(r.kind == "spot-itn" and r.phase in ("done", "expired") for r in agent.state.notices.values())


def _report(kube, evictable: List[str]) -> int:
    node = kube.node(NODE) or {}
    remaining: Dict[str, str] = {}
    for pod in kube.pods(node=NODE):
        meta = pod["metadata"]
        key = f"{meta['namespace']}/{meta['name']}"
        remaining[key] = "terminating" if meta.get("deletionTimestamp") else pod.get("status", {}).get("phase", "?")
    left = [key for key in evictable if key in remaining]
    taints = ", ".join(f"{t['key']}:{t['effect']}" for t in node.get("spec", {}).get("taints") or [])
    labels = {k: v for k, v in (node.get("metadata", {}).get("labels") or {}).items()
              if k.startswith("nodeagent.io/") or "exclude-from" in k or k == "lifecycle"}
    print("\nfinal state")
    print(f"  node {NODE}: unschedulable={node.get('spec', {}).get('unschedulable', False)}; taints: {taints or 'none'}")
    print(f"  labels: {', '.join(f'{k}={v}' for k, v in sorted(labels.items()))}")
    print(f"  pods still on the node: {len(remaining)} "
          f"({', '.join(sorted(remaining)) if remaining else 'none'})")
    print(f"  evictable pods left: {len(left)}{' -> ' + ', '.join(left) if left else ''}")
    requests = kube.count() if hasattr(kube, "count") else len(kube.requests)
    print(f"  API requests made by the agent: {requests}")
    return 1 if left else 0
