"""Hostile input: answers, messages and files crafted to hurt the agent.

End to end: the real daemon (`python -m nodeagent run`) against the IMDS and Kubernetes API
simulators over loopback HTTPS. docs/hostile-input.md lists each case.
"""
from __future__ import annotations

import json
from pathlib import Path

from tests.cluster import NODE, Cluster
from tests.helpers import NotifySocket, run_cli, wait_for
from tests.servers import Receiver

DEEP = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError on this


def test_deeply_nested_json_in_eviction_answers_does_not_abort_the_drain(tmp_path: Path):
    """One pod's evictions always answer 201 with a 100k-deep nested JSON body, another's answer
    500 with one once: the drain goes on, evicts every other pod, and reports the one it could not."""
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=6)
        cluster.start_agent()
        cluster.kube.inject(count=100_000, status=201, method="POST", path_regex=r"/web-0/eviction$", body=DEEP)
        cluster.kube.inject(count=1, status=500, method="POST", path_regex=r"/web-1/eviction$", body=DEEP)
        cluster.spot(15)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=40)
        cluster.finish()
        output = cluster.daemon.output()
        assert "RecursionError" not in output.replace("response is not JSON (RecursionError)", ""), output
        assert cluster.find(r"eviction of default/web-0 got a malformed answer \(HTTP 201: response is not JSON "
                            r"\(RecursionError\)\); retrying"), output
        assert cluster.find(r"eviction of default/web-1 got HTTP 500; retrying"), output
        assert cluster.find(r"drain incomplete: 6 evicted, 0 forced, 1 left, 0 failed of 7"), output
        assert cluster.find(r"pods left on the node at the deadline: default/web-0$"), output
        assert cluster.evictable_left() == ["default/web-0"]
        assert cluster.alive_at_end and cluster.exit_codes[-1] == 0, output
    finally:
        cluster.finish()


def test_control_characters_in_an_api_message_cannot_forge_journal_lines(tmp_path: Path):
    """An eviction answers 403 with a Status message holding a NUL then "<0>" (journald would end
    the line there and log the rest at emergency priority), a U+2028, a CR and a lone surrogate
    (unencodable: the record would be lost with a traceback). The daemon's output (stdout and
    stderr) keeps it as one warning line with every such character escaped."""
    hostile = "denied\x00<0>forged emergency\r<1>alert\u2028<2>crit\x85\ud800 end"
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": hostile}
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=2)
        cluster.start_agent()
        cluster.kube.inject(count=1, status=403, method="POST", path_regex=r"/web-0/eviction$", body=body)
        cluster.spot(15)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=30)
        cluster.finish()
        output = cluster.daemon.output()
        lines = [line.text for line in cluster.daemon.lines]
        assert "\x00" not in output and "\r" not in output and "\u2028" not in output and "\x85" not in output
        assert "Logging error" not in output and "Traceback" not in output, output
        assert all(line[:3] in ("<3>", "<4>", "<6>", "<7>") for line in lines if line), output
        quoted = [line for line in lines if "not allowed to evict default/web-0" in line]
        assert quoted == ["<4>not allowed to evict default/web-0: denied\\x00<0>forged emergency\\x0d<1>alert"
                          "\\u2028<2>crit\\x85\\ud800 end"], output
        assert cluster.alive_at_end and cluster.exit_codes[-1] == 0, output
    finally:
        cluster.finish()


SECRET_TOKEN = "k8s-aws-v1.SECRETTOKENdGhpcyBpcyBhIHRva2Vu"


def test_a_kubeconfig_yaml_error_never_quotes_the_file(tmp_path: Path):
    """The kubeconfig has an inline token on a line that is not valid YAML (a stray ': ').
    PyYAML's message quotes that line; the journal and `status --json` must say only which file,
    where, and what kind of error."""
    cluster = Cluster(tmp_path)
    try:
        good = Path(cluster.kubeconfig).read_text()
        Path(cluster.kubeconfig).write_text(
            "apiVersion: v1\nkind: Config\nusers:\n- name: node\n  user:\n"
            f"    token: {SECRET_TOKEN}: oops\n    client-key-data: LS0tSECRETKEY\n")
        cluster.start_agent(ready=r"is not valid YAML")
        status = run_cli(["status", "--json"], cluster.env(), timeout_s=60)
        Path(cluster.kubeconfig).write_text(good)
        cluster.daemon.wait_line(r"acting on node", timeout_s=20)
        cluster.finish()
        output = cluster.daemon.output()
        for text in (output, status.stdout, status.stderr, (cluster.state_dir / "state.json").read_text()):
            assert "SECRET" not in text and "oops" not in text, text
        assert "is not valid YAML: mapping values" in json.loads(status.stdout)["api"]["error"], status.stdout
        assert cluster.find(rf"kubeconfig {cluster.kubeconfig} is not valid YAML: mapping values are not allowed "
                            r"here at line 6, column \d+$"), output
    finally:
        cluster.finish()


