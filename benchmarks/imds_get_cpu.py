"""CPU per IMDS GET, by HTTP transport, measured in one run (the idle-CPU breakdown).

Most of the idle daemon's CPU goes to its IMDS GETs (each path polled at its own pace), so this
compares, against the IMDS simulator on loopback (in another process), the process CPU time
(time.process_time) that one GET costs with:

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

A tight loop keeps the interpreter's and the CPU's caches warm, which the daemon never has: it
sleeps between polls while other processes run. So a second, paced section does what the daemon
does at POLL_INTERVAL=250ms: every 250 ms it wakes and GETs the two fast paths (spot and ASG)
back to back, and the CPU of that wake-up's GETs is measured (the transports again take turns,
wake-up after wake-up). It adds two rows that are not candidates, to bound what any transport
could reach:
  - h11 (a pure-Python sans-I/O HTTP/1.1 parser on PyPI) over a plain socket, when h11 is
    installed: what a new dependency would buy;
  - a plain socket with the least framing an HTTP/1.1 reply needs (find the end of the headers,
    read Content-Length bytes): the floor a hand-written IMDS parser would approach. The project
    does not ship one (it does not hand-roll what http.client does); the row says what that
    choice costs.
"Idle CPU at 4 wake-ups/s" is the GETs' share of the daemon's idle CPU at 250 ms; the loop's
own work and the wake-up come on top.

    python -m benchmarks.imds_get_cpu [--smoke] [--python PATH] [--tag T]
"""
from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

NAME = "imds_get_cpu"
PATHS = ("spot/instance-action", "events/recommendations/rebalance", "events/maintenance/scheduled",
         "autoscaling/target-lifecycle-state")
GETS_PER_SECOND = len(PATHS)  # every path, every 1 s poll
FLOOR = "http.client kept alive"
# The paced section: the daemon's wake-up at POLL_INTERVAL=250ms (spot and ASG both due).
PACED_GAP_S = 0.25
PACED_PATHS = ("spot/instance-action", "autoscaling/target-lifecycle-state")
WAKEUPS_PER_SECOND = 1 / PACED_GAP_S
H11_ROW = "h11 over a socket (not a dependency)"
SOCKET_ROW = "socket, least framing (floor, not shipped)"


def _host_port(base_url: str) -> Tuple[str, int]:
    host, port = base_url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _transports(base_url: str, token: str) -> Dict[str, Callable[[str], bytes]]:
    import requests
    import urllib3

    from nodeagent.imds import TOKEN_HEADER, ImdsClient, ImdsOptions

    client = ImdsClient(ImdsOptions(base_url=base_url))
    session = requests.Session()
    session.trust_env = False
    host, port = _host_port(base_url)
    connection = http.client.HTTPConnection(host, port, timeout=1)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=1, retries=False,
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


