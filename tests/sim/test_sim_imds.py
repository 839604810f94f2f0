"""The IMDS simulator's own semantics, exercised over real loopback sockets with plain HTTP."""
from __future__ import annotations

import http.client as httpclient
import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from nodeagent.notices import parse_rebalance, parse_scheduled, parse_spot_action
from nodeagent_sim.imds import TOKEN_HEADER, TTL_HEADER, ImdsSim
from tests.helpers import wait_for

MD = "/latest/meta-data/"


@pytest.fixture
def sim():
    with ImdsSim() as running:
        yield running


@pytest.fixture
def http(sim):
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


def token(http, sim, ttl="21600"):
    reply = http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: ttl}, timeout=5)
    assert reply.status_code == 200
    return reply.text


def get(http, sim, path, tok=None):
    headers = {TOKEN_HEADER: tok} if tok else {}
    return http.get(sim.url + MD + path, headers=headers, timeout=5)


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [None, "", "0", "-1", "21601", "abc", "1.5"])
def test_token_put_bad_ttl_is_400(sim, http, ttl):
    headers = {} if ttl is None else {TTL_HEADER: ttl}
    reply = http.put(sim.url + "/latest/api/token", headers=headers, timeout=5)
    assert reply.status_code == 400


@pytest.mark.parametrize("ttl", ["1", "21600"])
def test_token_put_ttl_bounds(sim, http, ttl):
    reply = http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: ttl}, timeout=5)
    assert reply.status_code == 200
    assert reply.headers[TTL_HEADER] == ttl
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.text


def test_token_put_with_x_forwarded_for_is_refused(sim, http):
    reply = http.put(
        sim.url + "/latest/api/token",
        headers={TTL_HEADER: "60", "X-Forwarded-For": "10.0.0.1"},
        timeout=5,
    )
    assert reply.status_code == 403


def test_get_on_token_path_is_405(sim, http):
    assert http.get(sim.url + "/latest/api/token", timeout=5).status_code == 405


def test_v2_required_by_default(sim, http):
    assert get(http, sim, "instance-id").status_code == 401
    assert get(http, sim, "instance-id", "not-a-token").status_code == 401
    reply = get(http, sim, "instance-id", token(http, sim))
    assert reply.status_code == 200
    assert reply.text == "i-0123456789abcdef0"


def test_v1_allowed_when_configured_but_bad_tokens_still_401():
    with ImdsSim(require_v2=False) as sim, requests.Session() as http:
        assert get(http, sim, "instance-id").status_code == 200
        assert get(http, sim, "instance-id", "garbage").status_code == 401
    with ImdsSim(allow_v1=True) as sim, requests.Session() as http:
        assert get(http, sim, "instance-id").status_code == 200


def test_get_carries_remaining_ttl(sim, http):
    tok = token(http, sim, "100")
    reply = get(http, sim, "instance-id", tok)
    assert 1 <= int(reply.headers[TTL_HEADER]) <= 100
    missing = get(http, sim, "spot/instance-action", tok)
    assert missing.status_code == 404
    assert TTL_HEADER in missing.headers


def test_tokens_expire_after_ttl(sim, http):
    tok = token(http, sim, "1")
    assert get(http, sim, "instance-id", tok).status_code == 200
    time.sleep(1.2)  # wall time: the token's 1 s TTL must run out
    assert get(http, sim, "instance-id", tok).status_code == 401


def test_expire_tokens(sim, http):
    tok = token(http, sim)
    sim.expire_tokens()
    assert get(http, sim, "instance-id", tok).status_code == 401
    assert get(http, sim, "instance-id", token(http, sim)).status_code == 200


@pytest.mark.parametrize("status", [405, 403])
def test_v1_only_endpoint(sim, http, status):
    sim.set_v1_only(True, status=status)
    reply = http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5)
    assert reply.status_code == status
    assert get(http, sim, "instance-id").status_code == 200
    sim.set_v1_only(False)
    assert get(http, sim, "instance-id").status_code == 401


def test_hang_token_put_never_answers_until_released(sim, http):
    sim.hang_token_put(True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=(1, 0.5))
    sim.hang_token_put(False)
    assert token(http, sim)


# --- responses and paths ----------------------------------------------------------------------


