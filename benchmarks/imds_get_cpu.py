"""Benchmark 4b: CPU per IMDS GET, by HTTP transport, measured in one run (the idle-CPU breakdown).

The idle daemon's CPU is almost all its four IMDS GETs a second, so this compares, against the
IMDS simulator on loopback (in another process), the process CPU time (time.process_time) that
one GET costs with:

- nodeagent's ImdsClient as it is: the whole contract (token, deadline, retries, body cap);
- the candidate transports for that client's poll GET, each bare (token header, keep-alive, body
  read, nothing else):
  - requests through the session's adapter with a prepared request (what ImdsClient used
    before it moved to http.client),
  - urllib3's HTTPConnectionPool directly (the layer requests sits on),
  - the standard library's http.client with one kept-alive connection (the floor);
- a textbook requests.Session.get with the token header, for reference.

The transports take turns, round after round, so machine noise hits each alike; the medians and
their ratios are the result. "Idle CPU at 4 GETs/s" projects each onto the daemon's poll.

    python -m benchmarks.imds_get_cpu [--smoke] [--python PATH] [--tag T]
"""
from __future__ import annotations

import http.client
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

NAME = "imds_get_cpu"
PATHS = ("spot/instance-action", "events/recommendations/rebalance", "events/maintenance/scheduled",
         "autoscaling/target-lifecycle-state")
GETS_PER_SECOND = len(PATHS)  # every path, every 1 s poll
FLOOR = "http.client kept alive"


def _transports(base_url: str) -> Dict[str, Callable[[str], bytes]]:
    import requests
    import urllib3

    from nodeagent.imds import TOKEN_HEADER, TTL_HEADER, ImdsClient, ImdsOptions

    client = ImdsClient(ImdsOptions(base_url=base_url))
    session = requests.Session()
    session.trust_env = False
    token = session.put(base_url + "/latest/api/token", headers={TTL_HEADER: "21600"}, timeout=2).text
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=1)
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=1, retries=False,
                                      timeout=urllib3.Timeout(connect=0.5, read=1))
    adapter = session.get_adapter(base_url)
    prepared: Dict[str, requests.PreparedRequest] = {}

    def nodeagent(path: str) -> bytes:
        return client.get_bytes(path) or b""

    def requests_adapter(path: str) -> bytes:
        url = f"{base_url}/latest/meta-data/{path}"
        if url not in prepared:
            prepared[url] = session.prepare_request(
                requests.Request("GET", url, headers={TOKEN_HEADER: token}))
        response = adapter.send(prepared[url].copy(), timeout=(0.5, 1), stream=True)
        try:
            return b"".join(response.iter_content(8192))
        finally:
            response.close()

    def urllib3_pool(path: str) -> bytes:
        response = pool.urlopen("GET", f"/latest/meta-data/{path}", headers={TOKEN_HEADER: token},
                                redirect=False, preload_content=False)
        try:
            return response.read(65537)
        finally:
            response.release_conn()

    def textbook_requests(path: str) -> bytes:
        return session.get(f"{base_url}/latest/meta-data/{path}", headers={TOKEN_HEADER: token},
                           timeout=(0.5, 1), allow_redirects=False).content

    def bare_http_client(path: str) -> bytes:
        connection.request("GET", f"/latest/meta-data/{path}", headers={TOKEN_HEADER: token})
        return connection.getresponse().read()

    return {"nodeagent ImdsClient": nodeagent,
            "requests adapter, prepared": requests_adapter,
            "urllib3 HTTPConnectionPool": urllib3_pool,
            "http.client kept alive": bare_http_client,
            "requests.Session.get": textbook_requests}


def child(base_url: str, rounds: int, gets: int) -> Dict[str, List[float]]:
    """Runs in the measured interpreter: microseconds of CPU per GET, per round, per transport."""
    transports = _transports(base_url)
    for get in transports.values():  # warm: connections open, token fetched, caches filled
        for path in PATHS:
            get(path)
    samples: Dict[str, List[float]] = {name: [] for name in transports}
    for _ in range(rounds):
        for name, get in transports.items():
            started = time.process_time()
            for i in range(gets):
                get(PATHS[i % len(PATHS)])
            samples[name].append((time.process_time() - started) / gets * 1e6)
    return samples


def measure(python: str, rounds: int, gets: int) -> Dict[str, object]:
    from nodeagent_sim.imds import ImdsSim

    with ImdsSim() as sim:
        out = subprocess.run(
            [python, "-m", "benchmarks.imds_get_cpu", "--child", sim.url, str(rounds), str(gets)],
            cwd=str(common.REPO), capture_output=True, text=True, timeout=600, check=True,
        ).stdout
    samples = json.loads(out.strip().splitlines()[-1])
    floor = statistics.median(samples[FLOOR])
    result = {}
    for name, values in samples.items():
        median = statistics.median(values)
        result[name] = {
            "us_per_get_median": round(median, 1),
            "us_per_get_rounds": [round(v, 1) for v in values],
            "ratio_to_http_client": round(median / floor, 2),
            "idle_cpu_percent_at_4_gets_per_s": round(median * GETS_PER_SECOND / 1e4, 3),
        }
    return {"rounds": rounds, "gets_per_round": gets, "transports": result}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    ap = common.parser(__doc__.split("\n")[0])
    args = ap.parse_args(argv)
    rounds, gets = (2, 100) if args.smoke else (10, 1000)
    common.banner("CPU per IMDS GET by transport", args, f"{rounds} rounds of {gets} GETs each")
    m = measure(args.python, rounds, gets)
    rows = [(name, f"{t['us_per_get_median']:.0f} us", f"{t['ratio_to_http_client']:.2f}x",
             f"{t['idle_cpu_percent_at_4_gets_per_s']:.3f} %")
            for name, t in m["transports"].items()]
    print(common.table(("transport", "CPU per GET", "vs http.client", "idle CPU at 4 GETs/s"), rows))
    common.write_result(NAME, args, {"measured": m})
    return 0


if __name__ == "__main__":
    sys.exit(main())