def test_one_malformed_pod_is_left_and_reported_and_the_others_are_drained(tmp_path: Path):
    """The drain's pod list holds a pod whose ownerReferences is ["x"] and one whose grace period is
    text: each is set aside with a warning that names it and says what is wrong, every other pod
    is evicted, and the drain reports the two as left on the node."""
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=4)
        cluster.start_agent()
        pods = cluster.kube.pods(node=NODE)
        by_name = {p["metadata"]["name"]: p for p in pods}
        by_name["web-0"]["metadata"]["ownerReferences"] = ["x"]
        by_name["web-1"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
        listing = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}
        cluster.kube.inject(count=1, status=200, method="GET", path_regex=r"^/api/v1/pods$", body=listing)
        cluster.spot(20)
        cluster.daemon.wait_line(r"drain incomplete: ", timeout_s=40)
        cluster.finish()
        output = cluster.daemon.output()
        assert cluster.find(r"not evicting default/web-0: the API's description of it cannot be read "
                            r"\(.*ownerReferences"), output
        assert cluster.find(r"not evicting default/web-1: the API's description of it cannot be read "
                            r"\(.*thirty"), output
        assert cluster.find(r"pods left on the node at the deadline: default/web-0, default/web-1$"), output
        assert sorted(cluster.evictable_left()) == ["default/web-0", "default/web-1"]
        assert "Traceback" not in output and cluster.alive_at_end, output
    finally:
        cluster.finish()


def test_an_api_message_cannot_add_an_assignment_to_sd_notify(tmp_path: Path):
    """The API server refuses the Node read with a Status message holding "\\nWATCHDOG=trigger"
    (and other assignments after CR, NUL and ESC). The daemon's STATUS quotes the error: every
    datagram on its NOTIFY_SOCKET (a real one, read here) holds only the agent's own assignments,
    the STATUS one line with the message escaped, and the daemon stays up."""
    hostile = "nodes is forbidden\nWATCHDOG=trigger\r\nSTOPPING=1\x00READY=1\x1bMAINPID=1"
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": hostile}
    cluster = Cluster(tmp_path)
    notify = NotifySocket(tmp_path)
    try:
        cluster.kube.inject(count=100_000, status=403, method="GET", path_regex=r"/api/v1/nodes/", body=body)
        env = cluster.env()
        env["NOTIFY_SOCKET"] = notify.path
        daemon = cluster.start_agent(ready=None, env=env)
        wait_for(lambda: [t for t in notify.texts() if "nodes is forbidden" in t], 30,
                 message=lambda: f"{notify.texts()}\n{daemon.output()}")
        cluster.wait_polls(2)  # a few more polls
        pings = notify.texts().count("WATCHDOG=1")
        wait_for(lambda: notify.texts().count("WATCHDOG=1") > pings, 10)  # and another watchdog ping
        texts = notify.texts()
        names = {text.split("=", 1)[0] for text in texts}
        assert names <= {"READY", "STATUS", "WATCHDOG", "STOPPING", "RELOADING"}, texts
        assert "WATCHDOG=trigger" not in texts and "STOPPING=1" not in texts and "MAINPID=1" not in texts, texts
        assert all(text in ("READY=1", "WATCHDOG=1") or text.startswith("STATUS=") for text in texts), texts
        quoted = [text for text in texts if "nodes is forbidden" in text]
        assert all("nodes is forbidden | WATCHDOG=trigger | STOPPING=1\\x00READY=1\\x1bMAINPID=1" in text
                   for text in quoted), quoted
        assert daemon.alive(), daemon.output()
    finally:
        cluster.finish()
        notify.close()