def _bounds(base_url: str, token: str) -> Dict[str, Callable[[str], bytes]]:
    """The paced section's reference rows: h11 (when installed) and the plain-socket floor."""
    from nodeagent.imds import TOKEN_HEADER

    host, port = _host_port(base_url)
    rows: Dict[str, Callable[[str], bytes]] = {}

    def connect() -> socket.socket:
        sock = socket.create_connection((host, port), timeout=1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    try:
        import h11
    except ImportError:
        pass
    else:
        h11_sock = connect()
        h11_state = [h11.Connection(h11.CLIENT)]
        h11_headers = [("Host", host), (TOKEN_HEADER, token)]

        def h11_get(path: str) -> bytes:
            conn = h11_state[0]
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                conn.start_next_cycle()
            request = h11.Request(method="GET", target=f"/latest/meta-data/{path}", headers=h11_headers)
            h11_sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
            body = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(h11_sock.recv(65536))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    return body

        rows[H11_ROW] = h11_get

    plain = connect()

    def socket_floor(path: str) -> bytes:
        plain.sendall(f"GET /latest/meta-data/{path} HTTP/1.1\r\nHost: {host}\r\n"
                      f"{TOKEN_HEADER}: {token}\r\n\r\n".encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data:
            data += plain.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        while len(body) < length:
            body += plain.recv(65536)
        return body

    rows[SOCKET_ROW] = socket_floor
    return rows


def paced_child(base_url: str, wakeups: int) -> Dict[str, List[float]]:
    """Runs in the measured interpreter: microseconds of CPU per wake-up (both fast paths), per
    wake-up, per transport, each after PACED_GAP_S of sleep as in the daemon."""
    from nodeagent.imds import TOKEN_HEADER

    token = _token(base_url)
    transports = {**_transports(base_url, token), **_bounds(base_url, token)}
    for name, get in transports.items():  # the same answers, so every row measures the same work
        answers = [get(path) for path in PACED_PATHS]
        if answers[1] != b"InService":
            raise RuntimeError(f"{name}: unexpected ASG answer {answers[1]!r} ({TOKEN_HEADER} sent?)")
    samples: Dict[str, List[float]] = {name: [] for name in transports}
    for _ in range(wakeups):
        for name, get in transports.items():
            time.sleep(PACED_GAP_S)
            started = time.process_time()
            for path in PACED_PATHS:
                get(path)
            samples[name].append((time.process_time() - started) * 1e6)
    return samples


def _token(base_url: str) -> str:
    """One IMDSv2 token for every bare transport (ImdsClient fetches its own)."""
    from nodeagent.imds import TOKEN_PATH, TTL_HEADER

    connection = http.client.HTTPConnection(*_host_port(base_url), timeout=2)
    try:
        connection.request("PUT", TOKEN_PATH, headers={TTL_HEADER: "21600"})
        return connection.getresponse().read().decode("ascii")
    finally:
        connection.close()


def child(base_url: str, rounds: int, gets: int) -> Dict[str, List[float]]:
    """Runs in the measured interpreter: microseconds of CPU per GET, per round, per transport."""
    transports = _transports(base_url, _token(base_url))
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
    return {"rounds": rounds, "gets_per_round": gets, "transports": _summary(samples, GETS_PER_SECOND)}


def measure_paced(python: str, wakeups: int) -> Dict[str, object]:
    from nodeagent_sim.imds import ImdsSim

    with ImdsSim() as sim:
        out = subprocess.run(
            [python, "-m", "benchmarks.imds_get_cpu", "--paced-child", sim.url, str(wakeups)],
            cwd=str(common.REPO), capture_output=True, text=True, timeout=3600, check=True,
        ).stdout
    samples = json.loads(out.strip().splitlines()[-1])
    return {"wakeups_per_transport": wakeups, "gap_s": PACED_GAP_S, "paths": list(PACED_PATHS),
            "transports": _summary(samples, WAKEUPS_PER_SECOND, unit="wakeup")}


def _summary(samples: Dict[str, List[float]], per_second: float, unit: str = "get") -> Dict[str, object]:
    floor = statistics.median(samples[FLOOR])
    result: Dict[str, object] = {}
    for name, values in samples.items():
        median = statistics.median(values)
        entry: Dict[str, object] = {f"us_per_{unit}_median": round(median, 1)}
        if unit == "get":  # a few long rounds: each one
            entry["us_per_get_rounds"] = [round(v, 1) for v in values]
        else:  # many single wake-ups: their spread
            entry[f"us_per_{unit}_p90"] = round(_p90(values), 1)
        entry["ratio_to_http_client"] = round(median / floor, 2)
        entry[f"idle_cpu_percent_at_{per_second:g}_{unit}s_per_s"] = round(median * per_second / 1e4, 3)
        result[name] = entry
    return result


def _p90(values: List[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        print(json.dumps(child(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    if argv[:1] == ["--paced-child"]:
        print(json.dumps(paced_child(argv[1], int(argv[2]))))
        return 0
    ap = common.parser(__doc__.split("\n")[0])
    args = ap.parse_args(argv)
    rounds, gets = (2, 100) if args.smoke else (10, 1000)
    wakeups = 4 if args.smoke else 120
    common.banner("CPU per IMDS GET by transport", args, f"{rounds} rounds of {gets} GETs each, warm")
    m = measure(args.python, rounds, gets)
    rows = [(name, f"{t['us_per_get_median']:.0f} us", f"{t['ratio_to_http_client']:.2f}x",
             f"{t['idle_cpu_percent_at_4_gets_per_s']:.3f} %")
            for name, t in m["transports"].items()]
    print(common.table(("transport", "CPU per GET", "vs http.client", "idle CPU at 4 GETs/s"), rows))
    print(f"\npaced as the daemon at 250 ms: {wakeups} wake-ups per transport, "
          f"{len(PACED_PATHS)} GETs each ({', '.join(PACED_PATHS)})", flush=True)
    paced = measure_paced(args.python, wakeups)
    rows = [(name, f"{t['us_per_wakeup_median']:.0f} us", f"{t['us_per_wakeup_p90']:.0f} us",
             f"{t['ratio_to_http_client']:.2f}x", f"{t['idle_cpu_percent_at_4_wakeups_per_s']:.3f} %")
            for name, t in paced["transports"].items()]
    print(common.table(("transport", "CPU per wake-up", "p90", "vs http.client", "at 4 wake-ups/s"), rows))
    common.write_result(NAME, args, {"measured": m, "paced": paced})
    return 0


if __name__ == "__main__":
    sys.exit(main())
