"""logs.one_line and the journal formatter: one record is one line at its own priority."""
from __future__ import annotations

import io
import logging

import pytest

from nodeagent import logs


@pytest.mark.parametrize("char, shown", [
    ("\x00", "\\x00"), ("\r", "\\x0d"), ("\t", "\\x09"), ("\x0b", "\\x0b"), ("\x0c", "\\x0c"),
    ("\x1b", "\\x1b"), ("\x7f", "\\x7f"), ("\x85", "\\x85"), ("\x9f", "\\x9f"),
    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"), ("\ud800", "\\ud800"), ("\udcff", "\\udcff"),
])
def test_control_characters_and_lone_surrogates_are_escaped(char, shown):
    assert logs.one_line(f"a{char}<0>b") == f"a{shown}<0>b"


def test_newlines_become_separators_and_ordinary_text_is_untouched():
    assert logs.one_line("one\ntwo\r\nthree") == "one | two | three"
    text = "pod default/web-0: é ü 日本 \U0001f600 \\ path"
    assert logs.one_line(text) == text


def _emit(level: int, message: str, *args: object) -> bytes:
    buffer = io.BytesIO()
    stream = io.TextIOWrapper(buffer, encoding="utf-8", errors="strict", newline="\n", write_through=True)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JournalPrefixFormatter())
    logger = logging.getLogger(f"test-logs-{id(buffer)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.log(level, message, *args)
    return buffer.getvalue()


def test_a_hostile_message_is_one_journal_line_at_its_own_priority(capsys):
    hostile = "denied\x00<0>forged emergency\n<0>second\u2028<1>third\ud800 end"
    raw = _emit(logging.WARNING, "not allowed to evict %s: %s", "default/web-0", hostile)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
    assert b"\x00" not in raw and b"\r" not in raw and "\u2028".encode() not in raw
    line = raw.decode("utf-8")
    assert line.startswith("<4>not allowed to evict default/web-0: denied\\x00<0>forged emergency | <0>second")
    assert "\\u2028<1>third\\ud800 end" in line
    assert "Logging error" not in capsys.readouterr().err


def test_a_traceback_stays_on_the_line_of_its_record():
    try:
        raise RuntimeError("boom\x00<0>x")
    except RuntimeError:
        buffer = io.BytesIO()
        stream = io.TextIOWrapper(buffer, encoding="utf-8", newline="\n", write_through=True)
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.JournalPrefixFormatter())
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
        handler.emit(record)
    raw = buffer.getvalue()
    assert raw.count(b"\n") == 1 and b"\x00" not in raw
    assert raw.startswith(b"<3>failed | Traceback") and b"RuntimeError: boom\\x00<0>x" in raw
