"""A capacity pool reclaimed at once. N real agents drain against ONE API server.

N real daemons (`python -m nodeagent run`, each with its own NOTIFY_SOCKET, state directory,
IMDS simulator whose instance id matches its Node's providerID, and kubeconfig with its own
token for system:node:<name>, so the Node authorizer holds per node) and one Kubernetes API
simulator holding the N spot nodes. Deployments span the nodes, one PodDisruptionBudget each;
evicted pods come back on another node ("elsewhere") and become Ready a little later, so the
budgets bind. Every node gets its spot notice in the same instant (deadline 120 s). The API
simulator can run API Priority and Fairness (seats, a bounded queue, 429 with Retry-After).

Measured at the simulators, per node: notice -> the node's last evictable pod gone from the API
(sampled every 50 ms), against the deadline and against deadline - DRAIN_MARGIN; notice -> the
agent's `drained` label stored ("-": never, e.g. when the label PATCH was throttled); API requests
per pod; throttling answers (APF's 429s) received; requests that came sooner than Retry-After
allowed: the same request retried early, and throttling answers followed by ANY request from that
node inside the Retry-After window; agent CPU (utime+stime from /proc/<pid>/stat) from the notice
until the pods are gone, and RSS then.
For the fleet: request rate per second after the first 5 s (peak, mean and their ratio) and the
peak of requests in flight at the server.

Then one node alone (APF off) draining 12 pods behind budgets: the agent's CPU share of a core
over the drain, which shows whether it waits for budgets by sleeping or by spinning.

    python -m benchmarks.fleet [--nodes 10] [--pods-per-node 30] [--seats 2] [--queue 8]
        [--retry-after 2] [--pdb 10%] [--no-apf] [--scenario fleet|single|both] [--smoke]
"""
from __future__ import annotations

import argparse
import email.utils
import math
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402
from nodeagent.config import KEYS_BY_NAME, parse_duration  # noqa: E402
from nodeagent_sim.imds import ImdsSim  # noqa: E402
from nodeagent_sim.kube import ApfConfig, KubeSim, RequestRecord  # noqa: E402

NAME = "fleet"
ZONE = "us-east-1a"
GRACE_S = 30
TIME_SCALE = 0.1  # a pod's 30 s grace lasts 3 s
REPLACEMENT_READY_S = 20  # simulated: a replacement is Ready 2 s after it is created
NOTICE_IN_S = 120
RATE_SKIP_S = 5.0
# Requests that reach the server this soon after a throttling answer left it crossed that answer on
# the way (measured: all within 50 ms on this machine, while an agent that ignored Retry-After
# retries 0.2-1 s later).
IN_FLIGHT_S = 0.1
TARGETS = {"early_retries": 0, "any_within_share": 0.05, "peak_to_mean": 3.0, "cpu_s_per_node": 1.5,
           "single_cpu_share": 0.05}


# ------------------------------------------------------------------------------------ the fleet


@dataclass
class Node:
    index: int
    name: str
    instance_id: str
    imds: ImdsSim
    kubeconfig: str
    pods: int = 0
    running: Optional[common.Running] = None
    t_cordon: Optional[float] = None
    t_drained: Optional[float] = None  # the last evictable pod gone from the API (sampled every 50 ms)
    t_labelled: Optional[float] = None  # the agent's `drained` label stored
    cpu_at_notice: float = 0.0
    cpu_at_drained: Optional[float] = None
    rss_at_drained_kib: Optional[int] = None

    @property
    def user(self) -> str:
        return "system:node:" + self.name


