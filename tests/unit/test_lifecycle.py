"""The lifecycle-hook rules (nodeagent/lifecycle.py) and the hook thread's choices
(nodeagent/lifecycle_hook.py) with a fake clock and a fake Auto Scaling client: no sockets."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import List, Tuple

import pytest

from nodeagent import config, lifecycle
from nodeagent.aws.autoscaling import AutoScalingError, classify, parse_error
from nodeagent.aws.credentials import CredentialsError, InstanceRoleCredentials, parse_credentials
from nodeagent.aws.endpoints import EndpointError, autoscaling_endpoint
from nodeagent.clock import iso
from nodeagent.lifecycle import HookPolicy
from nodeagent.lifecycle_hook import LifecycleHook
from nodeagent.notice_store import NoticeStore
from nodeagent.state import ACTING, DONE, EXPIRED, SEEN, SKIPPED, AgentState, NoticeRecord
from tests.fakes import T0, FakeClock, FakeImds, MemoryFiles

POLICY = HookPolicy(heartbeat_timeout_s=60, share=0.5, max_hold_s=600)


def asg(phase: str = ACTING, action: str = "Terminated", **fields) -> NoticeRecord:
    return NoticeRecord(id="asg-terminated" if action == "Terminated" else f"asg-{action}", kind="asg",
                        action=action, deadline=iso(T0 + timedelta(seconds=900)), first_seen=iso(T0),
                        response="drain", phase=phase, **fields)


def spot(phase: str) -> NoticeRecord:
    return NoticeRecord(id="spot-1", kind="spot-itn", action="terminate", deadline=iso(T0 + timedelta(seconds=120)),
                        first_seen=iso(T0), response="drain", phase=phase)


# --- the heartbeat schedule ------------------------------------------------------------------------


def test_first_heartbeat_after_the_share_of_the_timeout_then_from_each_heartbeat():
    record = asg()
    assert lifecycle.next_heartbeat(record, POLICY) == T0 + timedelta(seconds=30)
    record.lifecycle_heartbeat_at = iso(T0 + timedelta(seconds=31))
    assert lifecycle.next_heartbeat(record, POLICY) == T0 + timedelta(seconds=61)


def test_the_first_heartbeat_comes_early_by_its_own_jitter_never_late_and_at_most_a_tenth_of_the_gap():
    record = asg()  # the gap is 30 s
    assert lifecycle.next_heartbeat(record, POLICY, early_s=2.0) == T0 + timedelta(seconds=28)
    assert lifecycle.next_heartbeat(record, POLICY, early_s=60.0) == T0 + timedelta(seconds=27), "capped"
    assert lifecycle.next_heartbeat(record, POLICY, early_s=-5.0) == T0 + timedelta(seconds=30), "never late"
    now = T0 + timedelta(seconds=28.5)
    assert lifecycle.heartbeat_due({record.id: record}, POLICY, now, {record.id: 2.0}) == [record.id]
    assert lifecycle.heartbeat_due({record.id: record}, POLICY, now) == []
    assert lifecycle.wake_at({record.id: record}, POLICY, {record.id: 1.0}) == T0 + timedelta(seconds=29)
    record.lifecycle_heartbeat_at = iso(T0 + timedelta(seconds=28))
    assert lifecycle.next_heartbeat(record, POLICY, early_s=2.0) == T0 + timedelta(seconds=58), "then every gap"


def test_no_heartbeat_may_hold_the_instance_past_the_cap():
    record = asg()
    # beats at 30, 60, ... each holds to t + 60: the last allowed is at 540 (holds to 600)
    record.lifecycle_heartbeat_at = iso(T0 + timedelta(seconds=510))
    assert lifecycle.next_heartbeat(record, POLICY) == T0 + timedelta(seconds=540)
    record.lifecycle_heartbeat_at = iso(T0 + timedelta(seconds=540))
    assert lifecycle.next_heartbeat(record, POLICY) is None
    assert lifecycle.heartbeat_due({record.id: record}, POLICY, T0 + timedelta(hours=1)) == []


def test_the_cap_is_also_auto_scalings_own_limit():
    assert HookPolicy(30, 0.5, 172800).cap_s == 3000  # 100 timeouts
    assert HookPolicy(7200, 0.5, 10 ** 7).cap_s == 48 * 3600


def test_heartbeat_due_only_for_an_open_termination_not_yet_settled():
    now = T0 + timedelta(seconds=30)
    open_one = asg(ACTING)
    assert lifecycle.heartbeat_due({open_one.id: open_one}, POLICY, now) == [open_one.id]
    assert lifecycle.heartbeat_due({open_one.id: open_one}, POLICY, now - timedelta(seconds=1)) == []
    for record in (asg(DONE), asg(ACTING, lifecycle_outcome="not waiting"), asg(ACTING, action="Warmed:Stopped"),
                   asg(SEEN, lifecycle_completed_at=iso(T0))):
        assert lifecycle.heartbeat_due({record.id: record}, POLICY, now) == [], record
    waiting = asg(SEEN)  # Kubernetes not up yet: the hold still needs keeping
    assert lifecycle.heartbeat_due({waiting.id: waiting}, POLICY, now) == [waiting.id]


# --- the completion decision -----------------------------------------------------------------------


@pytest.mark.parametrize("phase", [DONE, EXPIRED, SKIPPED, "superseded"])
def test_completion_once_the_response_is_over(phase):
    record = asg(phase)
    assert lifecycle.completion_due({record.id: record}) == [record.id]


def test_no_completion_while_any_response_is_open_or_once_settled():
    done = asg(DONE)
    assert lifecycle.completion_due({done.id: done, "spot-1": spot(ACTING)}) == []  # a superseding drain runs
    assert lifecycle.completion_due({done.id: done, "spot-1": spot(DONE)}) == [done.id]
    assert lifecycle.completion_due({"a": asg(ACTING)}) == []
    assert lifecycle.completion_due({"a": asg(DONE, lifecycle_completed_at=iso(T0))}) == []
    assert lifecycle.completion_due({"a": asg(DONE, lifecycle_outcome="failed: AccessDenied")}) == []
    assert lifecycle.completion_due({"a": asg(DONE, action="Warmed:Terminated")}) == []


def test_held_seconds():
    record = asg(DONE, lifecycle_completed_at=iso(T0 + timedelta(seconds=42.5)))
    assert lifecycle.held_seconds(record) == 42.5
    assert lifecycle.held_seconds(asg(DONE)) is None


# --- the AWS side's pure parts --------------------------------------------------------------------


def test_endpoints_by_partition():
    assert autoscaling_endpoint("us-east-1") == "https://autoscaling.us-east-1.amazonaws.com/"
    assert autoscaling_endpoint("us-east-1", fips=True) == "https://autoscaling-fips.us-east-1.amazonaws.com/"
    assert autoscaling_endpoint("cn-north-1") == "https://autoscaling.cn-north-1.amazonaws.com.cn/"
    assert autoscaling_endpoint("us-gov-west-1", fips=True) == "https://autoscaling-fips.us-gov-west-1.amazonaws.com/"
    assert autoscaling_endpoint("us-iso-east-1") == "https://autoscaling.us-iso-east-1.c2s.ic.gov/"
    with pytest.raises(EndpointError):
        autoscaling_endpoint("cn-north-1", fips=True)
    with pytest.raises(EndpointError):
        autoscaling_endpoint("evil.example.com/x")


def test_error_classification():
    body = (b'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>Sender</Type>'
            b'<Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID i-1</Message>'
            b'</Error><RequestId>r</RequestId></ErrorResponse>')
    code, message = parse_error(body)
    assert (code, classify(400, code, message)) == ("ValidationError", (False, False, True))
    assert classify(403, "AccessDenied", "not authorized") == (False, False, False)
    assert classify(403, "ExpiredToken", "") == (True, True, False)
    assert classify(400, "Throttling", "Rate exceeded") == (True, False, False)
    assert classify(503, "", "") == (True, False, False)
    assert parse_error(b"<html>proxy</html>") == ("", "")


def test_credentials_are_parsed_refreshed_before_expiry_and_never_shown():
    clock = FakeClock()
    imds = FakeImds()
    imds.bodies["iam/security-credentials/"] = "eks-node-role\n"
    body = ('{"Code": "Success", "AccessKeyId": "ASIA1", "SecretAccessKey": "SECRET1", "Token": "TOKEN1", '
            f'"Expiration": "{(T0 + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}"}}')
    imds.bodies["iam/security-credentials/eks-node-role"] = body
    provider = InstanceRoleCredentials(imds, now=clock.now)  # type: ignore[arg-type]
    first = provider.get_frozen_credentials()
    assert (first.access_key, first.secret_key, first.token) == ("ASIA1", "SECRET1", "TOKEN1")
    assert "SECRET1" not in repr(first) and "TOKEN1" not in repr(first)
    provider.get_frozen_credentials()
    assert provider.fetches == 1
    clock.advance(3600 - 299)  # within the refresh margin
    provider.get_frozen_credentials()
    assert provider.fetches == 2
    with pytest.raises(CredentialsError, match="lack SecretAccessKey"):
        parse_credentials('{"Code": "Success", "AccessKeyId": "A", "Token": "T", "Expiration": "x"}', "r")
    imds.bodies["iam/security-credentials/"] = None
    provider.invalidate()
    with pytest.raises(CredentialsError, match="no instance profile"):
        provider.get_frozen_credentials()


# --- the hook thread's choices, driven by hand ------------------------------------------------------


class FakeAutoScaling:
    def __init__(self) -> None:
        self.calls: List[Tuple[str, float]] = []
        self.failures: List[AutoScalingError] = []
        self.endpoint = "https://fake/"
        self.credentials = self

    def invalidate(self) -> None:
        self.calls.append(("invalidate", 0.0))

    def _answer(self, name: str, now: float) -> str:
        self.calls.append((name, now))
        if self.failures:
            raise self.failures.pop(0)
        return "req-1"

    def close(self) -> None:
        pass


class Reporter:
    def __init__(self) -> None:
        self.steps: List[Tuple[str, str]] = []

    def step(self, record, reason: str, message: str) -> None:
        self.steps.append((reason, message))


def make_hook(records, **keys: str):
    clock = FakeClock()
    store = NoticeStore(MemoryFiles(AgentState(notices={r.id: r for r in records})))  # type: ignore[arg-type]
    store.load(AgentState(notices={r.id: r for r in records}))
    client = FakeAutoScaling()
    client.complete_lifecycle_action = lambda g, h, i: client._answer("complete", clock.mono)  # type: ignore
    client.record_lifecycle_action_heartbeat = lambda g, h, i: client._answer("heartbeat", clock.mono)  # type: ignore
    reporter = Reporter()
    settings = config.load_settings([], {}, {"ASG_LIFECYCLE_HOOK": "drain-hook", "ASG_NAME": "nodes",
                                             "ASG_HEARTBEAT_TIMEOUT": "60s", "ASG_HEARTBEAT_SHARE": "0.5",
                                             "ASG_HEARTBEAT_MAX": "10m", **keys})
    stop = threading.Event()
    hook = LifecycleHook(settings, store, clock=clock, stop=stop, reporters=lambda: [reporter],  # type: ignore
                         report=lambda told: store.lifecycle(told.notice_id, **told.fields),
                         imds_factory=FakeImds, client_factory=lambda s, region, imds: client)
    hook.instance_id, hook.region = "i-0123456789abcdef0", "us-east-1"
    return hook, clock, store, client, reporter, stop


def test_a_long_drain_is_heartbeated_on_schedule_and_completed_once():
    hook, clock, store, client, reporter, _ = make_hook([asg(ACTING)])
    clock.current = T0
    for _ in range(145):  # 145 s of drain (beats about 30, 60, 90, 120 s in), a look every second
        hook.tick()
        clock.advance(1.0)
    beats = [t for name, t in client.calls if name == "heartbeat"]
    assert len(beats) == 4 and all(b - a == pytest.approx(30, abs=1.01) for a, b in zip(beats, beats[1:])), client.calls
    assert store.get("asg-terminated").lifecycle_heartbeats == 4
    store.mark_done("asg-terminated", "drained", 0.0)
    hook.tick()
    hook.tick()
    assert [name for name, _ in client.calls].count("complete") == 1
    record = store.get("asg-terminated")
    assert record.lifecycle_outcome == "completed" and record.lifecycle_completed_at is not None
    assert lifecycle.held_seconds(record) == pytest.approx(145, abs=1.01)
    assert [reason for reason, _ in reporter.steps] == ["LifecycleHeartbeat"] * 4 + ["LifecycleCompleted"]


def test_heartbeats_stop_at_the_cap():
    hook, clock, store, client, _, _ = make_hook([asg(ACTING)], ASG_HEARTBEAT_MAX="150s")
    clock.current = T0
    for _ in range(600):
        hook.tick()
        clock.advance(1.0)
    # beats about every 30 s (up to a tenth early, at random): the fourth would hold past 150
    beats = [t - 1000 for name, t in client.calls if name == "heartbeat"]
    gaps = [b - a for a, b in zip([0.0, *beats], beats)]
    assert len(beats) == 3 and all(26.0 <= gap <= 30.0 for gap in gaps), beats


def test_a_failed_completion_is_retried_with_backoff_then_succeeds():
    hook, clock, store, client, reporter, _ = make_hook([asg(DONE)])
    client.failures = [AutoScalingError("CompleteLifecycleAction", "HTTP 503", status=503, retry=True),
                       AutoScalingError("CompleteLifecycleAction", "ExpiredToken", code="ExpiredToken", refresh=True)]
    hook.tick()
    names = [name for name, _ in client.calls]
    assert names == ["complete", "complete", "invalidate", "complete"], names
    times = [t for name, t in client.calls if name == "complete"]
    assert times[1] - times[0] >= 0.5 and times[2] - times[1] >= 1.0  # backoff between attempts
    assert store.get("asg-terminated").lifecycle_outcome == "completed"


def test_a_refused_completion_is_reported_once_and_not_repeated():
    hook, clock, store, client, reporter, _ = make_hook([asg(DONE)])
    client.failures = [AutoScalingError("CompleteLifecycleAction", "HTTP 403 AccessDenied", code="AccessDenied",
                                        status=403)]
    hook.tick()
    hook.tick()
    assert [name for name, _ in client.calls] == ["complete"]
    assert store.get("asg-terminated").lifecycle_outcome.startswith("failed: ")
    assert [reason for reason, _ in reporter.steps] == ["LifecycleFailed"]


def test_an_action_no_longer_waiting_counts_as_released():
    hook, clock, store, client, reporter, _ = make_hook([asg(DONE)])
    client.failures = [AutoScalingError("CompleteLifecycleAction", "No active Lifecycle Action", gone=True)]
    hook.tick()
    hook.tick()
    record = store.get("asg-terminated")
    assert record.lifecycle_outcome == "not waiting" and record.lifecycle_completed_at is not None
    assert [name for name, _ in client.calls] == ["complete"]


def test_stopping_mid_retry_leaves_the_completion_for_the_next_start():
    hook, clock, store, client, reporter, stop = make_hook([asg(DONE)])
    client.failures = [AutoScalingError("CompleteLifecycleAction", "HTTP 503", status=503, retry=True)]
    stop.set()
    hook.tick()
    record = store.get("asg-terminated")
    assert record.lifecycle_completed_at is None and record.lifecycle_outcome == ""
    assert lifecycle.completion_due(store.records()) == ["asg-terminated"]


def test_no_group_name_is_said_once_and_nothing_is_called():
    hook, clock, store, client, reporter, _ = make_hook([asg(DONE)], ASG_NAME="")
    hook.tick()
    hook.tick()
    assert client.calls == [] and "aws:autoscaling:groupName" in hook.problem


def test_dry_run_sends_no_heartbeat_and_no_completion_and_says_what_it_would_send(caplog):
    hook, clock, store, client, reporter, _ = make_hook([asg(ACTING)], DRY_RUN="true")
    clock.current = T0
    with caplog.at_level("INFO", logger="nodeagent.lifecycle"):
        for _ in range(100):  # 100 s of drain: a heartbeat would be due at 30, 60 and 90
            hook.tick()
            clock.advance(1.0)
        store.mark_done("asg-terminated", "drained (dry run)", 0.0)
        hook.tick()
        hook.tick()
    assert client.calls == []
    would_beat = [r.getMessage() for r in caplog.records if "would send RecordLifecycleActionHeartbeat" in r.getMessage()]
    assert len(would_beat) == 3, would_beat
    would_complete = [r.getMessage() for r in caplog.records if "would send CompleteLifecycleAction" in r.getMessage()]
    assert would_complete == ["notice asg-terminated: dry run: would send CompleteLifecycleAction "
                              "(LifecycleActionResult=CONTINUE) for i-0123456789abcdef0 in group nodes, "
                              "hook drain-hook; nothing sent"]
    record = store.get("asg-terminated")
    assert record.lifecycle_outcome == "dry run: not completed" and record.lifecycle_completed_at is None
    assert record.lifecycle_heartbeats == 0 and reporter.steps == []
