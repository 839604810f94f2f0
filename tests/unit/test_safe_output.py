"""What the agent prints and posts carries no control characters or chat markup from its inputs:
the terminal rule (nodeagent/terminal.py) for status, drill and check-config, and Slack's escaping
(nodeagent/report/webhook.py). Pure rules; check-config runs in-process."""
from __future__ import annotations

import io
import json

from nodeagent import cli, terminal
from nodeagent.report.webhook_message import SLACK_TEMPLATE, render, slack_escape, slack_fields
from nodeagent.timeline import Timeline

ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b31m\x00\r"


def test_printable_escapes_every_control_character_and_keeps_the_lines():
    assert terminal.printable(f"a{ESCAPES}b\nsecond line\u2028x") == (
        "a\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x00\\x0db\nsecond line\\u2028x")
    assert terminal.printable("plain text, caf\u00e9 \u2192 ok") == "plain text, caf\u00e9 \u2192 ok"


def test_say_prints_printable_text(capsys):
    terminal.say(f"status: {ESCAPES}")
    out = capsys.readouterr().out
    assert out == "status: \\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x00\\x0d\n"


def test_a_timeline_line_is_one_printable_line():
    out = io.StringIO()
    Timeline(started=0.0, out=out).say("agent", f"evicted x\nforged line{ESCAPES}")
    text = out.getvalue()
    assert text.count("\n") == 1 and "\x1b" not in text and "\x07" not in text
    assert text.rstrip("\n").endswith("evicted x | forged line\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x00\\x0d")


def test_check_config_prints_no_control_characters(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NODEAGENT_CONFIG_DIR", str(tmp_path))
    assert cli.main(["check-config", "--set", f"KUBECONFIG=/tmp/{ESCAPES}kubeconfig"]) == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("KUBECONFIG")]
    assert "/tmp/\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x00\\x0dkubeconfig" in line
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out


def test_slack_escape_is_slacks_own_three_entities():
    assert slack_escape("<!channel> <https://evil.example/|click> & co") == (
        "&lt;!channel&gt; &lt;https://evil.example/|click&gt; &amp; co")
    assert slack_escape("&lt;") == "&amp;lt;"  # already-escaped text is shown as typed, too
    assert slack_escape("drained: 3 evicted") == "drained: 3 evicted"


def test_every_string_field_of_a_slack_message_is_escaped_and_the_template_markup_kept():
    fields = {"icon": ":warning:", "drill_prefix": "", "headline": "Spot <b>", "node": "n<!here>",
              "summary": "a <https://x|y> & b", "evicted": 3}
    escaped = slack_fields(fields)
    assert escaped["evicted"] == 3 and escaped["icon"] == ":warning:"
    text = json.loads(render(SLACK_TEMPLATE, escaped))["text"]
    assert text == ":warning: *Spot &lt;b&gt;* on `n&lt;!here&gt;`: a &lt;https://x|y&gt; &amp; b"
    assert "<" not in text and ">" not in text