def node_name(i: int) -> str:
    return "ip-10-0-%d-%d.ec2.internal" % (i // 200, 10 + i % 200)


@dataclass
class Fleet:
    kube: KubeSim
    nodes: List[Node]
    tmp: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def by_name(self) -> Dict[str, Node]:
        return {n.name: n for n in self.nodes}

    def stop(self) -> None:
        for node in self.nodes:
            if node.running is not None:
                try:
                    node.running.stop()
                except Exception:  # noqa: BLE001 - stop every agent whatever one of them does
                    node.running.daemon.kill()
        self.kube.stop()
        for node in self.nodes:
            node.imds.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def build(*, nodes: int, pods_per_node: int, deployments: int, pdb: str, apf: Optional[ApfConfig]) -> Fleet:
    tmp = Path(tempfile.mkdtemp(prefix="nodeagent-fleet-"))
    kube = KubeSim(time_scale=TIME_SCALE, replace_evicted=True, replacement_ready_after_s=REPLACEMENT_READY_S,
                   apf=apf).start()
    members: List[Node] = []
    for i in range(nodes):
        name, instance_id = node_name(i), "i-0%016x" % (0xF1EE7000 + i)
        imds = ImdsSim(instance_id=instance_id, availability_zone=ZONE, local_hostname=name,
                       life_cycle="spot").start()
        kube.add_node(name, provider_id="aws:///%s/%s" % (ZONE, instance_id),
                      labels={"lifecycle": "Ec2Spot", "kubernetes.io/hostname": name})
        kubeconfig = kube.write_kubeconfig(str(tmp / ("kubeconfig-%d" % i)), kube.add_node_token(name))
        node = Node(i, name, instance_id, imds, kubeconfig)
        for p in range(pods_per_node):
            app = "app-%d" % (p % deployments)
            kube.add_pod("%s-%02d-%03d" % (app, i, p), "default", node=name, owner_kind="ReplicaSet",
                         owner_name=app + "-rs", labels={"app": app}, grace_s=GRACE_S)
        kube.add_pod("aws-node-%02d" % i, "kube-system", node=name, owner_kind="DaemonSet", owner_name="aws-node",
                     priority_class="system-node-critical", grace_s=GRACE_S)
        node.pods = pods_per_node
        members.append(node)
    if pdb != "none":
        budget = pdb if pdb.endswith("%") else int(pdb)
        for d in range(min(deployments, pods_per_node)):
            kube.add_pdb("app-%d" % d, "default", selector={"app": "app-%d" % d}, max_unavailable=budget)
    fleet = Fleet(kube, members, tmp)
    by_name = fleet.by_name()

    def on_patch(name: str, t: float, obj: dict) -> None:
        node = by_name.get(name)
        if node is None:
            return
        with fleet._lock:
            if node.t_cordon is None and (obj.get("spec") or {}).get("unschedulable"):
                node.t_cordon = t
            if node.t_labelled is None and common.agent_label(obj) == "drained":
                node.t_labelled = t

    kube.on_patch_node(on_patch)
    return fleet


def start_agents(fleet: Fleet, python: str, settings: Dict[str, str]) -> None:
    """Spawn every agent, then wait for each one's READY=1 (they start side by side)."""
    spawned = []
    for node in fleet.nodes:
        run_dir = fleet.tmp / ("node-%d" % node.index)
        run_dir.mkdir()
        spawned.append(common.spawn_daemon(node.imds.url, node.kubeconfig, run_dir, python, **settings))
    for node, one in zip(fleet.nodes, spawned):
        node.running = common.wait_ready(one, ready_timeout_s=60 + 3 * len(fleet.nodes))


def evictable_left(kube: KubeSim, node: str) -> int:
    return kube.pod_count(node, "default")  # the DaemonSet pods are in kube-system


def note_drained(fleet: Fleet) -> bool:
    """Stamp the nodes whose evictable pods are all gone now (with the agent's CPU and RSS).
    Returns whether every node is drained and labelled."""
    done = True
    for node in fleet.nodes:
        if node.t_drained is None and evictable_left(fleet.kube, node.name) == 0:
            assert node.running is not None
            node.t_drained = time.monotonic()
            node.cpu_at_drained = common.cpu_seconds(node.running.pid)
            node.rss_at_drained_kib = common.rss_kb(node.running.pid)
        with fleet._lock:
            done = done and node.t_drained is not None and node.t_labelled is not None
    return done


def drain(fleet: Fleet) -> Tuple[float, float]:
    """One spot notice to every node at once; wait until every node is drained (or the deadline
    has passed). Returns (notice, deadline) on the simulators' monotonic clock."""
    when = (time.time() + NOTICE_IN_S) // 1  # the notice states whole seconds
    body = {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))}
    for node in fleet.nodes:
        assert node.running is not None
        node.cpu_at_notice = common.cpu_seconds(node.running.pid)
    t_notice = time.monotonic()
    for node in fleet.nodes:
        node.imds.set_spot(body)
    deadline = t_notice + (when - time.time())
    end = deadline + 5
    while time.monotonic() < end and not note_drained(fleet):
        if all(n.t_drained is not None for n in fleet.nodes):  # a label may never come: wait 10 s
            end = min(end, max(n.t_drained or 0.0 for n in fleet.nodes) + 10)
        time.sleep(0.05)
    time.sleep(1.5)  # queued Events reach the API, so they are counted
    return t_notice, deadline


