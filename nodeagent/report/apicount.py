"""Counts failed Kubernetes API requests for the metrics, without touching the client itself.

The responder builds its KubeApi through `api_factory`; `count_api_errors` wraps that factory so
the API it builds is a CountingApi that delegates everything and counts the failures. The answers
that are part of normal work are not failures: 404 and 409 (the object is already gone or already
changed: idempotent success), a PDB's 429 (the drain retries it by design), and the NodeRestriction
403 on the taint attempt (expected with node credentials; the cordon's own taint is the fallback).
"""
from __future__ import annotations

from typing import Callable, Iterator

from nodeagent.kube.client import ApiError, KubeError


def is_failure(error: KubeError) -> bool:
    if isinstance(error, ApiError):
        if error.status in (404, 409):
            return False
        if error.status == 429 and "disruption budget" in error.message.lower():
            return False
        if error.status == 403 and "not allowed to modify taints" in error.message:
            return False  # the one expected refusal: node credentials may not taint
    return True


class CountingApi:
    """A KubeApi look-alike: `request` and `stream_lines` count failures; the rest delegates."""

    def __init__(self, api, on_error: Callable[[], None]):
        self._api = api
        self._on_error = on_error

    def request(self, method: str, path: str, **kwargs):
        try:
            return self._api.request(method, path, **kwargs)
        except KubeError as error:
            if is_failure(error):
                self._on_error()
            raise

    def stream_lines(self, path: str, query, read_timeout_s: float) -> Iterator[dict]:
        try:
            yield from self._api.stream_lines(path, query, read_timeout_s)
        except KubeError as error:
            if is_failure(error):
                self._on_error()
            raise

    def __getattr__(self, name: str):
        return getattr(self._api, name)


def count_api_errors(responder, on_error: Callable[[], None]) -> bool:
    """Make the responder's future KubeApi count its failures. False when it has no API."""
    factory = getattr(responder, "api_factory", None)
    if factory is None:
        return False
    responder.api_factory = lambda options: CountingApi(factory(options), on_error)
    return True
