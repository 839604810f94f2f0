"""One kept-alive Kubernetes API client: raw JSON in and out, every request through the gate.

KubeApi reads the kubeconfig (kubeconfig.py), sends each request through the API gate (gate.py)
with a deadline on the whole answer (deadline.py), and turns every failure into a KubeError
(errors.py) with a message for the operator.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from urllib3.util.retry import Retry

from nodeagent.clock import Clock, SystemClock
from nodeagent.cycles import CycleCollector
from nodeagent.jsontypes import JsonObject
from nodeagent.kube import deadline, kubeconfig
from nodeagent.kube.errors import (
    ApiError,
    ApiUnavailable,
    CredentialError,
    KubeError,
    RequestAbandoned,
    counts_as_failure,
)
from nodeagent.kube.gate import Answer, ApiGate, GateAbandoned, GateClosed, GateLimits, Priority
from nodeagent.kube.throttle import disruption_budget, retry_after_s
from nodeagent.kube.tls import SharedTls
from nodeagent.kube.tokens import TokenKeeper
from nodeagent.log_once import LogOnce

log = logging.getLogger("nodeagent.kube")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A Node is tens of KB and a page of pods (LIST_PAGE) a few MB: anything past these caps is
# refused rather than read into the agent's memory.
MAX_BODY_BYTES = 16 << 20
MAX_WATCH_LINE_BYTES = 4 << 20
LIST_PAGE = 500  # as client-go's pager: one page for nearly every node


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: str
    exec_timeout_s: float = 20.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    pool_size: int = 40
    gate: GateLimits = field(default_factory=GateLimits)


class KubeApi:
    """A thin JSON front on the kubernetes client's ApiClient: one pool, raw dicts, clear errors."""

    def __init__(self, options: KubeOptions, clock: Clock | None = None):
        self.options = options
        self.clock: Clock = clock or SystemClock()
        # Called once per failed request (see counts_as_failure): the metrics' API error count.
        self.on_failure: Callable[[], None] = lambda: None
        self.tokens: TokenKeeper | None = None
        self.requests = 0
        self.gate = ApiGate(options.gate, self.clock)
        self.cycles = CycleCollector(self.clock.monotonic)
        self._once = LogOnce(log)
        self._api_client = self._load()
        self.tls = SharedTls(self._api_client.rest_client.pool_manager)

    def _load(self):
        from kubernetes import client

        configuration, self.tokens = kubeconfig.load(self.options.kubeconfig, self.options.exec_timeout_s)
        configuration.connection_pool_maxsize = self.options.pool_size
        # urllib3 would otherwise retry a GET that gets 429/503 with Retry-After by itself, sleeping
        # Retry-After each time (and re-send GETs that time out): unlogged, and blind to the
        # deadline. Our callers retry with backoff up to the deadline and say so.
        configuration.retries = Retry(total=3, read=0, status=0, redirect=0, respect_retry_after_header=False)
        api_client = client.ApiClient(configuration)
        deadline.install(api_client.rest_client.pool_manager)
        return api_client

    @property
    def host(self) -> str:
        return self._api_client.configuration.host

    def warm_up(self) -> None:
        """Fetch the first exec token now, then keep it fresh in the background."""
        if self.tokens is not None:
            self.tokens.refresh()
            self.tokens.start()

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: object | None = None,
        content_type: str = JSON,
        timeout: tuple[float, float] | None = None,
        priority: Priority = Priority.NODE,
        act_by: datetime | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> JsonObject:
        """One request through the gate. `act_by`: the caller's last safe moment, when the request
        leaves even if the server asked this node to wait; `give_up`: asked while it waits its
        turn (True: RequestAbandoned, nothing sent)."""
        turn = _Turn(priority, act_by, give_up)
        try:
            response, data = self._call(method, path, query, body, content_type, timeout, turn, stream=False)
            if not data:
                return {}
            try:
                decoded = json.loads(data)
            # RecursionError: a deeply nested body (one hostile answer must not abort a drain).
            except (ValueError, RecursionError) as error:
                raise ApiError(
                    response.status, "BadBody", f"response is not JSON ({type(error).__name__})", method, path
                ) from None
            if not isinstance(decoded, dict):
                raise ApiError(response.status, "BadBody", "response is not a JSON object", method, path)
            return decoded
        except KubeError as error:
            self._count_failure(error)
            raise

    def list_all(
        self,
        path: str,
        query: Sequence[tuple[str, str]],
        *,
        priority: Priority = Priority.DRAIN,
        act_by: datetime | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> tuple[list[JsonObject], str]:
        """A list read in pages of LIST_PAGE (each page one request, bounded by MAX_BODY_BYTES):
        (items, the list's resourceVersion)."""
        items: list[JsonObject] = []
        resource_version = ""
        token = ""
        while True:
            page_query = [*query, ("limit", str(LIST_PAGE))] + ([("continue", token)] if token else [])
            page = self.request(
                "GET", path, query=page_query, priority=priority, act_by=act_by, give_up=give_up
            )
            listed = page.get("items") or []
            if not isinstance(listed, list):
                raise ApiError(200, "BadBody", "list items are not a list", "GET", path)
            items.extend(item for item in listed if isinstance(item, dict))
            metadata = page.get("metadata") or {}
            if not isinstance(metadata, dict):
                metadata = {}
            resource_version = resource_version or str(metadata.get("resourceVersion") or "")
            token = str(metadata.get("continue") or "")
            if not token:
                return items, resource_version

    def stream_lines(
        self,
        path: str,
        query: Sequence[tuple[str, str]],
        read_timeout_s: float,
        *,
        priority: Priority = Priority.DRAIN,
        give_up: Callable[[], bool] | None = None,
    ) -> Iterator[JsonObject]:
        """A watch: yields each decoded event; ends when the server closes the stream. Only its
        start passes the gate: an open watch holds no place in flight (as in APF)."""
        try:
            yield from self._stream_lines(path, query, read_timeout_s, _Turn(priority, None, give_up))
        except KubeError as error:
            self._count_failure(error)
            raise

    def _count_failure(self, error: KubeError) -> None:
        if counts_as_failure(error):
            self.on_failure()

    def _stream_lines(
        self, path: str, query: Sequence[tuple[str, str]], read_timeout_s: float, turn: _Turn
    ) -> Iterator[dict[str, object]]:
        response, _ = self._call(
            "GET",
            path,
            query,
            None,
            JSON,
            (self.options.connect_timeout_s, read_timeout_s),
            turn,
            stream=True,
        )
        buffer = b""
        try:
            for chunk in response.stream(4096, decode_content=False):
                buffer += chunk
                if len(buffer) > MAX_WATCH_LINE_BYTES and b"\n" not in buffer:
                    raise ApiError(
                        200,
                        "TooLarge",
                        f"a watch event is larger than {MAX_WATCH_LINE_BYTES >> 20} MiB; refused",
                        "GET",
                        path,
                    )
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        if not isinstance(event, dict):
                            raise ValueError("watch event is not a JSON object")
                        yield event
        except ApiError:
            raise
        except Exception as error:
            if isinstance(error, (ValueError, RecursionError)):
                raise ApiError(200, "BadWatch", f"undecodable watch event: {error}", "GET", path) from None
            self.cycles.failed()
            raise ApiUnavailable(f"watch {path} ended: {error}") from None
        finally:
            response.release_conn()

    def _call(self, method, path, query, body, content_type, timeout, turn: _Turn, stream: bool):
        """(response, body bytes) for a request; (response, None) for a stream, read by the caller.
        Each attempt passes the gate (gate.py) and reports the answer back to it. A request that is
        not complete (body included) within connect + read timeout is cut, and a body past
        MAX_BODY_BYTES is refused (see deadline): urllib3's own timeouts are per read, and a
        trickle resets them."""
        from kubernetes.client.exceptions import ApiException

        timeout = timeout or (self.options.connect_timeout_s, self.options.read_timeout_s)
        total_s = float(sum(timeout))
        for attempt in (1, 2):
            self.cycles.before_request()
            self._enter_gate(method, path, turn)
            self.requests += 1
            answer, retry_after = Answer.FAILED, None
            limit = (
                deadline.DEADLINES.limit(total_s, max_bytes=MAX_BODY_BYTES)
                if not stream
                else contextlib.nullcontext(None)
            )
            try:
                with limit as entry:
                    try:
                        self.tls.refresh()
                        response = self._api_client.call_api(
                            path,
                            method,
                            query_params=list(query),
                            body=body,
                            header_params={"Content-Type": content_type, "Accept": JSON},
                            auth_settings=["BearerToken"],
                            _preload_content=False,
                            _return_http_data_only=True,
                            _request_timeout=timeout,
                        )
                        data = None if stream else response.data
                        answer = Answer.OK
                        return response, data
                    except deadline.ResponseTooLarge as error:
                        answer = Answer.OK
                        raise ApiError(
                            error.status,
                            "TooLarge",
                            f"the answer is larger than {error.cap >> 20} MiB; refused",
                            method,
                            path,
                        ) from None
                    except Exception:
                        if entry is not None and entry.expired:
                            self.cycles.failed()
                            raise ApiUnavailable(
                                f"{method} {path}: no complete answer within {total_s:g}s "
                                "(the server is sending too slowly); gave up"
                            ) from None
                        raise
            except ApiException as error:
                if error.status == 401 and attempt == 1 and self.tokens is not None:
                    answer = Answer.OK
                    log.info("API said 401; refreshing the exec credential once")
                    self.tokens.refresh(force=True)
                    continue
                if error.status == 0 or error.status is None:
                    raise ApiUnavailable(f"{method} {path}: {error.reason}") from None
                api_error = _api_error(error, method, path, self.clock.now())
                if api_error.throttling:
                    answer, retry_after = Answer.THROTTLED, api_error.retry_after_s
                elif api_error.status < 500:
                    answer = Answer.OK  # an answer about this request, not about the server's load
                raise api_error from None
            except (CredentialError, ApiUnavailable, ApiError):
                raise
            except Exception as error:  # urllib3 connection/timeouts/SSL, unreadable TLS files
                self.cycles.failed()
                raise ApiUnavailable(f"{method} {path}: {type(error).__name__}: {_short(error)}") from None
            finally:
                pause = self.gate.leave(answer, retry_after)
                if pause:
                    self._say_throttled(method, path, retry_after, pause)
        raise AssertionError("unreachable")

    def _enter_gate(self, method: str, path: str, turn: _Turn) -> None:
        act_by = None
        if turn.act_by is not None:
            act_by = self.clock.monotonic() + (turn.act_by - self.clock.now()).total_seconds()
        try:
            ticket = self.gate.enter(turn.priority, act_by, turn.give_up)
        except GateClosed:
            raise ApiUnavailable(f"{method} {path}: not sent, the agent is stopping") from None
        except GateAbandoned:
            raise RequestAbandoned(f"{method} {path}: not sent, its response was stopped") from None
        if ticket.against_pause_s > 0:
            log.warning(
                "%s %s: sent at its last safe moment, against the API server's request to wait %.1fs more",
                method,
                path,
                ticket.against_pause_s,
            )

    def _say_throttled(self, method: str, path: str, retry_after: float | None, pause: float) -> None:
        asked = "no Retry-After" if retry_after is None else f"Retry-After {retry_after:g}s"
        self._once.first(
            "throttled",
            f"the API server is throttling this node ({method} {path}: {asked}); all of this "
            f"node's requests wait {pause:.1f}s, and each later throttling answer pauses them again",
        )

    def close(self) -> None:
        self.gate.close()
        if self.tokens is not None:
            self.tokens.close()
        with contextlib.suppress(Exception):
            self._api_client.close()


@dataclass(frozen=True)
class _Turn:
    """How one request waits at the gate (see KubeApi.request)."""

    priority: Priority
    act_by: datetime | None
    give_up: Callable[[], bool] | None


def _api_error(error, method: str, path: str, now: datetime) -> ApiError:
    message = error.reason or ""
    reason = error.reason or ""
    body: object = None
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: keep the HTTP reason
        body = json.loads(error.body or "{}")
    if isinstance(body, dict):  # a Status object
        message = body.get("message", message)
        reason = body.get("reason", reason)
    retry_after = retry_after_s(error.headers, body, now) if error.status in (429, 503) else None
    budget = disruption_budget(body) if error.status == 429 else None
    return ApiError(int(error.status), str(reason), str(message), method, path, retry_after, budget)


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."
