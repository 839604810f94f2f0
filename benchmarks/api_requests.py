"""API requests per drain of N pods, counted at the Kubernetes API simulator.

Every request the agent's own identity (system:node:<node>) sends from the notice to the end of
the drain, Events included, by kind. Same scenario as the drain overhead benchmark (benchmarks.drain_overhead) (N evictable pods, 3 DaemonSet
pods, a mirror pod). `kubectl drain` is counted the same way for comparison: it polls every pod
with a GET once a second until the pod is gone.

Target: <= N + 10 requests, and no per-pod polling (no GET of a single pod). The pod list is read
in pages of LIST_PAGE pods (a bound on what one answer may hold), so a node with more pods than
that (500 evictable plus 4 others) pays one request more per further page.

    python -m benchmarks.api_requests [--smoke] [--sizes 10,100,500] [--kubectl-sizes 10,100] [--python PATH]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from benchmarks.drain_overhead import DAEMONSETS, find_kubectl, run_kubectl, run_nodeagent  # noqa: E402
from nodeagent.kube.client import LIST_PAGE  # noqa: E402

NAME = "api_requests"
FIXED_ALLOWANCE = 10


def allowance(n: int) -> int:
    """N + 10, plus one request for each page of the pod list after the first."""
    pods_on_node = n + len(DAEMONSETS) + 1  # the DaemonSet pods and the mirror pod
    return n + FIXED_ALLOWANCE + (pods_on_node - 1) // LIST_PAGE


def _sizes(text: str, default: Sequence[int]) -> Sequence[int]:
    return [int(s) for s in text.split(",") if s] or list(default)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="", help="pod counts for nodeagent (default 10,100,500; smoke 10)")
    ap.add_argument("--kubectl-sizes", default="", help="pod counts for kubectl (default 10,100; smoke 10; "
                                                          "'0' to skip)")
    args = ap.parse_args(argv)
    sizes = _sizes(args.sizes, [10] if args.smoke else [10, 100, 500])
    kubectl_sizes = [n for n in _sizes(args.kubectl_sizes, [10] if args.smoke else [10, 100]) if n > 0]
    kubectl = find_kubectl() if kubectl_sizes else None
    common.banner("API requests per drain", args, f"sizes {sizes}")
    runs = []
    for n in sizes:
        agent = run_nodeagent(args.python, n)
        by_kind: Dict[str, int] = agent["api_requests_by_kind"]
        per_pod_gets = by_kind.get("pods get", 0)
        entry = {
            "pods": n,
            "nodeagent": {"total": agent["api_requests"], "by_kind": by_kind, "single_pod_gets": per_pod_gets,
                          "beyond_evictions": agent["api_requests"] - by_kind.get("pods/eviction", 0)},
            "target": allowance(n),
        }
        entry["meets_target"] = agent["api_requests"] <= allowance(n) and per_pod_gets == 0 \
            and agent["evictable_pods_left"] == 0
        if kubectl and n in kubectl_sizes:
            ctl = run_kubectl(kubectl, n)
            entry["kubectl"] = {"total": ctl["api_requests"], "by_kind": ctl["api_requests_by_kind"],
                                "single_pod_gets": ctl["api_requests_by_kind"].get("pods get", 0)}
        runs.append(entry)
    rows = []
    for e in runs:
        a, k = e["nodeagent"], e.get("kubectl")
        rows.append((e["pods"], a["total"], a["by_kind"].get("pods/eviction", 0), a["beyond_evictions"],
                     a["single_pod_gets"], k["total"] if k else "-", k["single_pod_gets"] if k else "-",
                     f"<= {e['target']}", common.verdict(e["meets_target"])))
    print(common.table(("pods", "nodeagent total", "evictions", "everything else", "single-pod GETs",
                        "kubectl total", "kubectl pod GETs", "target", ""), rows))
    if runs:
        print("\nnodeagent, by kind (largest N): " + ", ".join(f"{k} {v}" for k, v in runs[-1]["nodeagent"]["by_kind"].items()))
    common.write_result(NAME, args, {"fixed_allowance": FIXED_ALLOWANCE, "runs": runs,
                                     "meets_target": all(e["meets_target"] for e in runs)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
