"""One poll over the IMDS paths: which failures end it early. Fake IMDS, no sockets."""
from __future__ import annotations

import json
from typing import Dict, List

from nodeagent.imds import ImdsError, ImdsUnavailable, ImdsUnreachable
from nodeagent.notices import SCHEDULED_PATH, SPOT_ACTION_PATH
from nodeagent.poll import poll_once
from tests.fakes import T0

KINDS = ["spot-itn", "asg", "rebalance", "scheduled"]
EVENT = {"NotBefore": "21 Dec 2026 09:00:00 GMT", "Code": "system-reboot", "EventId": "instance-event-01",
         "State": "active"}


class FailingImds:
    def __init__(self, failures: Dict[str, ImdsError]):
        self.failures = failures
        self.gets: List[str] = []

    def get(self, path: str):
        self.gets.append(path)
        if path in self.failures:
            raise self.failures[path]
        return json.dumps([EVENT]) if path == SCHEDULED_PATH else None


def test_an_error_answer_on_one_path_does_not_stop_the_others():
    imds = FailingImds({SPOT_ACTION_PATH: ImdsUnavailable("IMDS answered HTTP 500 to spot/instance-action")})
    result = poll_once(imds, KINDS, T0)  # type: ignore[arg-type]
    assert len(imds.gets) == 4
    assert list(result.notices) == ["scheduled-instance-event-01"]
    assert set(result.answered) == {"asg", "rebalance", "scheduled"}
    assert "HTTP 500" in result.errors["spot-itn"]


def test_no_connection_ends_the_poll():
    imds = FailingImds({SPOT_ACTION_PATH: ImdsUnreachable("IMDS at http://x connection refused")})
    result = poll_once(imds, KINDS, T0)  # type: ignore[arg-type]
    assert imds.gets == [SPOT_ACTION_PATH]
    assert not result.answered and list(result.errors) == ["spot-itn"]
