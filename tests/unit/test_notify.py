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
