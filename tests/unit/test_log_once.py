"""LogOnce: one line when a problem starts or changes, none while it repeats."""

import logging

from nodeagent.log_once import LogOnce


def _logger(caplog):
    caplog.set_level(logging.INFO, logger="test.once")
    return logging.getLogger("test.once")


def test_say_logs_a_key_again_only_when_its_text_changes(caplog):
    once = LogOnce(_logger(caplog))
    assert once.say("poll-spot", "down")
    assert not once.say("poll-spot", "down")
    assert once.say("poll-other", "down")
    assert once.say("poll-spot", "still down, differently")
    assert [r.getMessage() for r in caplog.records] == ["down", "down", "still down, differently"]


def test_first_keeps_the_first_text_of_a_key(caplog):
    once = LogOnce(_logger(caplog))
    assert once.first("api-503", "eviction of a got 503")
    assert not once.first("api-503", "eviction of b got 503")
    assert [r.getMessage() for r in caplog.records] == ["eviction of a got 503"]


def test_clear_ends_a_problem_so_it_is_said_again(caplog):
    once = LogOnce(_logger(caplog))
    once.say("write", "cannot write", logging.ERROR)
    assert once.said("wr") == {"write": "cannot write"}
    assert once.clear("write") == "cannot write"
    assert once.clear("write") is None
    assert once.said() == {}
    assert once.say("write", "cannot write")
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING]
