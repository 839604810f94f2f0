"""Pure parser tests: the documented IMDS examples, boundaries, and property tests (no sockets)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nodeagent import notices
from nodeagent.notices import (
    ASG_PATH,
    SOURCES,
    REBALANCE_PATH,
    SCHEDULED_PATH,
    SPOT_ACTION_PATH,
    Notice,
    NoticeKind,
    NoticeParseError,
    is_valid_label_value,
    parse_asg_state,
    parse_rebalance,
    parse_rfc3339_utc,
    parse_scheduled,
    parse_scheduled_time,
    parse_spot_action,
    scheduled_notice_id,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
UTC = timezone.utc

SCHEDULED_EXAMPLE = """[
  {
    "NotBefore" : "21 Jan 2019 09:00:43 GMT",
    "Code" : "system-reboot",
    "Description" : "scheduled reboot",
    "EventId" : "instance-event-0d59937288b749b32",
    "NotAfter" : "21 Jan 2019 09:17:23 GMT",
    "State" : "active"
  }
]"""


def scheduled_event(**overrides):
    event = {
        "NotBefore": "21 Jan 2019 09:00:43 GMT",
        "Code": "system-reboot",
        "Description": "scheduled reboot",
        "EventId": "instance-event-0d59937288b749b32",
        "NotAfter": "21 Jan 2019 09:17:23 GMT",
        "State": "active",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def assert_aware_utc(moment: datetime) -> None:
    assert moment.tzinfo is not None
    assert moment.utcoffset() == timedelta(0)


# --- spot/instance-action ---------------------------------------------------------------------


def test_spot_design_example():
    body = b'{"action": "terminate", "time": "2017-09-18T08:22:00Z"}'
    notice = parse_spot_action(body, NOW)
    assert notice == Notice(
        kind=NoticeKind.SPOT_ITN,
        id="spot-itn-20170918T082200Z",
        deadline=datetime(2017, 9, 18, 8, 22, tzinfo=UTC),
        action="terminate",
        raw=body.decode(),
        state="active",
    )


@pytest.mark.parametrize("action", ["terminate", "stop", "hibernate"])
def test_spot_actions(action):
    notice = parse_spot_action(json.dumps({"action": action, "time": "2020-01-07T01:03:47Z"}), NOW)
    assert notice.action == action
    assert notice.id == "spot-itn-20200107T010347Z"


@pytest.mark.parametrize("action", ["reboot", "Terminate", "instance-stop"])
def test_spot_unknown_action_is_handled_as_terminate_with_a_note(action):
    # Failing closed here would lose the node's workloads: the instance is going away either way.
    notice = parse_spot_action(json.dumps({"action": action, "time": "2020-01-07T01:03:47Z"}), NOW)
    assert notice.action == "terminate"
    assert notice.id == "spot-itn-20200107T010347Z"
    assert repr(action) in notice.note and "handled as terminate" in notice.note


def test_spot_past_deadline_is_kept_and_id_ignores_now():
    body = '{"action": "stop", "time": "2017-09-18T08:22:00Z"}'
    a = parse_spot_action(body, NOW)
    b = parse_spot_action(body, NOW + timedelta(days=3000))
    assert a == b
    assert a.deadline < NOW


def test_spot_surrounding_whitespace_and_extra_keys():
    body = '\n  {"action": "terminate", "time": "2017-09-18T08:22:00Z", "extra": 1}  \r\n'
    assert parse_spot_action(body, NOW).id == "spot-itn-20170918T082200Z"


def test_spot_offset_and_fraction_normalised_to_utc():
    body = '{"action": "terminate", "time": "2017-09-18T10:22:00.750+02:00"}'
    notice = parse_spot_action(body, NOW)
    assert notice.deadline == datetime(2017, 9, 18, 8, 22, 0, 750000, tzinfo=UTC)
    assert notice.id == "spot-itn-20170918T082200Z"
    assert_aware_utc(notice.deadline)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[]", "JSON object"),
        (b'"terminate"', "JSON object"),
        (b"{}", "missing key 'action'"),
        (b'{"action": "terminate"}', "missing key 'time'"),
        (b'{"action": 1, "time": "2017-09-18T08:22:00Z"}', "must be a string"),
        (b'{"action": "terminate", "time": 1505722920}', "must be a string"),
        (b'{"action": "terminate", "time": "2017-09-18 08:22"}', "RFC 3339"),
        (b'{"action": "terminate", "time": "2017-09-18T08:22:00"}', "RFC 3339"),
        (b'{"action": "terminate", "time": "2017-02-30T08:22:00Z"}', "invalid"),
        (b'{"action": "terminate", "time": "2017-09-18T24:00:00Z"}', "invalid"),
        (b'{"action": "terminate", "time": "2017-09-18T08:22:00Z\\n"}', "RFC 3339"),
    ],
)
def test_spot_rejects(body, fragment):
    with pytest.raises(NoticeParseError) as info:
        parse_spot_action(body, NOW)
    assert info.value.path == SPOT_ACTION_PATH
    assert fragment in info.value.reason
    assert str(info.value).startswith("spot/instance-action: ")


def test_spot_rejects_non_bytes_body():
    with pytest.raises(NoticeParseError):
        parse_spot_action(None, NOW)  # type: ignore[arg-type]
    with pytest.raises(NoticeParseError):
        parse_spot_action(123, NOW)  # type: ignore[arg-type]


def test_deeply_nested_json_is_a_parse_error_not_recursion_error():
    with pytest.raises(NoticeParseError):
        parse_spot_action("[" * 100000 + "]" * 100000, NOW)


# --- rebalance --------------------------------------------------------------------------------


def test_rebalance_design_example():
    notice = parse_rebalance(b'{"noticeTime": "2020-10-27T08:22:00Z"}', NOW)
    assert notice.kind is NoticeKind.REBALANCE
    assert notice.id == "rebalance-20201027T082200Z"
    assert notice.action == "rebalance"
    assert notice.deadline == datetime(2020, 10, 27, 8, 22, tzinfo=UTC)
    assert notice.state == "active"


@pytest.mark.parametrize(
    "body", [b"{}", b'{"noticeTime": null}', b'{"noticeTime": "soon"}', b"[1]", b'{"time": "x"}']
)
def test_rebalance_rejects(body):
    with pytest.raises(NoticeParseError) as info:
        parse_rebalance(body, NOW)
    assert info.value.path == REBALANCE_PATH


# --- scheduled events -------------------------------------------------------------------------


def test_scheduled_design_example():
    [notice] = parse_scheduled(SCHEDULED_EXAMPLE, NOW).notices
    assert notice.kind is NoticeKind.SCHEDULED
    assert notice.id == "scheduled-instance-event-0d59937288b749b32"
    assert notice.action == "system-reboot"
    assert notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)
    assert notice.state == "active"
    assert notice.not_after == datetime(2019, 1, 21, 9, 17, 23, tzinfo=UTC)
    assert notice.note == ""
    assert json.loads(notice.raw)["EventId"] == "instance-event-0d59937288b749b32"


def test_scheduled_empty_list():
    assert parse_scheduled(b"[]", NOW).notices == ()
    assert parse_scheduled(b" [ ]\n", NOW).notices == ()


@pytest.mark.parametrize("state, expected", [
    ("active", "active"), ("completed", "completed"), ("canceled", "canceled"),
    ("Canceled", "canceled"), ("COMPLETED", "completed"), ("cancelled", "canceled"),
])
def test_scheduled_keeps_completed_and_canceled(state, expected):
    [notice] = parse_scheduled(json.dumps([scheduled_event(State=state)]), NOW).notices
    assert notice.state == expected
    assert notice.id == "scheduled-instance-event-0d59937288b749b32"  # same id: agent can cancel


@pytest.mark.parametrize("code", sorted(notices.SCHEDULED_CODES))
def test_scheduled_codes(code):
    [notice] = parse_scheduled(json.dumps([scheduled_event(Code=code)]), NOW).notices
    assert notice.action == code
    assert notice.note == ""


def test_scheduled_several_events_and_duplicates():
    events = [
        scheduled_event(EventId="instance-event-1", Code="instance-stop"),
        scheduled_event(EventId="instance-event-2", NotBefore="1 Jan 2020 01:03:47 GMT"),
        scheduled_event(EventId="instance-event-1", State="completed"),
    ]
    result = parse_scheduled(json.dumps(events), NOW).notices
    assert [n.id for n in result] == ["scheduled-instance-event-1", "scheduled-instance-event-2"]
    assert result[0].action == "instance-stop"
    assert result[1].deadline == datetime(2020, 1, 1, 1, 3, 47, tzinfo=UTC)


def test_scheduled_optional_fields_may_be_missing():
    [notice] = parse_scheduled(json.dumps([scheduled_event(Description=None, NotAfter=None)]), NOW).notices
    assert notice.action == "system-reboot"
    assert notice.not_after is None


def test_scheduled_unreadable_not_after_only_drops_that_field():
    [notice] = parse_scheduled(json.dumps([scheduled_event(NotAfter="soon")]), NOW).notices
    assert notice.not_after is None and notice.deadline == datetime(2019, 1, 21, 9, 0, 43, tzinfo=UTC)


def test_scheduled_unknown_code_is_still_maintenance():
    [notice] = parse_scheduled(json.dumps([scheduled_event(Code="system-explode")]), NOW).notices
    assert notice.action == "system-explode" and notice.state == "active"
    assert "'system-explode'" in notice.note and "handled as maintenance" in notice.note


def test_an_event_without_a_state_is_handled_as_active_with_a_note():
    """AWS always sends State; one without it is acted on (the safe side), and said."""
    result = parse_scheduled(json.dumps([scheduled_event(State=None, Code="system-explode")]), NOW)
    [notice] = result.notices
    assert notice.state == "active" and not result.problems
    assert "no State; handled as active" in notice.note and "'system-explode'" in notice.note


@pytest.mark.parametrize("body, fragment", [('{"a": 1}', "JSON list"), ("", "empty"), ("[", "not valid JSON")])
def test_scheduled_rejects_a_body_that_is_not_a_list(body, fragment):
    with pytest.raises(NoticeParseError) as info:
        parse_scheduled(body, NOW)
    assert info.value.path == SCHEDULED_PATH
    assert fragment in info.value.reason


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (1, "must be a JSON object"),
        (scheduled_event(Code=None), "missing key 'Code'"),
        (scheduled_event(Code=" "), "empty 'Code'"),
        (scheduled_event(EventId=None), "missing key 'EventId'"),
        (scheduled_event(EventId="  "), "empty 'EventId'"),
        (scheduled_event(EventId=7), "must be a string"),
        (scheduled_event(State="pending"), "unknown State"),
        (scheduled_event(State=5), "'State' in event #0 must be a string"),
        (scheduled_event(NotBefore=None), "missing key 'NotBefore'"),
        (scheduled_event(NotBefore="2019-01-21T09:00:43Z"), "NotBefore"),
        (scheduled_event(NotBefore="21 Foo 2019 09:00:43 GMT"), "unknown month"),
        (scheduled_event(NotBefore="31 Feb 2019 09:00:43 GMT"), "invalid date"),
        (scheduled_event(NotBefore="21 Jan 2019 09:00:43 PST"), "NotBefore"),
    ],
)
def test_one_malformed_event_is_skipped_and_the_others_kept(bad, fragment):
    good = scheduled_event(EventId="instance-event-good")
    result = parse_scheduled(json.dumps([bad, good]), NOW)
    assert [n.id for n in result.notices] == ["scheduled-instance-event-good"]
    [problem] = result.problems
    assert fragment in problem and "event #0" in problem and problem.endswith("entry skipped")


def test_scheduled_time_is_locale_independent_and_accepts_unpadded_day():
    import locale

    previous = locale.setlocale(locale.LC_TIME)
    try:
        locale.setlocale(locale.LC_TIME, "de_DE.UTF-8")
    except locale.Error:
        pass  # the parser never consults the locale either way
    try:
        assert parse_scheduled_time("1 Mar 2020 01:03:47 GMT") == datetime(
            2020, 3, 1, 1, 3, 47, tzinfo=UTC
        )
        assert parse_scheduled_time("21 dec 2019 23:59:59 UTC") == datetime(
            2019, 12, 21, 23, 59, 59, tzinfo=UTC
        )
    finally:
        locale.setlocale(locale.LC_TIME, previous)


def test_long_and_odd_event_ids_become_valid_distinct_labels():
    long_a = "instance-event-" + "a" * 80
    long_b = "instance-event-" + "a" * 79 + "b"
    odd = "event id/with spaces+ünïcode"
    ids = [scheduled_notice_id(x) for x in (long_a, long_b, odd, "-x-", "...")]
    for value in ids:
        assert is_valid_label_value(value), value
        assert value.startswith("scheduled-")
    assert len(set(ids)) == len(ids)
    assert scheduled_notice_id(long_a) == scheduled_notice_id(long_a)  # deterministic


# --- ASG lifecycle state ----------------------------------------------------------------------


def test_asg_terminated():
    notice = parse_asg_state(b"Terminated", NOW)
    assert notice is not None
    assert notice.kind is NoticeKind.ASG
    assert notice.id == "asg-terminated"
    assert notice.action == "Terminated"
    assert notice.deadline == NOW
    assert notice.raw == "Terminated"


def test_asg_id_is_stable_across_time():
    # NTH's bug: an id hashed from time.Now() never de-duplicates.
    a = parse_asg_state("Terminated\n", NOW)
    b = parse_asg_state("Terminated", NOW + timedelta(minutes=5))
    assert a is not None and b is not None
    assert a.id == b.id
    assert b.deadline == NOW + timedelta(minutes=5)


def test_asg_naive_now_is_treated_as_utc():
    notice = parse_asg_state("Terminated", datetime(2024, 1, 1, 0, 0))
    assert notice is not None
    assert_aware_utc(notice.deadline)


@pytest.mark.parametrize("state, notice_id", [
    ("Warmed:Stopped", "asg-warmed-stopped"), ("Warmed:Hibernated", "asg-warmed-hibernated"),
    ("Warmed:Terminated", "asg-warmed-terminated"),
])
def test_asg_warm_pool_states_that_take_the_instance_out_of_service(state, notice_id):
    notice = parse_asg_state(state, NOW)
    assert notice is not None and notice.id == notice_id and notice.action == state


@pytest.mark.parametrize(
    "state", ["InService", "Detached", "Standby", "Warmed:Running",
              "Pending", "Pending:Wait", "Terminating:Wait", "terminated", " InService \n"]
)
def test_asg_other_states_are_not_notices(state):
    assert parse_asg_state(state, NOW) is None


def test_asg_source_reports_an_unknown_state_once_as_no_action():
    asg = notices.SOURCES_BY_KIND["asg"]
    assert asg.parse("InService", NOW) == notices.Parsed()
    assert asg.parse("Warmed:Running", NOW) == notices.Parsed()
    result = asg.parse("Warmed:Exploded", NOW)
    assert result.notices == () and result.problems == ("unknown lifecycle state 'Warmed:Exploded'; no action",)


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"\x00Terminated", b"In Service", b"Terminated;rm", b"A" * 65,
             b"\xff", "Términated".encode(), b"Warmed:", b":Terminated", b"{\"state\": 1}"]
)
def test_asg_garbage_is_rejected(body):
    with pytest.raises(NoticeParseError) as info:
        parse_asg_state(body, NOW)
    assert info.value.path == ASG_PATH


def test_asg_length_boundary():
    assert parse_asg_state(b"A" * 64, NOW) is None
    with pytest.raises(NoticeParseError):
        parse_asg_state(b"A" * 65, NOW)


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2017-09-18T08:22:00Z", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2017-09-18t08:22:00z", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2017-09-18 08:22:00Z", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2017-09-18T08:22:00.5Z", datetime(2017, 9, 18, 8, 22, 0, 500000, tzinfo=UTC)),
        ("2017-09-18T08:22:00.123456789Z", datetime(2017, 9, 18, 8, 22, 0, 123456, tzinfo=UTC)),
        ("2017-09-18T08:22:00+00:00", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2017-09-18T00:22:00-08:00", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2017-09-18T13:52:00+05:30", datetime(2017, 9, 18, 8, 22, tzinfo=UTC)),
        ("2016-12-31T23:59:59Z", datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339_utc(text, expected):
    parsed = parse_rfc3339_utc(text)
    assert parsed == expected
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    ["", "2017-09-18", "2017-09-18T08:22Z", "2017-09-18T08:22:00", "2017-09-18T08:22:00+0000",
     "2017-13-01T00:00:00Z", "2017-09-18T08:22:60Z", "2017-09-18T08:22:00+24:00",
     "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "２０１７-09-18T08:22:00Z",
     " 2017-09-18T08:22:00Z"],
)
def test_parse_rfc3339_utc_rejects(text):
    with pytest.raises(ValueError):
        parse_rfc3339_utc(text)


# --- the path table ---------------------------------------------------------------------------


def _parse(path, body):
    return next(s for s in SOURCES if s.path == path).parse(body, NOW)


def test_the_path_table_and_its_parsers():
    assert SPOT_ACTION_PATH == "spot/instance-action"
    assert REBALANCE_PATH == "events/recommendations/rebalance"
    assert SCHEDULED_PATH == "events/maintenance/scheduled"
    assert ASG_PATH == "autoscaling/target-lifecycle-state"
    assert [s.path for s in SOURCES] == [SPOT_ACTION_PATH, ASG_PATH, REBALANCE_PATH, SCHEDULED_PATH]
    assert [s.kind.value for s in SOURCES] == ["spot-itn", "asg", "rebalance", "scheduled"]
    assert _parse(ASG_PATH, b"InService").notices == ()
    assert [n.id for n in _parse(ASG_PATH, b"Terminated").notices] == ["asg-terminated"]
    assert len(_parse(SCHEDULED_PATH, SCHEDULED_EXAMPLE).notices) == 1
    assert _parse(REBALANCE_PATH, '{"noticeTime": "2020-10-27T08:22:00Z"}').notices[0].id == (
        "rebalance-20201027T082200Z"
    )


# --- property tests ---------------------------------------------------------------------------

ALL_PARSERS = [parse_spot_action, parse_rebalance, parse_scheduled, parse_asg_state]
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _assert_only_parse_errors(body) -> None:
    for parser in ALL_PARSERS:
        try:
            result = parser(body, NOW)
        except NoticeParseError as exc:
            assert exc.path in {source.path for source in SOURCES}
            continue
        if isinstance(result, notices.Parsed):
            result = list(result.notices)
        for notice in result if isinstance(result, list) else [result]:
            if notice is not None:
                _check_notice(notice)


def _check_notice(notice: Notice) -> None:
    assert isinstance(notice.kind, NoticeKind)
    assert is_valid_label_value(notice.id), notice.id
    assert_aware_utc(notice.deadline)
    assert isinstance(notice.action, str) and notice.action
    assert notice.state in notices.SCHEDULED_STATES


@PROPERTY_SETTINGS
@given(st.binary(max_size=300))
def test_property_random_bytes_only_parse_errors(body):
    _assert_only_parse_errors(body)


@PROPERTY_SETTINGS
@given(st.text(max_size=300))
def test_property_random_text_only_parse_errors(body):
    _assert_only_parse_errors(body)


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["terminate", "stop", "hibernate", "system-reboot", "active", "canceled",
                     "2017-09-18T08:22:00Z", "21 Jan 2019 09:00:43 GMT", "Terminated"]),
)
json_keys = st.one_of(
    st.sampled_from(["action", "time", "noticeTime", "NotBefore", "Code", "EventId", "State",
                     "Description", "NotAfter"]),
    st.text(max_size=10),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(json_keys, children, max_size=6)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(json_values)
def test_property_random_json_only_parse_errors(value):
    _assert_only_parse_errors(json.dumps(value))
    _assert_only_parse_errors(json.dumps(value).encode("utf-8"))


@st.composite
def rfc3339_times(draw):
    moment = draw(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9998, 12, 30)))
    offset_minutes = draw(st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59))
    tz = timezone(timedelta(minutes=offset_minutes))
    timespec = draw(st.sampled_from(["seconds", "milliseconds", "microseconds"]))
    micro = {"seconds": 0, "milliseconds": moment.microsecond // 1000 * 1000,
             "microseconds": moment.microsecond}[timespec]
    local = moment.replace(microsecond=micro, tzinfo=tz)
    text = local.isoformat(timespec=timespec)
    if offset_minutes == 0 and draw(st.booleans()):
        text = text[: -len("+00:00")] + "Z"
    return text, local


@PROPERTY_SETTINGS
@given(rfc3339_times(), st.sampled_from(sorted(notices.SPOT_ACTIONS)),
       st.datetimes(timezones=st.just(UTC)))
def test_property_valid_spot_notices(time_and_moment, action, now):
    text, moment = time_and_moment
    body = json.dumps({"action": action, "time": text})
    notice = parse_spot_action(body, now)
    _check_notice(notice)
    assert notice.deadline == moment
    assert notice == parse_spot_action(body, NOW)  # stable: independent of now
    assert notice.id == parse_spot_action(" " + body + "\n", now).id


@PROPERTY_SETTINGS
@given(rfc3339_times())
def test_property_rebalance_roundtrip(time_and_moment):
    text, moment = time_and_moment
    notice = parse_rebalance(json.dumps({"noticeTime": text}), NOW)
    _check_notice(notice)
    assert notice.deadline == moment


@st.composite
def scheduled_events(draw):
    moment = draw(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2999, 1, 1)))
    month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
             "Dec"][moment.month - 1]
    not_before = f"{moment.day} {month} {moment.year} {moment:%H:%M:%S} GMT"
    event = {
        "NotBefore": not_before,
        "Code": draw(st.sampled_from(sorted(notices.SCHEDULED_CODES))),
        "EventId": draw(st.one_of(
            st.from_regex(r"instance-event-[0-9a-f]{17}", fullmatch=True),
            st.text(min_size=1, max_size=120).filter(lambda s: s.strip()),
        )),
        "State": draw(st.sampled_from(["active", "completed", "canceled"])),
        "Description": draw(st.text(max_size=30)),
    }
    return event, moment.replace(microsecond=0, tzinfo=UTC)


@PROPERTY_SETTINGS
@given(st.lists(scheduled_events(), max_size=5))
def test_property_valid_scheduled_lists(items):
    body = json.dumps([event for event, _ in items])
    result = parse_scheduled(body, NOW).notices
    assert result == parse_scheduled(body.encode("utf-8"), NOW + timedelta(days=1)).notices
    unique_event_ids = list(dict.fromkeys(event["EventId"] for event, _ in items))
    assert len(result) == len(unique_event_ids)
    for notice in result:
        _check_notice(notice)
    first = {}
    for event, moment in items:
        first.setdefault(event["EventId"], (event, moment))
    for notice, event_id in zip(result, unique_event_ids):
        event, moment = first[event_id]
        assert notice.id == scheduled_notice_id(event_id)
        assert notice.deadline == moment
        assert notice.action == event["Code"]
        assert notice.state == event["State"]


@PROPERTY_SETTINGS
@given(st.text(min_size=1, max_size=200))
def test_property_scheduled_ids_are_labels_and_deterministic(event_id):
    value = scheduled_notice_id(event_id)
    assert is_valid_label_value(value)
    assert value == scheduled_notice_id(event_id)


@PROPERTY_SETTINGS
@given(st.text(min_size=1, max_size=200), st.text(min_size=1, max_size=200))
def test_property_distinct_event_ids_get_distinct_notice_ids(a, b):
    assume(a != b)
    assert scheduled_notice_id(a) != scheduled_notice_id(b)


@PROPERTY_SETTINGS
@given(st.from_regex(r"[A-Za-z]{1,20}(:[A-Za-z]{1,20}){0,2}", fullmatch=True))
def test_property_asg_well_formed_states(state):
    result = parse_asg_state(state, NOW)
    if state in notices.ASG_OUT_OF_SERVICE:
        assert result is not None and result.id == notices.ASG_OUT_OF_SERVICE[state]
    else:
        assert result is None


@pytest.mark.parametrize("code, expected", [
    ("system-reboot", ("system-reboot", "")),
    ("host-retirement", ("host-retirement", "scheduled event Code 'host-retirement' is not one of the documented "
                                            "codes; handled as maintenance")),
    ("x" * 64, ("x" * 64, None)),
    ("x" * 65, (notices.UNRECOGNISED_CODE, None)),
    ("System-Reboot", (notices.UNRECOGNISED_CODE, None)),
    ("instance-reboot\x1b]0;owned\x07", (notices.UNRECOGNISED_CODE, None)),
    ("<!channel> <https://evil.example|click>", (notices.UNRECOGNISED_CODE, None)),
    ("reboot\n", (notices.UNRECOGNISED_CODE, None)),
    ("r\u00e9boot", (notices.UNRECOGNISED_CODE, None)),
])
def test_a_scheduled_code_is_documented_safe_or_replaced(code, expected):
    shown, note = notices.scheduled_code(code)
    assert shown == expected[0]
    if expected[1] is not None:
        assert note == expected[1]
    if shown == notices.UNRECOGNISED_CODE:
        assert note.endswith("(not shown); shown as 'unrecognised-code' and handled as maintenance")
        assert code not in note and "\x1b" not in note and "<" not in note


def test_a_hostile_scheduled_code_is_replaced_and_the_event_still_handled():
    hostile = "\x1b[2J\x1b]0;pwned\x07<!channel> <https://evil.example|click> &amp;"
    [notice] = parse_scheduled(json.dumps([scheduled_event(Code=hostile)]), NOW).notices
    assert notice.action == "unrecognised-code"
    assert notice.kind == NoticeKind.SCHEDULED and notice.state == "active"
    assert "not shown" in notice.note and "pwned" not in notice.note