# ------------------------------------------------------------------------------------ analysis


def answered_at(r: RequestRecord) -> float:
    return r.t_monotonic + r.duration_s


def retry_after_s(r: RequestRecord) -> float:
    """The wait a throttling answer asked for (delta-seconds or an HTTP date); 0 when absent."""
    value = r.retry_after.strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time()
                   + (time.monotonic() - answered_at(r)))
    except (TypeError, ValueError):
        return 0.0


def early_requests(records: Sequence[RequestRecord]) -> Tuple[int, int, int]:
    """(throttling answers, same request retried sooner than Retry-After, throttling answers
    followed by ANY request from the same client inside their Retry-After window). One client's
    records, in arrival order. A request arriving within IN_FLIGHT_S of the answer was sent before
    the client could have read that answer (the log stamps arrival, not sending): it is not counted
    as sent inside the window (gaps_within_retry_after shows how close those are)."""
    throttled = [r for r in records if r.throttled]
    early_same = any_within = 0
    for r in throttled:
        t_answer, wait = answered_at(r), retry_after_s(r)
        later = [q for q in records if q.t_monotonic > t_answer + IN_FLIGHT_S]
        retry = next((q for q in later if (q.method, q.path, q.verb) == (r.method, r.path, r.verb)), None)
        if retry is not None and retry.t_monotonic < t_answer + wait:
            early_same += 1
        if any(q.t_monotonic < t_answer + wait for q in later):
            any_within += 1
    return len(throttled), early_same, any_within


def gaps_within_retry_after(records: Sequence[RequestRecord]) -> List[float]:
    """For each throttling answer followed by a request from the same client inside its Retry-After
    window: how long after the answer that request arrived (seconds). One client's records."""
    gaps = []
    for r in (r for r in records if r.throttled):
        t_answer, wait = answered_at(r), retry_after_s(r)
        first = min((q.t_monotonic for q in records if t_answer < q.t_monotonic < t_answer + wait), default=None)
        if first is not None:
            gaps.append(first - t_answer)
    return gaps


def rate_per_second(records: Sequence[RequestRecord], start: float, end: float) -> Tuple[int, float, int]:
    """(peak, mean, seconds) of requests arriving per whole second in [start, end)."""
    seconds = max(0, int(math.ceil(end - start)))
    if seconds == 0:
        return 0, 0.0, 0
    bins = [0] * seconds
    for r in records:
        k = int(r.t_monotonic - start)
        if start <= r.t_monotonic < end and 0 <= k < seconds:
            bins[k] += 1
    return max(bins), sum(bins) / seconds, seconds


def peak_in_flight(records: Sequence[RequestRecord]) -> int:
    """Most non-watch requests the server held at once (arrived, not yet answered)."""
    edges = []
    for r in records:
        if r.verb == "watch":
            continue
        edges.append((r.t_monotonic, 1))
        edges.append((answered_at(r), -1))
    edges.sort()
    now = peak = 0
    for _, delta in edges:
        now += delta
        peak = max(peak, now)
    return peak


