"""A long run under churn: does the daemon stay bounded?

The real daemon against both simulators for --minutes (default 90), with a notice every 22.5 s
(160 an hour: rebalance recommendations that are withdrawn, scheduled events that are drained and
then cancelled, each with new pods to evict), and now and then an IMDS token expiry, a cut of
every open watch and a 10 s Kubernetes API outage. Sampled every 10 s:

- the state file's size (bytes) and how many notice records it holds;
- RSS: VmRSS from /proc/<pid>/status; its slope (least squares, MiB per hour) over the samples
  after the warm-up (the first third of the run, at least 10 s: by then the state holds as many
  closed records as it keeps), and over each third of that span. Under this churn the allocator
  goes on settling for about half an hour (the slope over 10-30 minutes is two to three times the
  slope after 30), so the default run is 90 minutes and its warm-up the first 30.

Targets: the state file bounded (its last size within 10 % of its size at the end of the
warm-up, or at most 64 KiB), RSS slope <= 0.5 MiB/hour after warm-up.

    python -m benchmarks.soak [--smoke] [--minutes 90] [--python PATH]
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

NAME = "soak"
NOTICES_PER_HOUR = 160
SAMPLE_EVERY_S = 10.0
# (token expiry, watch cut, API outage) every so many seconds, and how long an outage lasts
FAULTS_FULL = (300.0, 180.0, 420.0, 10.0)
FAULTS_SMOKE = (12.0, 9.0, 21.0, 3.0)
RSS_SLOPE_TARGET_MIB_PER_HOUR = 0.5
STATE_BOUND_BYTES = 64 * 1024
PODS_PER_DRAIN = 2


def slope_per_hour(points: Sequence[Sequence[float]]) -> float:
    """Least-squares slope of (seconds, value) points, per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mean_t = sum(p[0] for p in points) / n
    mean_v = sum(p[1] for p in points) / n
    var = sum((p[0] - mean_t) ** 2 for p in points)
    if var == 0:
        return 0.0
    cov = sum((p[0] - mean_t) * (p[1] - mean_v) for p in points)
    return cov / var * 3600.0


def _gmt(moment: datetime) -> str:
    return moment.strftime("%d %b %Y %H:%M:%S GMT")


class Churn:
    """One notice at a time, alternating kinds; each is over (withdrawn or cancelled) before the next."""

    def __init__(self, stack: common.Stack, every_s: float):
        self.stack = stack
        self.every_s = every_s
        self.count = 0
        self.next_at = 0.0
        self._end: Optional[float] = None  # when the current notice is taken back
        self._pods = 0

    def step(self, now: float) -> None:
        if self._end is not None and now >= self._end:
            self._take_back()
        if now >= self.next_at and self._end is None:
            self._post()
            self.next_at = now + self.every_s
            self._end = now + self.every_s / 2

    def _post(self) -> None:
        self.count += 1
        if self.count % 2:
            self.stack.imds.set_rebalance(datetime.now(timezone.utc))
        else:
            for _ in range(PODS_PER_DRAIN):
                self._pods += 1
                self.stack.kube.add_pod(f"soak-{self._pods}", node=common.NODE, owner_kind="ReplicaSet",
                                        owner_name="soak", grace_s=1)
            self.stack.imds.set_scheduled([self._event("active")])

    def _take_back(self) -> None:
        self._end = None
        if self.count % 2:
            self.stack.imds.set_rebalance(None)  # withdrawn: the cordon is lifted
        else:
            self.stack.imds.set_scheduled([self._event("canceled")])

    def _event(self, state: str) -> Dict[str, str]:
        not_before = datetime.now(timezone.utc) + timedelta(days=2)
        return {"Code": "system-maintenance", "EventId": f"instance-event-{self.count:017x}", "State": state,
                "NotBefore": _gmt(not_before), "NotAfter": _gmt(not_before + timedelta(hours=2))}


def _state(path: Path) -> List[int]:
    try:
        raw = path.read_bytes()
    except OSError:
        return [0, 0]
    try:
        records = len(json.loads(raw).get("notices") or {})
    except ValueError:  # caught mid-replace: never, the file is renamed into place; but be safe
        records = -1
    return [len(raw), records]