def test_identity_paths_and_text_plain(sim, http):
    tok = token(http, sim)
    expected = {
        "instance-id": "i-0123456789abcdef0",
        "instance-type": "m5.large",
        "instance-life-cycle": "spot",
        "local-hostname": "ip-10-0-1-2.ec2.internal",
        "placement/availability-zone": "us-east-1a",
        "placement/region": "us-east-1",
    }
    for path, value in expected.items():
        reply = get(http, sim, path, tok)
        assert reply.status_code == 200, path
        assert reply.text == value
        assert reply.headers["Content-Type"] == "text/plain"
    sim.set_life_cycle("on-demand")
    assert get(http, sim, "instance-life-cycle", tok).text == "on-demand"
    with pytest.raises(ValueError):
        sim.set_life_cycle("reserved")
    assert get(http, sim, "no/such/path", tok).status_code == 404


def test_nothing_pending_defaults(sim, http):
    tok = token(http, sim)
    assert get(http, sim, "spot/instance-action", tok).status_code == 404
    assert get(http, sim, "spot/termination-time", tok).status_code == 404
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 404
    scheduled = get(http, sim, "events/maintenance/scheduled", tok)
    assert (scheduled.status_code, scheduled.text) == (200, "[]")
    assert get(http, sim, "autoscaling/target-lifecycle-state", tok).text == "InService"
    sim.set_asg_state(None)
    assert get(http, sim, "autoscaling/target-lifecycle-state", tok).status_code == 404


def test_spot_notice_is_text_plain_json_that_parses(sim, http):
    tok = token(http, sim)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    sim.schedule_spot(120, action="stop")
    reply = get(http, sim, "spot/instance-action", tok)
    assert reply.headers["Content-Type"] == "text/plain"
    notice = parse_spot_action(reply.content, before)
    assert notice.action == "stop"
    assert before + timedelta(seconds=118) <= notice.deadline <= before + timedelta(seconds=125)
    legacy = get(http, sim, "spot/termination-time", tok).text
    assert legacy == json.loads(reply.text)["time"]
    sim.set_spot(None)
    assert get(http, sim, "spot/instance-action", tok).status_code == 404


def test_raw_spot_and_other_notices(sim, http):
    tok = token(http, sim)
    sim.set_spot("{not json")
    assert get(http, sim, "spot/instance-action", tok).text == "{not json"
    assert get(http, sim, "spot/termination-time", tok).status_code == 404
    when = datetime(2020, 10, 27, 8, 22, tzinfo=timezone.utc)
    sim.set_rebalance(when)
    rebalance = parse_rebalance(get(http, sim, "events/recommendations/rebalance", tok).content,
                                when)
    assert rebalance.deadline == when
    sim.set_rebalance()
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 200
    sim.set_rebalance(None)
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 404
    event = {"NotBefore": "21 Jan 2019 09:00:43 GMT", "Code": "system-reboot",
             "EventId": "instance-event-0d59937288b749b32", "State": "active",
             "Description": "scheduled reboot", "NotAfter": "21 Jan 2019 09:17:23 GMT"}
    sim.set_scheduled([event])
    [notice] = parse_scheduled(get(http, sim, "events/maintenance/scheduled", tok).content, when).notices
    assert notice.state == "active"
    sim.set_scheduled([dict(event, State="canceled")])
    [notice] = parse_scheduled(get(http, sim, "events/maintenance/scheduled", tok).content, when).notices
    assert notice.state == "canceled"
    sim.set_asg_state("Terminated")
    assert get(http, sim, "autoscaling/target-lifecycle-state", tok).text == "Terminated"
    sim.clear_all()
    assert get(http, sim, "events/maintenance/scheduled", tok).text == "[]"
    assert get(http, sim, "autoscaling/target-lifecycle-state", tok).text == "InService"
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 404


def test_put_on_metadata_path_is_405(sim, http):
    reply = http.put(sim.url + MD + "instance-id", headers={TOKEN_HEADER: token(http, sim)},
                     timeout=5)
    assert reply.status_code == 405


# --- faults -----------------------------------------------------------------------------------


def test_inject_status_count_and_filters(sim, http):
    tok = token(http, sim)
    sim.inject(2, status=503, path_prefix="instance-id", method="GET")
    assert get(http, sim, "instance-type", tok).status_code == 200  # other path: untouched
    assert get(http, sim, "instance-id", tok).status_code == 503
    assert get(http, sim, "instance-id").status_code == 503  # faults come before auth
    assert get(http, sim, "instance-id", tok).status_code == 200
    sim.inject(1, status=429, path_prefix="/latest/api/token", method="PUT")
    reply = http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5)
    assert reply.status_code == 429
    assert token(http, sim)


