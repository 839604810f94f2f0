"""What the idle daemon costs, per node, while nothing happens.

The real daemon at POLL_INTERVAL 1 s (or --poll) and the default per-path pacing against both simulators, with the node's own (static)
credentials, for 10 minutes after a short warm-up:

- RSS: VmRSS from /proc/<pid>/status, sampled every 5 s (max and last are reported);
- CPU share: utime + stime from /proc/<pid>/stat over wall time (also the ns-resolution sum of
  /proc/<pid>/task/*/schedstat, as a cross-check);
- API requests per minute, counted at the Kubernetes API simulator;
- IMDS requests per minute and new IMDS connections, counted at the IMDS simulator.

Targets: RSS <= 36 MiB, CPU <= 0.15 % of one core at a 1 s poll (<= 0.30 % at 250 ms),
<= 1 API request per minute.

    python -m benchmarks.idle_cost [--smoke] [--minutes 10] [--python PATH] [--poll 0.25] [--poll-asg 1]
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

NAME = "idle_cost"
RSS_TARGET_BYTES = 36 * 1024 * 1024
CPU_TARGET_PERCENT = {1.0: 0.15, 0.25: 0.30}  # by POLL_INTERVAL; others are reported only
API_TARGET_PER_MIN = 1.0
SAMPLE_EVERY_S = 5.0


def measure(python: str, duration_s: float, warmup_s: float, poll_s: float = 1.0,
            poll_asg_s: Optional[float] = None) -> Dict[str, object]:
    keys = {"POLL_INTERVAL": f"{poll_s:g}s"}
    if poll_asg_s is not None:
        keys["POLL_INTERVAL_ASG"] = f"{poll_asg_s:g}s"
    with common.start_stack() as stack:
        running = common.start_daemon(stack, python, **keys)
        try:
            pid = running.pid
            time.sleep(warmup_s)  # startup requests (whoami, node, labels) are not idle cost
            stack.kube.reset_requests()
            imds_log_before = len(stack.imds.request_log)
            connections_before = stack.imds.connections
            cpu_before, precise_before = common.cpu_seconds(pid), common.cpu_seconds_precise(pid)
            started = time.monotonic()
            samples: List[List[float]] = []
            while True:
                elapsed = time.monotonic() - started
                samples.append([round(elapsed, 1), common.rss_kb(pid)])
                if elapsed >= duration_s or not running.daemon.alive():
                    break
                time.sleep(min(SAMPLE_EVERY_S, duration_s - elapsed))
            wall = time.monotonic() - started
            cpu = common.cpu_seconds(pid) - cpu_before
            precise = common.cpu_seconds_precise(pid) - precise_before
            api = list(stack.kube.requests)
            imds_requests = len(stack.imds.request_log) - imds_log_before
            connections = stack.imds.connections - connections_before
            threads, hwm = common.threads(pid), common.hwm_kb(pid)
        finally:
            running.stop()
    rss = [kb for _, kb in samples]
    return {
        "poll_s": poll_s,
        "poll_asg_s": poll_asg_s,
        "duration_s": round(wall, 1),
        "rss_kib": {"max": max(rss), "last": rss[-1], "first": rss[0], "peak_hwm": hwm},
        "rss_mb_max": round(max(rss) * 1024 / 1e6, 1),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 3),
        "cpu_percent_schedstat": round(100 * precise / wall, 3),
        "cpu_seconds": round(cpu, 2),
        "api_requests": len(api),
        "api_requests_per_min": round(len(api) / wall * 60, 2),
        "api_request_list": [f"{r.method} {r.path}" for r in api[:20]],
        "imds_requests_per_min": round(imds_requests / wall * 60, 1),
        "imds_new_connections": connections,
        "threads": threads,
        "rss_samples_kib": samples,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=0, help="measured duration (default 10; smoke 20 s)")
    ap.add_argument("--poll", type=float, default=1.0, help="POLL_INTERVAL in seconds (default 1)")
    ap.add_argument("--poll-asg", type=float, default=None,
                    help="POLL_INTERVAL_ASG in seconds (default: unset, the ASG path at POLL_INTERVAL)")
    args = ap.parse_args(argv)
    duration = args.minutes * 60 if args.minutes else (20.0 if args.smoke else 600.0)
    asg = f", POLL_INTERVAL_ASG {args.poll_asg:g}s" if args.poll_asg is not None else ""
    common.banner(f"idle cost at POLL_INTERVAL {args.poll:g}s{asg}", args, f"{duration:g}s measured")
    m = measure(args.python, duration, warmup_s=2.0 if args.smoke else 5.0, poll_s=args.poll,
                poll_asg_s=args.poll_asg)
    # The targets are for the ASG path at POLL_INTERVAL; with its own pace the figure is reported only.
    cpu_target = CPU_TARGET_PERCENT.get(args.poll) if args.poll_asg is None else None
    checks = {
        "rss": m["rss_kib"]["max"] * 1024 <= RSS_TARGET_BYTES,
        "cpu": cpu_target is None or m["cpu_percent_of_one_core"] <= cpu_target,
        "api": m["api_requests_per_min"] <= API_TARGET_PER_MIN,
    }
    rows = [
        ("RSS (max of samples)", f"{m['rss_kib']['max'] / 1024:.1f} MiB ({m['rss_mb_max']} MB)", "<= 36 MiB",
         common.verdict(checks["rss"])),
        ("CPU, utime+stime / wall", f"{m['cpu_percent_of_one_core']:.3f} % of one core",
         f"<= {cpu_target} %" if cpu_target else "",
         common.verdict(checks["cpu"])),
        ("CPU, schedstat cross-check", f"{m['cpu_percent_schedstat']:.3f} %", "", ""),
        ("API requests", f"{m['api_requests_per_min']:.2f} / min ({m['api_requests']} in {m['duration_s']:g}s)",
         "<= 1 / min", common.verdict(checks["api"])),
        ("IMDS requests", f"{m['imds_requests_per_min']:.0f} / min, {m['imds_new_connections']} new connections",
         "", ""),
        ("threads", m["threads"], "", ""),
    ]
    print(common.table(("measure", "value", "target", ""), rows))
    common.write_result(NAME, args, {"measured": m, "checks": checks, "meets_target": all(checks.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
