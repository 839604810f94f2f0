"""One poll: fetch the due IMDS paths and parse each body. Fetching here, parsing in notices.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from nodeagent.decide import PollResult
from nodeagent.imds import ImdsClient, ImdsError, ImdsUnavailable
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
            # One unreachable IMDS means the rest will be too; don't stall the loop. A bad body
            # on one path (too large, not UTF-8) says nothing about the others: poll them.
            if isinstance(error, ImdsUnavailable):
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
