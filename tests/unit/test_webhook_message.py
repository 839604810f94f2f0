"""report/webhook_message: the fields of a message, its rendering and the template file."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from nodeagent.report.webhook_message import DEFAULT_TEMPLATES, TemplateError, load_template, message_fields, render
from nodeagent.state import NoticeRecord

NODE = "ip-10-0-1-2.ec2.internal"
NOW = datetime(2030, 1, 1, 0, 1, 0, tzinfo=timezone.utc)


def record(**changes) -> NoticeRecord:
    base = dict(id="spot-itn-20300101T000200Z", kind="spot-itn", action="terminate",
                deadline="2030-01-01T00:02:00Z", first_seen="2030-01-01T00:00:00Z", response="drain")
    base.update(changes)
    return NoticeRecord(**base)


def test_render_escapes_strings_and_checks_json():
    fields = message_fields("finished", record(outcome='drained: "quoted"\nline', left=["a/b"], evicted=3,
                                               drain_started="2030-01-01T00:00:01Z",
                                               drain_finished="2030-01-01T00:00:11Z", phase="done"),
                            NODE, drill=False, dry_run=False)
    body = json.loads(render(DEFAULT_TEMPLATES["json"], fields))
    assert body["outcome"] == 'drained: "quoted"\nline' and body["left"] == 1 and body["evicted"] == 3
    assert body["drain_seconds"] == 10.0
    with pytest.raises(TemplateError, match="unknown field"):
        render('{"x": "${nope}"}', fields)
    with pytest.raises(TemplateError, match="JSON"):
        render("not json ${node}", fields)
    slack = json.loads(render(DEFAULT_TEMPLATES["slack"], fields))
    assert slack["text"].startswith(":x: *Drain incomplete*")  # a pod was left


def test_a_notice_message_counts_down_to_the_deadline():
    fields = message_fields("notice", record(), NODE, drill=True, dry_run=True, now=NOW)
    assert fields["deadline_in_s"] == 60 and fields["headline"] == "Spot interruption notice"
    assert fields["summary"] == "terminate, deadline 2030-01-01T00:02:00Z (in 60s); response: drain [dry run]"
    assert fields["drill_prefix"] == "[drill] " and fields["icon"] == ":warning:"


@pytest.mark.parametrize("reason, headline, icon", [
    ("LifecycleCompleted", "Lifecycle action completed", ":white_check_mark:"),
    ("LifecycleFailed", "Lifecycle action failed", ":x:"),
])
def test_lifecycle_messages_name_the_step(reason, headline, icon):
    fields = message_fields("lifecycle", record(), NODE, drill=False, dry_run=False, now=NOW,
                            message="CONTINUE sent", reason=reason)
    assert (fields["headline"], fields["icon"]) == (headline, icon)
    assert fields["summary"] == "spot interruption notice spot-itn-20300101T000200Z: CONTINUE sent"


def test_a_bad_template_file_falls_back_to_the_built_in_one(tmp_path):
    bad = tmp_path / "bad.tmpl"
    bad.write_text('{"text": ${node}}')  # a string field outside quotes: not JSON
    text, problem = load_template("slack", str(bad))
    assert text == DEFAULT_TEMPLATES["slack"] and "does not render to JSON" in problem
    text, problem = load_template("json", str(tmp_path / "missing.tmpl"))
    assert text == DEFAULT_TEMPLATES["json"] and "cannot read" in problem
