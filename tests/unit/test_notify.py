"""sd_notify pacing: the watchdog is pinged at a quarter of systemd's period, not on every poll."""
from __future__ import annotations

from nodeagent import notify


class Recorder:
    def __init__(self) -> None:
        self.sent: list = []

    def notify(self, text: str) -> None:
        self.sent.append(text)


def test_ping_interval_is_a_quarter_of_the_watchdog_period():
    assert notify.ping_interval({"WATCHDOG_USEC": "30000000"}) == 7.5
    assert notify.ping_interval({}) == notify.DEFAULT_PING_EVERY_S
    assert notify.ping_interval({"WATCHDOG_USEC": "junk"}) == notify.DEFAULT_PING_EVERY_S
    assert notify.ping_interval({"WATCHDOG_USEC": "0"}) == notify.DEFAULT_PING_EVERY_S


def test_watchdog_pings_at_most_once_per_interval_and_status_only_on_change(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(notify.time, "monotonic", lambda: clock[0])
    notifier = notify.SystemdNotifier({"WATCHDOG_USEC": "4000000"})  # 4 s: ping every 1 s
    recorder = Recorder()
    notifier._notifier = recorder  # type: ignore[assignment]
    for _ in range(10):  # ten polls 0.25 s apart
        notifier.watchdog()
        clock[0] += 0.25
    assert recorder.sent.count("WATCHDOG=1") == 3  # at 100, 101, 102
    notifier.status("watching")
    notifier.status("watching")
    notifier.status("draining")
    assert [t for t in recorder.sent if t.startswith("STATUS=")] == ["STATUS=watching", "STATUS=draining"]


def test_a_status_is_one_assignment_whatever_the_text_holds():
    hostile = 'forbidden: "x"\nWATCHDOG=trigger\r\nREADY=1\x00STOPPING=1\x85\u2028MAINPID=1'
    sent = notify.status_assignment(hostile)
    assert sent.startswith("STATUS=forbidden")
    assert "\n" not in sent and "\r" not in sent and "\x00" not in sent and "\x85" not in sent
    assert "\u2028" not in sent
    assert sent == ('STATUS=forbidden: "x" | WATCHDOG=trigger | READY=1\\x00STOPPING=1\\x85\\u2028MAINPID=1')
    long = notify.status_assignment("x" * 100_000)
    assert len(long) == len("STATUS=") + notify.STATUS_MAX_CHARS and long.endswith("...")
    assert notify.status_assignment("watching IMDS; last poll 2025-01-01T00:00:00Z") == (
        "STATUS=watching IMDS; last poll 2025-01-01T00:00:00Z")


def test_the_notifier_sends_the_escaped_status():
    notifier = notify.SystemdNotifier({})
    recorder = Recorder()
    notifier._notifier = recorder  # type: ignore[assignment]
    notifier.status("API said: no\nWATCHDOG=trigger")
    notifier.status("node n\u00e9 \u2192 draining")  # beyond Latin-1: sdnotify alone would drop it
    sent = [text.encode("latin-1") for text in recorder.sent]  # the bytes sdnotify puts on the socket
    assert sent == [b"STATUS=API said: no | WATCHDOG=trigger", "STATUS=node n\u00e9 \u2192 draining".encode()]
