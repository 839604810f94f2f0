"""drill_checks: the identity a Node claims when IMDS is unreachable, the node as the drill found
it, and the refusal while the daemon handles a real notice. (--undo's own check:
test_drill_undo.py.)"""

from __future__ import annotations

import pytest

from nodeagent.drill_checks import DrillError, check_daemon_not_busy, identity_from_node, snapshot
from nodeagent.state import StateRead

NODE = {
    "metadata": {
        "name": "ip-10-0-1-2.ec2.internal",
        "labels": {"eks.amazonaws.com/capacityType": "SPOT", "node.kubernetes.io/instance-type": "m5.large",
                   "nodeagent.io/agent": "ready", "team": "web"},
        "annotations": {"nodeagent.io/deadline": "2030-01-01T00:02:00Z", "other": "x"},
    },
    "spec": {"providerID": "aws:///us-east-1a/i-0123456789abcdef0", "unschedulable": True},
}


def test_the_node_claims_its_instance_through_its_provider_id():
    identity = identity_from_node(NODE, "ip-10-0-1-2.ec2.internal")
    assert (identity.instance_id, identity.availability_zone) == ("i-0123456789abcdef0", "us-east-1a")
    assert identity.life_cycle == "spot" and identity.instance_type == "m5.large"


def test_a_node_without_an_aws_provider_id_claims_nothing_real():
    identity = identity_from_node({"metadata": {}, "spec": {"providerID": "kind://x"}}, "n")
    assert (identity.instance_id, identity.availability_zone, identity.life_cycle) == (
        "i-unknown", "unknown", "on-demand")


def test_the_snapshot_keeps_only_what_undo_puts_back():
    taken = snapshot(NODE)
    assert taken.name == "ip-10-0-1-2.ec2.internal" and taken.unschedulable
    assert taken.labels["nodeagent.io/agent"] == "ready" and "team" not in taken.labels
    assert taken.annotations["nodeagent.io/deadline"] == "2030-01-01T00:02:00Z" and "other" not in taken.annotations


def test_a_busy_daemon_refuses_the_drill_and_an_idle_one_is_a_note():
    with pytest.raises(DrillError, match="says a real notice is being handled") as refused:
        check_daemon_not_busy(StateRead("/s/state.json", {"busy": True, "last_notice": "spot-itn-1", "pid": 0}, None))
    assert refused.value.code == 75
    note = check_daemon_not_busy(StateRead("/s/state.json", {"busy": False, "agent_state": "ready"}, None))
    assert note == "daemon state /s/state.json: idle (ready)"
    assert check_daemon_not_busy(StateRead("/s/state.json", None, "missing", missing=True)).startswith("no daemon")
