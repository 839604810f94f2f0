"""nodeagent.kube.eviction_queue: retry order and one probe per disruption budget (pure)."""

from nodeagent.kube.eviction_queue import EvictionQueue, Mode, Role
from nodeagent.kube.pod_rules import PodInfo


def pod(name: str) -> PodInfo:
    return PodInfo(namespace="default", name=name, uid=f"uid-{name}", grace_s=30, tier=0, terminating=False)


def drain_due(queue: EvictionQueue, now: float) -> list:
    out = []
    while (due := queue.pop_due(now)) is not None:
        out.append(due.pod.name)
    return out


def test_pods_come_due_in_time_order_and_a_push_replaces_the_earlier_entry():
    queue = EvictionQueue()
    queue.push(pod("a"), 2.0)
    queue.push(pod("b"), 1.0)
    queue.push(pod("a"), 0.5)  # replaces a's entry at 2.0
    assert queue.next_due() == 0.5
    assert drain_due(queue, 1.0) == ["a", "b"]
    assert drain_due(queue, 5.0) == [], "a's stale entry is dropped"
    assert not queue


def test_one_probe_per_budget_the_rest_park_until_their_last_safe_moment():
    queue = EvictionQueue()
    a, b, c = pod("a"), pod("b"), pod("c")
    assert queue.role_after_refusal(a, "web-pdb") == Role.PROBE
    assert queue.role_after_refusal(b, "web-pdb") == Role.PARKED
    queue.park(b, until=100.0)
    assert queue.role_after_refusal(c, "web-pdb") == Role.PARKED
    queue.park(c, until=90.0)
    assert queue.role_after_refusal(a, "web-pdb") == Role.PROBE, "the probe stays the probe"
    queue.push(a, 1.0)
    assert drain_due(queue, 10.0) == ["a"], "parked pods are not retried"
    assert queue.next_due() == 90.0, "but each is tried at its own last safe moment"
    assert drain_due(queue, 95.0) == ["c"]


def test_when_a_pod_of_the_budget_goes_the_next_parked_one_is_tried_at_once_and_probes():
    queue = EvictionQueue()
    a, b, c = pod("a"), pod("b"), pod("c")
    queue.role_after_refusal(a, "web-pdb")
    for parked in (b, c):
        queue.role_after_refusal(parked, "web-pdb")
        queue.park(parked, until=100.0)
    assert queue.went(a, now=5.0) == b
    assert drain_due(queue, 5.0) == ["b"]
    assert queue.role_after_refusal(b, "web-pdb") == Role.PROBE, "b took over the probe"
    assert queue.role_after_refusal(pod("d"), "web-pdb") == Role.PARKED
    assert queue.went(b, now=6.0) == c
    assert queue.went(c, now=7.0) is None, "d was told it would wait, but was never parked"


def test_a_refusal_naming_no_budget_is_paced_alone_and_budgets_are_independent():
    queue = EvictionQueue()
    assert queue.role_after_refusal(pod("a"), None) == Role.ALONE
    assert queue.role_after_refusal(pod("b"), "one") == Role.PROBE
    assert queue.role_after_refusal(pod("c"), "two") == Role.PROBE


def test_a_probe_given_up_on_hands_over_and_force_mode_is_kept():
    queue = EvictionQueue()
    a, b = pod("a"), pod("b")
    queue.role_after_refusal(a, "web-pdb")
    queue.role_after_refusal(b, "web-pdb")
    queue.park(b, until=100.0)
    queue.left(a)
    due = queue.pop_due(0.0)
    assert due is not None and due.pod == b
    queue.push(a, 0.0, Mode.FORCE, 0.4)
    forced = queue.pop_due(0.0)
    assert forced is not None and forced.mode == Mode.FORCE and forced.backoff == 0.4


def test_waiting_lists_the_live_entries_and_a_pod_that_went_leaves_it():
    queue = EvictionQueue()
    a, b, c = pod("a"), pod("b"), pod("c")
    queue.role_after_refusal(a, "web-pdb")
    queue.push(a, 1.0)
    queue.role_after_refusal(b, "web-pdb")
    queue.park(b, until=100.0)
    queue.push(c, 5.0)
    queue.push(c, 2.0)  # replaces its first entry
    assert sorted(p.name for p in queue.waiting()) == ["a", "b", "c"]
    queue.went(b, now=3.0)  # b left the node on its own while parked
    assert sorted(p.name for p in queue.waiting()) == ["a", "c"]
    assert drain_due(queue, 200.0) == ["a", "c"], "b's entry at its last safe moment is gone too"