def test_inject_body_replaces_body_after_auth(sim, http):
    tok = token(http, sim)
    sim.inject(1, body=b"\xff\xfe garbage", path_prefix="spot/")
    assert get(http, sim, "spot/instance-action").status_code == 401  # consumed, still 401
    sim.inject(1, body=b"\xff\xfe garbage", path_prefix="spot/")
    reply = get(http, sim, "spot/instance-action", tok)
    assert (reply.status_code, reply.content) == (200, b"\xff\xfe garbage")
    big = b"x" * 200_000
    sim.inject(1, body=big)
    assert get(http, sim, "instance-id", tok).content == big


def test_inject_delay(sim, http):
    tok = token(http, sim)
    sim.inject(1, delay_s=3, path_prefix="instance-id")
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.get(sim.url + MD + "instance-id", headers={TOKEN_HEADER: tok}, timeout=(1, 0.3))
    assert get(http, sim, "instance-id", tok).status_code == 200


def test_clear_faults_keeps_notices(sim, http):
    tok = token(http, sim)
    sim.schedule_spot(120)
    sim.inject(5, status=500, path_prefix="spot/")
    assert get(http, sim, "spot/instance-action", tok).status_code == 500
    sim.clear_faults()
    reply = get(http, sim, "spot/instance-action", tok)
    assert reply.status_code == 200 and json.loads(reply.text)["action"] == "terminate"


def test_inject_validates_arguments(sim):
    with pytest.raises(ValueError):
        sim.inject(0, status=500)
    with pytest.raises(ValueError):
        sim.inject(1, status=1000)
    with pytest.raises(ValueError):
        sim.set_v1_only(True, status=500)


# --- connections and observability ------------------------------------------------------------


def test_keep_alive_and_content_length(sim):
    conn = httpclient.HTTPConnection("127.0.0.1", sim.port, timeout=5)
    try:
        conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
        reply = conn.getresponse()
        tok = reply.read().decode()
        assert reply.version == 11
        for _ in range(5):
            conn.request("GET", MD + "instance-id", headers={TOKEN_HEADER: tok})
            reply = conn.getresponse()
            body = reply.read()
            assert reply.getheader("Content-Length") == str(len(body))
            assert not reply.will_close
    finally:
        conn.close()
    assert sim.connections == 1
    log = sim.request_log
    assert [(m, p, s) for _, m, p, s in log] == [("PUT", "/latest/api/token", 200)] + [
        ("GET", MD + "instance-id", 200)
    ] * 5
    assert all(a[0] <= b[0] for a, b in zip(log, log[1:]))
    counters = sim.counters()
    assert counters["requests"] == 6 and counters["tokens_issued"] == 1
    assert counters["status_200"] == 6


def test_stop_closes_keep_alive_connections_and_port():
    sim = ImdsSim().start()
    port = sim.port
    conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
    conn.getresponse().read()
    sim.stop()
    with pytest.raises((OSError, httpclient.HTTPException)):
        conn.request("PUT", "/latest/api/token", headers={TTL_HEADER: "60"})
        conn.getresponse().read()
    conn.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    sim.stop()  # idempotent


def test_stop_releases_a_hung_put_promptly():
    sim = ImdsSim().start()
    sim.hang_token_put(True)
    sock = socket.create_connection(("127.0.0.1", sim.port), timeout=10)
    sock.sendall(b"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\n"
                 + TTL_HEADER.encode() + b": 60\r\nContent-Length: 0\r\n\r\n")
    # Held, not merely accepted: a stop between the accept and the read of the request would
    # close the connection before the PUT was ever seen (a loaded machine made that happen).
    wait_for(lambda: sim.counters()["held"], 10, message="the PUT held")
    assert sim.counters()["held"] == 1
    started = time.monotonic()
    sim.stop()
    assert sock.recv(1024) == b""  # closed without an answer
    sock.close()
    assert time.monotonic() - started < 8
    # The handler thread logs the PUT as it lets go; stop() does not wait for handler threads.
    wait_for(lambda: sim.request_log, 10, message="the held PUT logged")
    assert [entry[1:] for entry in sim.request_log] == [("PUT", "/latest/api/token", 0)]
    assert sim.counters()["held"] == 0


# --- HTTP control API -------------------------------------------------------------------------


def control(http, sim, name, doc=None):
    return http.post(f"{sim.url}/_sim/{name}", json=doc if doc is not None else {}, timeout=5)


