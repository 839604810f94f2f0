"""Last pod gone -> instance released, with an ASG termination lifecycle hook.

An Auto Scaling group terminates the instance (IMDS target-lifecycle-state turns Terminated) and
its termination hook holds it in Terminating:Wait. nodeagent drains the node, then completes the
lifecycle action itself (ASG_LIFECYCLE_HOOK). Measured at the simulators: when the last pod left
the node (the Kubernetes simulator's pod list, looked at every 5 ms) and when the Auto Scaling
simulator accepted CompleteLifecycleAction (the instance is released).

Without nodeagent completing it, the instance stays held until the hook's heartbeat timeout runs
out: that hold is printed beside the measured one, for the common 5-minute timeout and for
Auto Scaling's default of 1 hour.

    python -m benchmarks.asg_release [--smoke] [--python PATH]
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from nodeagent_sim.autoscaling import AutoScalingSim  # noqa: E402

NAME = "asg_release"
GROUP, HOOK = "nodes", "nodeagent-drain"
HOOK_TIMEOUTS_S = (300.0, 3600.0)  # a common short setting; Auto Scaling's default
TARGET_S = 1.0  # last pod gone -> released


def one_run(args, pods: int) -> Dict[str, float]:
    stack = common.start_stack(time_scale=0.05)  # a pod's 30 s grace passes in 1.5 s
    asg = AutoScalingSim(cert_dir=str(stack.tmp / "asg-certs")).start()
    running = None
    try:
        for i in range(pods):
            stack.kube.add_pod(f"web-{i}", node=common.NODE, owner_kind="ReplicaSet", owner_name="web", grace_s=30)
        asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=HOOK_TIMEOUTS_S[0])
        running = common.start_daemon(stack, args.python, ASG_LIFECYCLE_HOOK=HOOK, ASG_NAME=GROUP,
                                      ASG_ENDPOINT_URL=asg.url, ASG_CA_BUNDLE=asg.ca_file,
                                      ASG_HEARTBEAT_TIMEOUT=f"{HOOK_TIMEOUTS_S[0]:g}s")
        if not common.wait_for(lambda: running.daemon.find(r"acting on node"), 30):
            raise RuntimeError(f"the daemon did not reach the API:\n{running.daemon.output()}")
        gone: Dict[str, float] = {}

        def watch() -> None:
            while "t" not in gone:
                if not stack.kube.pods(node=common.NODE):
                    gone["t"] = time.monotonic()
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()
        action = asg.begin_termination(common.INSTANCE_ID, GROUP, HOOK, imds=stack.imds)
        if not common.wait_for(lambda: asg.accepted("CompleteLifecycleAction"), 60, 0.005):
            raise RuntimeError(f"no CompleteLifecycleAction:\n{running.daemon.output()}")
        released = asg.accepted("CompleteLifecycleAction")[0].t
        if "t" not in gone:
            raise RuntimeError("the instance was released before the node was empty")
        return {"gone_to_released_s": released - gone["t"], "held_s": released - action.started,
                "calls": float(len(asg.calls))}
    finally:
        if running is not None:
            running.stop()
        asg.stop()
        stack.stop()


def main() -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args()
    runs, pods = (2, 3) if args.smoke else (10, 20)
    common.banner(f"ASG release: last pod gone -> instance released ({runs} terminations, {pods} pods each)", args)
    results: List[Dict[str, float]] = [one_run(args, pods) for _ in range(runs)]
    released = [r["gone_to_released_s"] for r in results]
    held = [r["held_s"] for r in results]
    ok = max(released) <= TARGET_S and all(r["calls"] == 1 for r in results)
    print(common.table(("measure", "p50 s", "max s", "target"), [
        ("last pod gone -> released (CompleteLifecycleAction)", round(common.percentile(released, 50), 3),
         round(max(released), 3), f"<= {TARGET_S:g}"),
        ("Terminated -> released, with nodeagent", round(common.percentile(held, 50), 2), round(max(held), 2), ""),
        *[(f"Terminated -> released, hook timeout {t:g} s, without nodeagent", t, t, "") for t in HOOK_TIMEOUTS_S],
    ]))
    print(f"calls to Auto Scaling per termination: {sorted(set(int(r['calls']) for r in results))} "
          f"(exactly one CompleteLifecycleAction); {common.verdict(ok)} the target")
    common.write_result(NAME, args, {
        "runs": runs, "pods": pods,
        "gone_to_released_s": {"p50": round(common.percentile(released, 50), 4), "max": round(max(released), 4),
                               "all": [round(x, 4) for x in released]},
        "held_with_nodeagent_s": {"p50": round(common.percentile(held, 50), 3), "max": round(max(held), 3)},
        "held_without_nodeagent_s": {f"hook_timeout_{t:g}s": t for t in HOOK_TIMEOUTS_S},
        "target_s": TARGET_S, "meets_target": ok,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
