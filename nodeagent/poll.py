"""One poll: fetch the due IMDS paths and parse each body. Fetching here, parsing in notices.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from nodeagent.decide_terms import PollResult
from nodeagent.imds import ImdsClient, ImdsError, ImdsUnreachable
from nodeagent.notices import SOURCES_BY_KIND, Notice, NoticeParseError


def poll_once(imds: ImdsClient, kinds: Sequence[str], now: datetime) -> PollResult:
    """`kinds` in the order of SOURCES (most urgent first)."""
    found: dict[str, Notice] = {}
    answered: list[str] = []
    errors: dict[str, str] = {}
    problems: list[str] = []
    for kind in kinds:
        source = SOURCES_BY_KIND[kind]
        try:
            body = imds.get(source.path)
        except ImdsError as error:
            errors[kind] = str(error)
            # No connection or no answer in time: the rest will fare no better, so don't stall the
            # loop. An answer about one path (a 5xx, a 429, a bad body) says nothing about the
            # others: poll them, or a steady error on the spot path would hide every other notice.
            if isinstance(error, ImdsUnreachable):
                break
            continue
        if body is None:
            answered.append(kind)
            continue
        try:
            parsed = source.parse(body, now)
        except NoticeParseError as error:
            errors[kind] = f"malformed IMDS body: {error}"
            continue
        answered.append(kind)
        problems.extend(f"{source.path}: {problem}" for problem in parsed.problems)
        for notice in parsed.notices:
            found[notice.id] = notice
    return PollResult(found, frozenset(answered), errors, tuple(problems))
