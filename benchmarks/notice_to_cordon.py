"""Notice -> cordon latency.

From the moment a spot interruption notice appears in IMDS to the moment `spec.unschedulable=true`
is stored at the API (the simulator's PATCH hook), over many notices, at POLL_INTERVAL 1 s and
0.5 s. Target: p99 <= poll + 100 ms.

One daemon per interval handles every notice in turn: between notices the benchmark waits for
the response to finish (the node's nodeagent.io/agent label says "drained"), withdraws the notice,
uncordons the node at the simulator and waits a random 0..poll so that notices land at every
phase of the poll loop. Each notice has its own time, so it is a new notice to the agent.

The "agent" column is the part the agent controls: from the IMDS GET that first returned the
notice to the cordon. The rest is waiting for the next poll.

    python -m benchmarks.notice_to_cordon [--smoke] [--python PATH]
"""
from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

NAME = "notice_to_cordon"
TARGET_SLACK_S = 0.100


class PatchLog:
    """Every PATCH/PUT of our node, timestamped by the simulator when it is stored."""

    def __init__(self, stack: common.Stack):
        self._lock = threading.Lock()
        self.entries: List[tuple] = []  # (t, unschedulable, agent label)
        stack.kube.on_patch_node(self._on_patch)

    def _on_patch(self, node: str, t: float, obj: dict) -> None:
        if node != common.NODE:
            return
        with self._lock:
            self.entries.append((t, bool((obj.get("spec") or {}).get("unschedulable")), common.agent_label(obj)))

    def first_cordon_after(self, t0: float) -> Optional[float]:
        with self._lock:
            return next((t for t, unschedulable, _ in self.entries if t >= t0 and unschedulable), None)

    def label_after(self, t0: float, value: str) -> Optional[float]:
        with self._lock:
            return next((t for t, _, label in self.entries if t >= t0 and label == value), None)


def first_notice_get(stack: common.Stack, t0: float) -> Optional[float]:
    for t, method, path, status in stack.imds.request_log:
        if t >= t0 and method == "GET" and path.endswith("spot/instance-action") and status == 200:
            return t
    return None


def measure(stack: common.Stack, patches: PatchLog, *, count: int, poll_s: float, rng: random.Random,
            first_offset_s: int = 120) -> Dict[str, List[float]]:
    """`count` notices against a running daemon. Returns latencies (s) and their parts."""
    latency: List[float] = []
    agent_part: List[float] = []
    failures = 0
    for i in range(count):
        stack.imds.set_spot(None)
        stack.kube.mutate_node(common.NODE, lambda node: node["spec"].pop("unschedulable", None))
        time.sleep(0.2 + rng.uniform(0.0, poll_s))
        t0 = time.monotonic()
        stack.imds.schedule_spot(first_offset_s + 7 * i, "terminate")
        if not common.wait_for(lambda: patches.first_cordon_after(t0) is not None, 15.0, 0.005):
            failures += 1
            continue
        cordoned = patches.first_cordon_after(t0)
        assert cordoned is not None
        latency.append(cordoned - t0)
        seen = first_notice_get(stack, t0)
        if seen is not None:
            agent_part.append(cordoned - seen)
        # The response is over when the agent labels the node drained; only then the next notice.
        common.wait_for(lambda: patches.label_after(cordoned, "drained") is not None, 30.0, 0.01)
    return {"latency_s": latency, "agent_part_s": agent_part, "failures": failures}


def run_series(python: str, *, poll_s: float, count: int, seed: int, exec_delay_s: Optional[float] = None,
               exec_ttl_s: float = 900) -> Dict[str, object]:
    with common.start_stack(exec_delay_s=exec_delay_s, exec_ttl_s=exec_ttl_s) as stack:
        for name in ("aws-node", "kube-proxy"):
            stack.kube.add_pod(f"{name}-x7k2p", "kube-system", node=common.NODE, owner_kind="DaemonSet",
                               owner_name=name)
        patches = PatchLog(stack)
        running = common.start_daemon(stack, python, POLL_INTERVAL=f"{poll_s:g}s")
        invocations_before = stack.kube.exec_invocations(stack.kubeconfig) if exec_delay_s is not None else 0
        try:
            measured = measure(stack, patches, count=count, poll_s=poll_s, rng=random.Random(seed))
        finally:
            running.stop()
        result: Dict[str, object] = {
            "poll_s": poll_s,
            "notices": count,
            "failures": measured["failures"],
            "latency_ms": common.summary_ms(measured["latency_s"]),
            "agent_part_ms": common.summary_ms(measured["agent_part_s"]),
            "target_p99_ms": round((poll_s + TARGET_SLACK_S) * 1000),
            "samples_ms": [round(s * 1000, 1) for s in measured["latency_s"]],
        }
        if exec_delay_s is not None:
            result["exec_plugin_runs_during_notices"] = (
                stack.kube.exec_invocations(stack.kubeconfig) - invocations_before)
        latency = result["latency_ms"]
        result["meets_target"] = bool(measured["failures"] == 0 and latency.get("n")
                                      and latency["p99"] <= result["target_p99_ms"])
        return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--notices", type=int, default=0, help="notices per interval (default 60; smoke 5)")
    args = ap.parse_args(argv)
    count = args.notices or (5 if args.smoke else 60)
    polls = (0.5,) if args.smoke else (1.0, 0.5, 0.25)
    common.banner("notice -> cordon latency", args, f"{count} notices per poll interval")
    series = [run_series(args.python, poll_s=poll, count=count, seed=index + 1) for index, poll in enumerate(polls)]
    rows = []
    for s in series:
        lat, agent = s["latency_ms"], s["agent_part_ms"]
        rows.append((f"{s['poll_s']:g}s", lat.get("n", 0), lat.get("p50"), lat.get("p99"), lat.get("max"),
                     agent.get("p50"), agent.get("p99"), f"<= {s['target_p99_ms']}", common.verdict(s["meets_target"])))
    print(common.table(("poll", "n", "p50 ms", "p99 ms", "max ms", "agent p50", "agent p99", "target p99", ""), rows))
    common.write_result(NAME, args, {"series": series, "meets_target": all(s["meets_target"] for s in series)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
