"""The Events reporter's aggregation against an in-memory stand-in for the API's events endpoint."""
from __future__ import annotations

from datetime import timedelta

from nodeagent import config
from nodeagent.clock import iso, utcnow
from nodeagent.kube.errors import ApiError
from nodeagent.report.events import EventsReporter
from nodeagent.state import NoticeRecord

NODE = "ip-10-0-0-1.ec2.internal"


class EventsEndpoint:
    """Creates on POST (409 when the name exists), merges on PATCH (404 when it does not)."""

    def __init__(self) -> None:
        self.events: dict = {}
        self.calls: list = []

    def request(self, method, path, *, body=None, **_):
        name = path.rsplit("/", 1)[-1] if method == "PATCH" else body["metadata"]["name"]
        self.calls.append((method, name))
        if method == "POST":
            if name in self.events:
                raise ApiError(409, "AlreadyExists", "exists", method, path)
            self.events[name] = dict(body)
        elif name not in self.events:
            raise ApiError(404, "NotFound", "gone", method, path)
        else:
            self.events[name].update(body)
        return {}


class Link:
    def __init__(self, api: EventsEndpoint) -> None:
        self.api = api

    def api_and_node(self):
        return self.api, NODE

    def listen_api_failures(self, listener) -> None: ...


def record(notice_id: str) -> NoticeRecord:
    return NoticeRecord(id=notice_id, kind="scheduled", action="reboot", first_seen=iso(utcnow()),
                        deadline=iso(utcnow() + timedelta(days=2)), response="drain", phase="acting")


def reporter(api: EventsEndpoint) -> EventsReporter:
    return EventsReporter(config.load_settings([], {}, {}), Link(api))  # type: ignore[arg-type]


def test_a_repeat_patches_the_count_of_the_event_it_repeats():
    api = EventsEndpoint()
    events = reporter(api)
    try:
        for _ in range(3):
            events.step(record("n1"), "Cordoned", "cordoned")
            assert events.flush(5.0)
        [(name, event)] = api.events.items()
        assert [method for method, _ in api.calls] == ["POST", "PATCH", "PATCH"]
        assert event["count"] == 3 and event["reason"] == "NodeCordoned"
    finally:
        events.close()


def test_a_forgotten_notice_keeps_nothing_and_a_late_repeat_still_lands_on_its_event():
    api = EventsEndpoint()
    events = reporter(api)
    try:
        events.step(record("n1"), "Cordoned", "cordoned")
        events.step(record("n2"), "Cordoned", "cordoned")
        assert events.flush(5.0)
        events.forgotten(("n1",))
        api.calls.clear()
        events.step(record("n1"), "Cordoned", "again")
        events.step(record("n2"), "Cordoned", "again")
        assert events.flush(5.0)
        # n1 starts over (a create that finds its Event, then a patch onto it); n2 is still known.
        assert [method for method, _ in api.calls] == ["POST", "PATCH", "PATCH"]
        assert {event["message"] for event in api.events.values()} == {"again"}
        assert sorted(event["count"] for event in api.events.values()) == [2, 2]
    finally:
        events.close()