def test_a_hostile_scheduled_code_reaches_no_annotation_terminal_or_slack_message(tmp_path: Path):
    """IMDS serves a scheduled event whose Code holds terminal escapes (retitle, clear the screen)
    and Slack markup (a channel mention, a disguised link). The event is still handled (drained);
    the node annotation, `nodeagent status` and the Slack message show the placeholder, and the
    log says why without quoting it."""
    from datetime import timedelta

    from nodeagent.clock import utcnow
    from nodeagent.kube.node import ANNOTATION_ACTION

    hostile = "\x1b]0;pwned\x07\x1b[2Jinstance-reboot <!channel> <https://evil.example/|click here> &"
    not_before = (utcnow() + timedelta(hours=2)).strftime("%-d %b %Y %H:%M:%S GMT")
    receiver = Receiver().start()
    cluster = Cluster(tmp_path)
    try:
        cluster.add_workload(count=2)
        keys = dict(WEBHOOK_URL=receiver.url(), WEBHOOK_FORMAT="slack")
        cluster.start_agent(**keys)
        cluster.imds.set_scheduled([{"NotBefore": not_before, "Code": hostile, "State": "active",
                                     "EventId": "instance-event-0hostile"}])
        cluster.daemon.wait_line(r"notice scheduled-instance-event-0hostile \(scheduled: unrecognised-code\)"
                                 r".*response: drain", timeout_s=15)
        cluster.daemon.wait_line(r"scheduled event Code of 77 characters is not of the form \[a-z0-9-\]\{1,64\} "
                                 r"\(not shown\); shown as 'unrecognised-code' and handled as maintenance")
        wait_for(lambda: not cluster.evictable_left(), 20, message=cluster.daemon.output)  # still handled
        node = cluster.kube.node(NODE)
        assert node["metadata"]["annotations"][ANNOTATION_ACTION] == "unrecognised-code"

        status = run_cli(["status"], cluster.env(**keys), timeout_s=60)
        assert "(scheduled: unrecognised-code)" in status.stdout, status.stdout
        for text in (status.stdout, status.stderr):
            assert "\x1b" not in text and "\x07" not in text and "pwned" not in text, text

        def slack_texts():
            return [body["text"] for _, body in receiver.bodies()]

        wait_for(lambda: len(slack_texts()) >= 2, 15, message=lambda: str(receiver.bodies()))  # notice, drained
        for text in slack_texts():
            assert "<!channel>" not in text and "<https" not in text and "\x1b" not in text, text
        assert any("unrecognised-code" in text for text in slack_texts()), slack_texts()
        output = cluster.daemon.output()
        assert "pwned" not in output and "evil.example" not in output, output
    finally:
        cluster.finish()
        receiver.stop()


def test_terminal_escapes_in_an_api_message_never_reach_nodeagent_status(tmp_path: Path):
    """The API server refuses the Node read with a message that retitles and clears a terminal.
    `nodeagent status` quotes it three times (the daemon's status from the state file, its own probe
    of the API, and the problem that makes): each row is printable text, one line."""
    hostile = "forbidden\x1b]0;pwned\x07\x1b[2J\nforged: row\x9b31m"
    body = {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403,
            "message": hostile}
    cluster = Cluster(tmp_path)
    try:
        cluster.kube.inject(count=100_000, status=403, method="GET", path_regex=r"/api/v1/nodes/", body=body)
        cluster.start_agent(ready=r"Kubernetes not ready")
        state_file = cluster.state_dir / "state.json"
        wait_for(lambda: "forbidden" in json.loads(state_file.read_text()).get("status", ""), 15,
                 message=cluster.daemon.output)
        status = run_cli(["status"], cluster.env(), timeout_s=60)
        out = status.stdout
        for text in (out, status.stderr):
            assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, text
        assert not [line for line in out.splitlines() if line.startswith("forged")], out
        quoted = [line for line in out.splitlines() if "forbidden" in line]
        assert len(quoted) == 3, out  # the daemon's status, the probe's error and the problem it makes
        assert all("forbidden\\x1b]0;pwned\\x07\\x1b[2J | forged: row\\x9b31m" in line for line in quoted), out
    finally:
        cluster.finish()
