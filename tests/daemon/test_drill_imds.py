"""The drill's IMDS responder (nodeagent.drill_imds): it serves the identity and the one notice the
drill chose, and nothing outside the drill process can change that."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import requests

from nodeagent.drill_imds import TOKEN_HEADER, TTL_HEADER, DrillIdentity, DrillImds, DrillNotice

IDENTITY = DrillIdentity(instance_id="i-0abc", availability_zone="eu-west-1b", region="eu-west-1",
                         instance_type="m6i.large", life_cycle="spot", local_hostname="ip-10-1-2-3.internal")
NOW = datetime(2026, 12, 4, 10, 0, 0, tzinfo=timezone.utc)
NOTICE_PATHS = ("spot/instance-action", "spot/termination-time", "events/recommendations/rebalance",
                "events/maintenance/scheduled", "autoscaling/target-lifecycle-state")

# What a second process on the node would try: the simulator's control API and writes anywhere.
ATTACKER = r"""
import json, sys, requests
url = sys.argv[1]
answers = []
for path, doc in [("/_sim/spot", {"in": 0, "action": "terminate"}), ("/_sim/rebalance", {}),
                  ("/_sim/asg", {"state": "Terminated"}), ("/_sim/clear", {}),
                  ("/latest/meta-data/spot/instance-action", {"action": "terminate", "time": "2020-01-01T00:00:00Z"}),
                  ("/latest/meta-data/events/recommendations/rebalance", {}),
                  ("/latest/api/token/../../_sim/spot", {"in": 0})]:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        reply = requests.request(method, url + path, data=json.dumps(doc), timeout=5,
                                 headers={"Content-Type": "application/json"})
        answers.append([method, path, reply.status_code])
answers.append(["GET", "/_sim/state", requests.get(url + "/_sim/state", timeout=5).status_code])
print(json.dumps(answers))
"""


def token(url: str) -> str:
    reply = requests.put(url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5)
    assert reply.status_code == 200, reply.text
    return reply.text


def get(url: str, path: str, tok: str) -> requests.Response:
    return requests.get(f"{url}/latest/meta-data/{path}", headers={TOKEN_HEADER: tok}, timeout=5)


def served_notices(url: str) -> dict:
    tok = token(url)
    return {path: (r.status_code, r.text) for path in NOTICE_PATHS for r in [get(url, path, tok)]}


@pytest.fixture
def responder():
    imds = DrillImds(IDENTITY, DrillNotice("rebalance", 20)).start()
    yield imds
    imds.stop()


def test_binds_loopback_on_an_ephemeral_port(responder):
    assert responder.url.startswith("http://127.0.0.1:")
    assert not responder.url.endswith(":80")


def test_serves_the_real_identity_with_a_token_only(responder):
    assert requests.get(responder.url + "/latest/meta-data/instance-id", timeout=5).status_code == 401
    tok = token(responder.url)
    assert get(responder.url, "instance-id", tok).text == "i-0abc"
    assert get(responder.url, "placement/availability-zone", tok).text == "eu-west-1b"
    assert get(responder.url, "placement/region", tok).text == "eu-west-1"
    assert get(responder.url, "instance-type", tok).text == "m6i.large"
    assert get(responder.url, "instance-life-cycle", tok).text == "spot"
    assert get(responder.url, "local-hostname", tok).text == "ip-10-1-2-3.internal"
    assert get(responder.url, "instance-id", "not-a-token").status_code == 401
    assert requests.put(responder.url + "/latest/api/token", timeout=5).status_code == 400  # no TTL


def test_no_notice_until_armed_then_exactly_the_chosen_one(responder):
    before = served_notices(responder.url)
    assert before["events/recommendations/rebalance"][0] == 404
    assert before["spot/instance-action"][0] == 404
    assert before["events/maintenance/scheduled"] == (200, "[]")
    assert before["autoscaling/target-lifecycle-state"] == (200, "InService")
    responder.arm(NOW)
    after = served_notices(responder.url)
    assert json.loads(after["events/recommendations/rebalance"][1]) == {"noticeTime": "2026-12-04T10:00:00Z"}
    assert after["spot/instance-action"][0] == 404  # a rebalance drill never becomes a spot notice
    assert after["spot/termination-time"][0] == 404
    assert after["autoscaling/target-lifecycle-state"] == (200, "InService")
    responder.arm(datetime(2030, 1, 1, tzinfo=timezone.utc))  # once only
    assert served_notices(responder.url) == after


@pytest.mark.parametrize("kind,path,expected", [
    ("spot-itn", "spot/instance-action", {"action": "terminate", "time": "2026-12-04T10:02:00Z"}),
    ("spot-itn", "spot/termination-time", "2026-12-04T10:02:00Z"),
    ("asg", "autoscaling/target-lifecycle-state", "Terminated"),
])
def test_each_kind_serves_its_own_notice(kind, path, expected):
    with DrillImds(IDENTITY, DrillNotice(kind, 120)) as imds:
        imds.arm(NOW)
        body = get(imds.url, path, token(imds.url)).text
        assert (json.loads(body) if isinstance(expected, dict) else body) == expected


def test_scheduled_drill_serves_one_active_event():
    with DrillImds(IDENTITY, DrillNotice("scheduled", 600)) as imds:
        imds.arm(NOW)
        events = json.loads(get(imds.url, "events/maintenance/scheduled", token(imds.url)).text)
        assert [(e["Code"], e["State"], e["NotBefore"]) for e in events] == \
            [("system-maintenance", "active", "4 Dec 2026 10:10:00 GMT")]


def test_refuses_everything_else(responder):
    url = responder.url
    tok = token(url)
    assert requests.get(url + "/latest/api/token", timeout=5).status_code == 405
    assert requests.post(url + "/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5).status_code == 405
    assert requests.post(url + "/latest/meta-data/spot/instance-action", data="{}",
                         headers={TOKEN_HEADER: tok}, timeout=5).status_code == 405
    assert requests.put(url + "/latest/meta-data/instance-id", data="i-evil",
                        headers={TOKEN_HEADER: tok}, timeout=5).status_code == 405
    assert get(url, "iam/security-credentials/", tok).status_code == 404
    assert get(url, "user-data", tok).status_code == 404
    for method in ("GET", "POST", "PUT"):
        assert requests.request(method, url + "/_sim/spot", data="{}", timeout=5).status_code == 404
    assert requests.get(url + "/_sim/state", timeout=5).status_code == 404
    assert requests.put(url + "/latest/api/token", headers={TTL_HEADER: "60", "X-Forwarded-For": "1.2.3.4"},
                        timeout=5).status_code == 403


@pytest.mark.parametrize("armed", [False, True])
def test_a_second_process_cannot_change_what_it_serves(responder, armed):
    if armed:
        responder.arm(NOW)
    before = served_notices(responder.url)
    result = subprocess.run([sys.executable, "-c", ATTACKER, responder.url], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert not [a for a in answers if a[2] < 400], answers  # every attempt refused
    assert {a[2] for a in answers} <= {404, 405}, answers
    assert served_notices(responder.url) == before
    assert responder.served() == {**IDENTITY.paths(), **(DrillNotice("rebalance", 20).paths(NOW) if armed
                                                         else DrillNotice("rebalance", 20).quiet_paths())}