def node_result(fleet: Fleet, node: Node, records: List[RequestRecord], t_notice: float, deadline: float,
                margin_s: float) -> Dict[str, object]:
    mine = [r for r in records if r.user == node.user]
    throttled, early_same, any_within = early_requests(mine)
    drained_s = None if node.t_drained is None else node.t_drained - t_notice
    labelled_s = None if node.t_labelled is None else node.t_labelled - t_notice
    cpu = None if node.cpu_at_drained is None else node.cpu_at_drained - node.cpu_at_notice
    return {
        "node": node.name,
        "pods": node.pods,
        "evictable_left": evictable_left(fleet.kube, node.name),
        "drained_s": None if drained_s is None else round(drained_s, 2),
        "labelled_drained_s": None if labelled_s is None else round(labelled_s, 2),
        "deadline_s": round(deadline - t_notice, 2),
        "slack_to_deadline_s": None if node.t_drained is None else round(deadline - node.t_drained, 2),
        "slack_to_deadline_minus_margin_s": None if node.t_drained is None
        else round(deadline - margin_s - node.t_drained, 2),
        "drained_by_deadline_minus_margin": node.t_drained is not None and node.t_drained <= deadline - margin_s,
        "requests": len(mine),
        "requests_per_pod": round(len(mine) / max(1, node.pods), 2),
        "throttling_answers": throttled,
        "retried_sooner_than_retry_after": early_same,
        "throttling_answers_followed_within_retry_after": any_within,
        "gaps_within_retry_after_s": [round(g, 4) for g in sorted(gaps_within_retry_after(mine))],
        "cpu_s": None if cpu is None else round(cpu, 2),
        "cpu_share_of_core": None if cpu is None or not drained_s else round(cpu / drained_s, 3),
        "rss_at_drained_mib": None if node.rss_at_drained_kib is None else round(node.rss_at_drained_kib / 1024, 1),
    }


def run_fleet(args: argparse.Namespace, *, nodes: int, pods_per_node: int, deployments: int, pdb: str,
              apf: Optional[ApfConfig], label: str) -> Dict[str, object]:
    settings = dict(item.split("=", 1) for item in args.agent_setting)
    margin_s = parse_duration(settings.get("DRAIN_MARGIN", KEYS_BY_NAME["DRAIN_MARGIN"].default))
    print(f"  {label}: {nodes} node(s) x {pods_per_node} pods, {deployments} deployment(s), PDB maxUnavailable "
          f"{pdb}, APF {apf_text(apf)}", flush=True)
    fleet = build(nodes=nodes, pods_per_node=pods_per_node, deployments=deployments, pdb=pdb, apf=apf)
    try:
        start_agents(fleet, args.python, settings)
        time.sleep(2.0)  # past start-up: the agents idle, polling
        fleet.kube.reset_requests()
        t_notice, deadline = drain(fleet)
        records = [r for r in list(fleet.kube.requests) if r.t_monotonic >= t_notice]
        users = {n.user for n in fleet.nodes}
        records = [r for r in records if r.user in users]
        per_node = [node_result(fleet, n, records, t_notice, deadline, margin_s) for n in fleet.nodes]
        drained_at = [n.t_drained for n in fleet.nodes if n.t_drained is not None]
        end = max(drained_at) if len(drained_at) == len(fleet.nodes) else deadline
        peak, mean, seconds = rate_per_second(records, t_notice + RATE_SKIP_S, end)
        stats = fleet.kube.apf_stats()
        outputs = {n.name: n.running.daemon.output()[-3000:] for n in fleet.nodes
                   if n.running is not None and (n.t_drained is None or n.t_labelled is None)}
    finally:
        fleet.stop()
    throttled = sum(int(r["throttling_answers"]) for r in per_node)
    within = sum(int(r["throttling_answers_followed_within_retry_after"]) for r in per_node)
    gaps = sorted(g for r in per_node for g in r["gaps_within_retry_after_s"])
    crossed = sum(1 for g in gaps if g <= IN_FLIGHT_S)
    cpus = [float(r["cpu_s"]) for r in per_node if r["cpu_s"] is not None]
    summary = {
        "nodes": nodes, "pods_per_node": pods_per_node, "deployments": deployments, "pdb_max_unavailable": pdb,
        "apf": None if apf is None else vars(apf), "drain_margin_s": margin_s, "notice_in_s": NOTICE_IN_S,
        "all_drained_by_deadline_minus_margin": all(r["drained_by_deadline_minus_margin"] for r in per_node),
        "last_drained_s": round(max(drained_at) - t_notice, 2) if drained_at else None,
        "nodes_not_labelled_drained": sum(1 for n in per_node if n["labelled_drained_s"] is None),
        "requests": len(records),
        "throttling_answers": throttled,
        "retried_sooner_than_retry_after": sum(int(r["retried_sooner_than_retry_after"]) for r in per_node),
        "throttling_answers_followed_within_retry_after": within,
        "share_followed_within_retry_after": round(within / throttled, 3) if throttled else 0.0,
        "throttling_answers_crossed_in_flight": crossed,
        "latest_crossing_s": gaps[crossed - 1] if crossed else None,
        "rate_after_first_5s": {"peak_per_s": peak, "mean_per_s": round(mean, 1), "seconds": seconds,
                                "peak_to_mean": round(peak / mean, 2) if mean else None},
        "peak_in_flight": peak_in_flight(records),
        "apf_server": None if stats is None else vars(stats),
        "cpu_s_per_node": {"max": round(max(cpus), 2), "mean": round(sum(cpus) / len(cpus), 2)} if cpus else None,
    }
    summary["meets_targets"] = {
        "all_drained_by_deadline_minus_margin": summary["all_drained_by_deadline_minus_margin"],
        "no_early_retries": summary["retried_sooner_than_retry_after"] <= TARGETS["early_retries"],
        "followed_within_retry_after_le_5pct":
            summary["share_followed_within_retry_after"] <= TARGETS["any_within_share"],
        "peak_to_mean_le_3": summary["rate_after_first_5s"]["peak_to_mean"] is not None
        and summary["rate_after_first_5s"]["peak_to_mean"] <= TARGETS["peak_to_mean"],
        "cpu_le_1_5s_per_node": bool(cpus) and len(cpus) == nodes and max(cpus) <= TARGETS["cpu_s_per_node"],
    }
    return {"summary": summary, "nodes": per_node, "undrained_agent_output_tail": outputs}