def test_control_api_over_http(sim, http):
    tok = token(http, sim)
    assert control(http, sim, "spot", {"in": 90, "action": "hibernate"}).json() == {"ok": True}
    assert json.loads(get(http, sim, "spot/instance-action", tok).text)["action"] == "hibernate"
    control(http, sim, "spot", {"body": {"action": "stop", "time": "2017-09-18T08:22:00Z"}})
    assert get(http, sim, "spot/termination-time", tok).text == "2017-09-18T08:22:00Z"
    control(http, sim, "spot", {"clear": True})
    assert get(http, sim, "spot/instance-action", tok).status_code == 404

    control(http, sim, "rebalance", {"time": "2020-10-27T08:22:00Z"})
    assert get(http, sim, "events/recommendations/rebalance", tok).text == (
        '{"noticeTime": "2020-10-27T08:22:00Z"}'
    )
    control(http, sim, "rebalance", {"clear": True})
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 404
    control(http, sim, "rebalance", {})
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 200

    events = [{"NotBefore": "1 Jan 2020 01:03:47 GMT", "Code": "instance-stop",
               "EventId": "instance-event-1", "State": "active"}]
    control(http, sim, "scheduled", {"events": events})
    assert json.loads(get(http, sim, "events/maintenance/scheduled", tok).text) == events
    control(http, sim, "asg", {"state": "Terminated"})
    assert get(http, sim, "autoscaling/target-lifecycle-state", tok).text == "Terminated"
    control(http, sim, "life-cycle", {"life_cycle": "on-demand"})
    assert get(http, sim, "instance-life-cycle", tok).text == "on-demand"

    control(http, sim, "clear")
    assert get(http, sim, "events/maintenance/scheduled", tok).text == "[]"
    assert get(http, sim, "events/recommendations/rebalance", tok).status_code == 404

    control(http, sim, "expire-tokens")
    assert get(http, sim, "instance-id", tok).status_code == 401
    tok = token(http, sim)

    control(http, sim, "inject", {"count": 1, "status": 500, "path_prefix": "instance-id"})
    assert get(http, sim, "instance-id", tok).status_code == 500
    control(http, sim, "inject", {"count": 1, "body_b64": "/w==", "path_prefix": "instance-id"})
    assert get(http, sim, "instance-id", tok).content == b"\xff"

    control(http, sim, "v1-only", {"enabled": True, "status": 403})
    assert http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: "5"},
                    timeout=5).status_code == 403
    control(http, sim, "v1-only", {"enabled": False})
    control(http, sim, "hang-token-put", {"enabled": True})
    with pytest.raises(requests.exceptions.ReadTimeout):
        http.put(sim.url + "/latest/api/token", headers={TTL_HEADER: "5"}, timeout=(1, 0.3))
    control(http, sim, "hang-token-put", {"enabled": False})

    state = http.get(sim.url + "/_sim/state", timeout=5).json()
    assert state["counters"]["tokens_issued"] == 2
    assert all(not entry[2].startswith("/_sim") for entry in state["request_log"])
    assert ["GET", MD + "instance-id", 500] in [entry[1:] for entry in state["request_log"]]


@pytest.mark.parametrize(
    "name, body, status",
    [
        ("spot", b"{nope", 400),
        ("spot", b"[1, 2]", 400),
        ("nope", b"{}", 404),
        ("life-cycle", b'{"life_cycle": "reserved"}', 400),
        ("life-cycle", b"{}", 400),
        ("inject", b'{"count": 0, "status": 500}', 400),
        ("scheduled", b'{"events": 5}', 400),
        ("rebalance", b'{"time": "yesterday"}', 400),
    ],
)
def test_control_api_rejects_bad_requests(sim, http, name, body, status):
    reply = http.post(f"{sim.url}/_sim/{name}", data=body, timeout=5)
    assert reply.status_code == status
    assert "error" in reply.json()
    assert http.get(f"{sim.url}/_sim/spot", timeout=5).status_code == 405


# --- nodeagent imds-sim ------------------------------------------------------------------------


def test_main_imds_sim_serves_until_sigterm():
    code = "from nodeagent_sim.imds import main_imds_sim; raise SystemExit(main_imds_sim(0))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split("listening on ")[1].split()[0]
        with requests.Session() as http:
            assert http.post(url + "/_sim/spot", json={"in": 60}, timeout=5).json() == {"ok": True}
            tok = http.put(url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5).text
            reply = http.get(url + MD + "spot/instance-action", headers={TOKEN_HEADER: tok},
                             timeout=5)
            assert json.loads(reply.text)["action"] == "terminate"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_main_imds_sim_reports_busy_port():
    with ImdsSim() as sim:
        code = ("from nodeagent_sim.imds import main_imds_sim; "
                f"raise SystemExit(main_imds_sim({sim.port}))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=30)
    assert done.returncode == 1
    assert "cannot listen" in done.stderr
