"""The drill's decisions about the daemon: where its state is read, and when --undo must leave the
node alone because a real notice took it over during the drill (pure: no files, no API)."""
from __future__ import annotations

import pytest

from nodeagent.drill_checks import DaemonAtStart, daemon_state_dirs, real_notice_holding_node
from nodeagent.state import UNIT_STATE_DIR, StateRead

UNIT_FILE = f"{UNIT_STATE_DIR}/state.json"
DRILL_NOTICE = "spot-itn-drill"


def node(notice_id=None) -> dict:
    labels = {"kubernetes.io/hostname": "n1"}
    if notice_id:
        labels["nodeagent.io/notice-id"] = notice_id
    return {"metadata": {"name": "n1", "labels": labels}, "spec": {"unschedulable": True}}


def state(data=None, *, missing=False, error=None) -> StateRead:
    return StateRead(UNIT_FILE, data, error, missing=missing)


AT_START = DaemonAtStart(notes=[], last_notices={UNIT_FILE: "spot-itn-old"})


@pytest.mark.parametrize("configured", ["/tmp/elsewhere", "/var/lib/other", "relative/dir"])
def test_the_units_state_directory_is_always_read(configured):
    assert daemon_state_dirs(configured)[0] == UNIT_STATE_DIR
    assert len(daemon_state_dirs(configured)) == 2


def test_the_units_state_directory_is_read_once():
    assert daemon_state_dirs(UNIT_STATE_DIR) == [UNIT_STATE_DIR]
    assert daemon_state_dirs(UNIT_STATE_DIR + "/") == [UNIT_STATE_DIR]


def test_undo_goes_ahead_when_nothing_changed():
    idle = state({"busy": False, "last_notice": "spot-itn-old"})
    assert real_notice_holding_node(AT_START, [idle], node(DRILL_NOTICE), DRILL_NOTICE) is None
    assert real_notice_holding_node(AT_START, [state(missing=True)], node(), DRILL_NOTICE) is None


def test_a_busy_daemon_holds_the_node():
    busy = state({"busy": True, "last_notice": "spot-itn-real"})
    why = real_notice_holding_node(AT_START, [busy], node(DRILL_NOTICE), DRILL_NOTICE)
    assert why and "says a real notice is being handled (spot-itn-real)" in why


def test_a_notice_the_daemon_finished_during_the_drill_holds_the_node():
    done = state({"busy": False, "last_notice": "spot-itn-real"})
    why = real_notice_holding_node(AT_START, [done], node(DRILL_NOTICE), DRILL_NOTICE)
    assert why and "handled notice spot-itn-real during the drill" in why


def test_another_notice_on_the_nodes_labels_holds_the_node():
    idle = state({"busy": False, "last_notice": "spot-itn-old"})
    why = real_notice_holding_node(AT_START, [idle], node("spot-itn-real"), DRILL_NOTICE)
    assert why and "label names notice spot-itn-real" in why


def test_a_state_file_that_cannot_be_read_any_more_holds_the_node():
    unreadable = state(error="cannot read: permission denied")
    why = real_notice_holding_node(AT_START, [unreadable], node(DRILL_NOTICE), DRILL_NOTICE)
    assert why and "cannot be checked" in why


def test_a_drill_never_answers_the_real_lifecycle_hook(tmp_path, monkeypatch):
    """The daemon's config names a lifecycle hook; the drill's settings do not, so a real-mode drill
    of an ASG termination cannot complete the real lifecycle action (that would release the node)."""
    import os

    from nodeagent import config
    from nodeagent.drill import DrillPlan, drill_settings

    (tmp_path / "nodeagent.conf").write_text("ASG_LIFECYCLE_HOOK=drain-hook\nASG_NAME=nodes\n")
    (tmp_path / "nodeagent.conf").chmod(0o644)
    monkeypatch.setenv("NODEAGENT_CONFIG_DIR", str(tmp_path))
    base = config.load(os.environ, {})
    assert base.asg_lifecycle_hook == "drain-hook"
    plan = DrillPlan(kind="asg", in_s=30, dry_run=False, undo=False, workdir=str(tmp_path / "drill"))
    settings = drill_settings(base, {}, plan, "http://127.0.0.1:1", "node-a")
    assert settings.asg_lifecycle_hook == "" and settings.dry_run is False