def apf_text(apf: Optional[ApfConfig]) -> str:
    if apf is None:
        return "off"
    return (f"{apf.seats} seats, {apf.queue} queue places, Retry-After {apf.retry_after_s}s, "
            f"{apf.service_time_s * 1000:g} ms per request")


# ------------------------------------------------------------------------------------ output


def fleet_table(result: Dict[str, object]) -> str:
    rows = []
    for r in result["nodes"]:  # type: ignore[union-attr]
        rows.append((r["node"], r["pods"], _num(r["drained_s"]), _num(r["labelled_drained_s"]),
                     _num(r["slack_to_deadline_s"]),
                     _num(r["slack_to_deadline_minus_margin_s"]), r["requests"], r["requests_per_pod"],
                     r["throttling_answers"], r["retried_sooner_than_retry_after"],
                     r["throttling_answers_followed_within_retry_after"], _num(r["cpu_s"]),
                     _pct(r["cpu_share_of_core"]), _num(r["rss_at_drained_mib"]), r["evictable_left"]))
    return common.table(("node", "pods", "drained s", "labelled s", "to deadline s", "to dl-margin s", "reqs",
                         "reqs/pod", "429s", "early retries", "429s + any req < RA", "CPU s", "CPU %", "RSS MiB", "left"),
                        rows)


def summary_table(s: Dict[str, object]) -> str:
    rate = s["rate_after_first_5s"]  # type: ignore[index]
    met = s["meets_targets"]  # type: ignore[index]
    cpu = s["cpu_s_per_node"] or {}  # type: ignore[index]
    rows = [
        ("every node drained by deadline - DRAIN_MARGIN", f"last at {_num(s['last_drained_s'])} s",
         f"<= {NOTICE_IN_S - s['drain_margin_s']:g} s", common.verdict(met["all_drained_by_deadline_minus_margin"])),
        ("requests retried sooner than Retry-After", s["retried_sooner_than_retry_after"], "0",
         common.verdict(met["no_early_retries"])),
        ("429s followed by any request < Retry-After", f"{s['throttling_answers_followed_within_retry_after']} of "
         f"{s['throttling_answers']} ({_pct(s['share_followed_within_retry_after'])})", "<= 5%",
         common.verdict(met["followed_within_retry_after_le_5pct"])),
        (f"429s crossed on the way (< {IN_FLIGHT_S:g} s; latest)",
         f"{s['throttling_answers_crossed_in_flight']} ({_num(s['latest_crossing_s'])} s)", "", ""),
        ("req/s after 5 s: peak / mean", f"{rate['peak_per_s']} / {rate['mean_per_s']} = {_num(rate['peak_to_mean'])}",
         "<= 3", common.verdict(met["peak_to_mean_le_3"])),
        ("agent CPU per node (max / mean)", f"{_num(cpu.get('max'))} / {_num(cpu.get('mean'))} s", "<= 1.5 s",
         common.verdict(met["cpu_le_1_5s_per_node"])),
        ("nodes whose agent never stored its `drained` label", s["nodes_not_labelled_drained"], "", ""),
        ("peak requests in flight at the server", s["peak_in_flight"], "", ""),
    ]
    apf = s.get("apf_server")
    if apf:
        rows.append(("APF: peak executing / peak queued / rejected",
                     f"{apf['peak_executing']} / {apf['peak_queued']} / {apf['rejected']}", "", ""))
    return common.table(("fleet", "measured", "target", ""), rows)


