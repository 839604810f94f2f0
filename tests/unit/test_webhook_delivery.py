"""report/webhook_delivery's pure parts: WEBHOOK_HEADERS parsing and the redactor that keeps the
URL and header values out of every log line. (Delivery itself: tests/daemon/test_webhook.py.)"""

from __future__ import annotations

import pytest
import requests

from nodeagent.report.webhook_delivery import Redactor, _retry_after, describe_failure, parse_headers

SECRET_TOKEN = "T0SECRET/B0SECRET/xoxb-5ecret-w3bh00k-t0ken"
HEADER_SECRET = "Bearer hdr-5ecret-value-7781"


def test_headers_parse_without_quoting_values():
    headers, problems = parse_headers(f"Authorization: {HEADER_SECRET}; broken-entry; X-A: 1")
    assert headers == {"Authorization": HEADER_SECRET, "X-A": "1"}
    assert problems == ["WEBHOOK_HEADERS entry 2 ignored: expected 'Name: value'"]
    assert HEADER_SECRET not in " ".join(problems)


def test_a_header_value_with_a_line_break_is_refused_by_name():
    headers, problems = parse_headers(f"X-A: {HEADER_SECRET}\r\nX-Injected: 1")
    assert headers == {}
    assert problems == ["WEBHOOK_HEADERS entry 1 (X-A) ignored: line break in the value"]


def test_redactor_removes_url_parts_and_header_values():
    url = f"https://hooks.example.com/services/{SECRET_TOKEN}?k=querysecret"
    redact = Redactor(url, [HEADER_SECRET])
    text = redact(f"POST {url} failed; host hooks.example.com path /services/{SECRET_TOKEN} {HEADER_SECRET}")
    for secret in (SECRET_TOKEN, "hooks.example.com", "querysecret", HEADER_SECRET):
        assert secret not in text


@pytest.mark.parametrize("error, said", [
    (requests.exceptions.ConnectTimeout(f"https://x/{SECRET_TOKEN}"), "connect timed out"),
    (requests.exceptions.ReadTimeout(f"https://x/{SECRET_TOKEN}"), "timed out"),
    (requests.exceptions.ConnectionError(f"https://x/{SECRET_TOKEN}"), "connection failed"),
    (ValueError(f"https://x/{SECRET_TOKEN}"), "ValueError"),
])
def test_a_failure_is_described_without_its_text(error, said):
    assert describe_failure(error) == said


@pytest.mark.parametrize("value, seconds", [("5", 5.0), (" 12 ", 12.0), ("soon", None), (None, None)])
def test_retry_after_in_seconds_only(value, seconds):
    assert _retry_after(value) == seconds