def measure(python: str, duration_s: float, *, every_s: float,
            faults_every: Sequence[float] = FAULTS_FULL) -> Dict[str, object]:
    warmup_s = max(10.0, duration_s / 3)
    token_every, watch_every, outage_every, outage_s = faults_every
    with common.start_stack() as stack:
        running = common.start_daemon(
            stack, python, WITHDRAWN_AFTER="1s", WITHDRAWN_AFTER_POLLS="2", POLL_INTERVAL_REBALANCE="1s",
            POLL_INTERVAL_SCHEDULED="1s", DRAIN_MARGIN="1s",
        )
        state_file = Path(running.daemon.env["NODEAGENT_STATE_DIR"]) / "state.json"
        churn = Churn(stack, every_s)
        faults = {"token_expiries": 0, "watch_cuts": 0, "api_outages": 0}
        next_fault = {"token": token_every, "watch": watch_every, "outage": outage_every}
        samples: List[List[float]] = []  # [t, rss_kib, state_bytes, records]
        try:
            pid = running.pid
            started = time.monotonic()
            next_sample = 0.0
            while True:
                elapsed = time.monotonic() - started
                if elapsed >= duration_s or not running.daemon.alive():
                    break
                churn.step(elapsed)
                if elapsed >= next_fault["token"]:
                    stack.imds.expire_tokens()
                    faults["token_expiries"] += 1
                    next_fault["token"] += token_every
                if elapsed >= next_fault["watch"]:
                    stack.kube.cut_watches(abrupt=faults["watch_cuts"] % 2 == 1)
                    faults["watch_cuts"] += 1
                    next_fault["watch"] += watch_every
                if elapsed >= next_fault["outage"]:
                    stack.kube.down_for(outage_s)
                    faults["api_outages"] += 1
                    next_fault["outage"] += outage_every
                if elapsed >= next_sample:
                    samples.append([round(elapsed, 1), common.rss_kb(pid), *_state(state_file)])
                    next_sample += SAMPLE_EVERY_S
                time.sleep(0.25)
            alive = running.daemon.alive()
            samples.append([round(time.monotonic() - started, 1), common.rss_kb(pid), *_state(state_file)])
            threads = common.threads(pid)
        finally:
            running.stop()
    after = [s for s in samples if s[0] >= warmup_s]
    at_warmup = after[0] if after else samples[-1]
    last = samples[-1]
    return {
        "duration_s": last[0],
        "warmup_s": round(warmup_s, 1),
        "notices_posted": churn.count,
        "notices_per_hour": round(3600.0 / every_s),
        "faults": faults,
        "alive_at_end": alive,
        "threads": threads,
        "state_bytes": {"at_warmup": at_warmup[2], "last": last[2], "max": max(s[2] for s in samples)},
        "records": {"at_warmup": at_warmup[3], "last": last[3], "max": max(s[3] for s in samples)},
        "rss_kib": {"at_warmup": at_warmup[1], "last": last[1], "max": max(s[1] for s in samples)},
        "rss_slope_mib_per_hour": _rss_slope(after),
        "rss_slope_by_third_after_warmup": _slopes_by_third(after, warmup_s, last[0]),
        "state_slope_bytes_per_hour": round(slope_per_hour([(s[0], s[2]) for s in after])),
        "samples": samples,
    }


def _rss_slope(samples: Sequence[Sequence[float]]) -> float:
    """The RSS slope of [t, rss_kib, ...] samples, MiB per hour."""
    return round(slope_per_hour([(s[0], s[1] / 1024) for s in samples]), 3)


def _slopes_by_third(after: Sequence[Sequence[float]], start_s: float, end_s: float) -> List[float]:
    """The RSS slope (MiB per hour) over each third of the span after the warm-up."""
    step = (end_s - start_s) / 3
    bounds = [(start_s + i * step, start_s + (i + 1) * step) for i in range(3)]
    return [_rss_slope([s for s in after if lo <= s[0] <= hi]) for lo, hi in bounds]


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=0, help="measured duration (default 90; smoke 40 s)")
    args = ap.parse_args(argv)
    duration = args.minutes * 60 if args.minutes else (40.0 if args.smoke else 5400.0)
    every = 4.0 if args.smoke else 3600.0 / NOTICES_PER_HOUR
    common.banner("soak under churn", args, f"{duration:g}s, a notice every {every:g}s")
    m = measure(args.python, duration, every_s=every, faults_every=FAULTS_SMOKE if args.smoke else FAULTS_FULL)
    state = m["state_bytes"]
    bounded = state["last"] <= max(STATE_BOUND_BYTES, 1.1 * state["at_warmup"])
    checks = {
        "alive": bool(m["alive_at_end"]),
        "state_bounded": bounded,
        "rss_slope": m["rss_slope_mib_per_hour"] <= RSS_SLOPE_TARGET_MIB_PER_HOUR,
    }
    rows = [
        ("notices posted", f"{m['notices_posted']} ({m['notices_per_hour']} / hour)", "", ""),
        ("faults", ", ".join(f"{k} {v}" for k, v in m["faults"].items()), "", ""),
        ("state file", f"{state['at_warmup']} B at warm-up, {state['last']} B last, {state['max']} B max",
         "bounded", common.verdict(checks["state_bounded"])),
        ("records in it", f"{m['records']['at_warmup']} at warm-up, {m['records']['last']} last", "", ""),
        ("RSS", f"{m['rss_kib']['at_warmup'] / 1024:.1f} MiB at warm-up, {m['rss_kib']['last'] / 1024:.1f} last",
         "", ""),
        ("RSS slope after warm-up", f"{m['rss_slope_mib_per_hour']:.2f} MiB/hour",
         f"<= {RSS_SLOPE_TARGET_MIB_PER_HOUR}", common.verdict(checks["rss_slope"])),
        ("... by third of that span", ", ".join(f"{v:.2f}" for v in m["rss_slope_by_third_after_warmup"]),
         "", ""),
        ("daemon alive at the end", m["alive_at_end"], "", common.verdict(checks["alive"])),
    ]
    print(common.table(("measure", "value", "target", ""), rows))
    common.write_result(NAME, args, {"measured": m, "checks": checks, "meets_target": all(checks.values())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