def _num(value: object) -> str:
    if value is None:
        return "-"
    return f"{float(value):.2f}" if isinstance(value, float) else str(value)  # type: ignore[arg-type]


def _pct(value: object) -> str:
    return "-" if value is None else f"{float(value) * 100:.1f}%"  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ main


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = common.parser(__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=None, help="agents and spot nodes (default 10; smoke 3)")
    ap.add_argument("--pods-per-node", type=int, default=None, help="evictable pods per node (default 30; smoke 4)")
    ap.add_argument("--deployments", type=int, default=None,
                    help="deployments the pods belong to, each spanning every node (default 10; smoke 2)")
    ap.add_argument("--pdb", default=None,
                    help="each deployment's PDB maxUnavailable: N, N%% or none (default 10%%; smoke 50%%)")
    ap.add_argument("--seats", type=int, default=2, help="APF seats (default 2)")
    ap.add_argument("--queue", type=int, default=8, help="APF queue places (default 8)")
    ap.add_argument("--retry-after", type=int, default=2, help="APF Retry-After seconds (default 2)")
    ap.add_argument("--service-ms", type=float, default=5.0, help="APF: ms each request holds its seat (default 5)")
    ap.add_argument("--no-apf", action="store_true", help="the API server without API Priority and Fairness")
    ap.add_argument("--scenario", choices=("fleet", "single", "both"), default="both")
    ap.add_argument("--agent-setting", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting for every agent (repeatable), e.g. DRAIN_PARALLELISM=8")
    args = ap.parse_args(argv)
    for item in args.agent_setting:
        if "=" not in item:
            ap.error(f"--agent-setting wants KEY=VALUE, not {item!r}")
    nodes = args.nodes or (3 if args.smoke else 10)
    pods = args.pods_per_node or (4 if args.smoke else 30)
    deployments = args.deployments or (2 if args.smoke else 10)
    pdb = args.pdb or ("50%" if args.smoke else "10%")
    apf = None if args.no_apf else ApfConfig(seats=args.seats, queue=args.queue, retry_after_s=args.retry_after,
                                             service_time_s=args.service_ms / 1000.0)
    common.banner("fleet drain", args, f"grace {GRACE_S}s x time-scale {TIME_SCALE}, replacements Ready after "
                                       f"{REPLACEMENT_READY_S * TIME_SCALE:g}s, notice in {NOTICE_IN_S}s")
    data: Dict[str, object] = {"grace_s": GRACE_S, "time_scale": TIME_SCALE,
                               "replacement_ready_after_s": REPLACEMENT_READY_S * TIME_SCALE, "targets": TARGETS}
    if args.scenario in ("fleet", "both"):
        result = run_fleet(args, nodes=nodes, pods_per_node=pods, deployments=deployments, pdb=pdb, apf=apf,
                           label="fleet")
        print(fleet_table(result))
        print()
        print(summary_table(result["summary"]))  # type: ignore[arg-type]
        data["fleet"] = result
    if args.scenario in ("single", "both"):
        single_pods = 4 if args.smoke else 12
        result = run_fleet(args, nodes=1, pods_per_node=single_pods, deployments=2 if args.smoke else 3, pdb="1",
                           apf=None, label="single node")
        row = result["nodes"][0]  # type: ignore[index]
        share = row["cpu_share_of_core"]
        ok = share is not None and share <= TARGETS["single_cpu_share"]
        result["summary"]["meets_targets"] = {"cpu_share_le_5pct": ok}  # type: ignore[index]
        print(common.table(("single node", "pods", "drained s", "agent CPU s", "CPU share of a core", "reqs",
                            "target", ""),
                           [(row["node"], row["pods"], _num(row["drained_s"]), _num(row["cpu_s"]), _pct(share),
                             row["requests"], "<= 5%", common.verdict(ok))]))
        data["single"] = result
    common.write_result(NAME, args, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
