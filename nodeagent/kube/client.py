"""The kubelet's kubeconfig, one kept-alive API client, and who this node is.

The kubernetes client refreshes exec-plugin tokens lazily on the request path, and its exec
provider has no timeout. EKS runs `aws eks get-token` (about a second), so the first call after
a notice would wait for it, and a hung plugin would hang the drain. TokenKeeper runs the
kubeconfig's own exec plugin (through the library's ExecProvider) on a background thread ahead
of expiry and with a timeout; requests only ever read the cached token.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import json
import logging
import os
import re
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable
from urllib.parse import urlsplit

import yaml
from urllib3.util.retry import Retry

from nodeagent.clock import Clock, SystemClock, utcnow
from nodeagent.errors import ExpectedFailure
from nodeagent.jsontypes import JsonObject
from nodeagent.kube import deadline, light_import
from nodeagent.kube.gate import Answer, ApiGate, GateAbandoned, GateClosed, GateLimits, Priority
from nodeagent.kube.throttle import disruption_budget, is_throttling, retry_after_s
from nodeagent.log_once import LogOnce
from nodeagent.notices import parse_rfc3339_utc

log = logging.getLogger("nodeagent.kube")

REFRESH_AHEAD = timedelta(minutes=6)  # before the library's own 5 min skew would kick in
MIN_REFRESH_GAP = timedelta(seconds=10)
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# A Node is tens of KB and a page of pods (LIST_PAGE) a few MB: anything past these caps is
# refused rather than read into the agent's memory.
MAX_BODY_BYTES = 16 << 20
MAX_WATCH_LINE_BYTES = 4 << 20
LIST_PAGE = 500  # as client-go's pager: one page for nearly every node


def import_client_modules() -> None:
    """Import the Kubernetes client's modules now, on the calling thread (the main one). Left to
    the worker thread, the imports' allocations land in a second glibc malloc arena, and an idle
    daemon keeps about 1.5 MiB more RSS for the rest of its life (benchmark 4)."""
    import yaml  # noqa: F401
    from urllib3.util import retry  # noqa: F401

    light_import.prepare()  # first: the kubernetes package's own __init__ imports every model
    from kubernetes import client  # noqa: F401
    from kubernetes.config import kube_config  # noqa: F401


class KubeError(ExpectedFailure):
    pass


class KubeconfigMissing(KubeError):
    pass


class KubeconfigInvalid(KubeError):
    pass


class CredentialError(KubeError):
    pass


class ApiUnavailable(KubeError):
    """Connection refused, reset or timed out."""


class ApiError(KubeError):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        method: str,
        path: str,
        retry_after_s: float | None = None,
        budget: str | None = None,
    ):
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s  # what a 429/503 asked for (throttle.retry_after_s)
        self.budget = budget  # the PodDisruptionBudget a refusal names (throttle.disruption_budget)

    @property
    def throttling(self) -> bool:
        """A 429/503 about the server's load, not a disruption-budget refusal."""
        return is_throttling(self.status, self.message)


class RequestAbandoned(KubeError):
    """The caller's stop came while its request waited for its turn at the gate: never sent."""


class TokenKeeper:
    """Keeps a valid exec-plugin token ready, refreshing ahead of expiry with a timeout."""

    def __init__(self, exec_config: JsonObject, base_path: str, timeout_s: float):
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.exec_provider import ExecProvider
        from kubernetes.config.kube_config import ConfigNode

        try:
            self._provider = ExecProvider(ConfigNode("exec", exec_config), base_path)
        except ConfigException as error:
            raise KubeconfigInvalid(f"exec credential plugin: {error}") from None
        self._command = str(exec_config.get("command", "?"))
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expiry: datetime | None = None
        self._last_attempt: datetime | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="exec-plugin")
        self._inflight: concurrent.futures.Future | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.invocations = 0

    @property
    def expiry(self) -> datetime | None:
        return self._expiry

    def token(self) -> str:
        """The cached token; refreshes synchronously only when there is none or it has expired."""
        if self._token is None or (self._expiry is not None and self._expiry <= utcnow()):
            self.refresh()
        if self._token is None:
            raise CredentialError(f"no token from credential plugin {self._command!r}")
        return self._token

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            if not force and self._token is not None and not self._due():
                return
            if self._inflight is None or self._inflight.done():
                self.invocations += 1
                self._inflight = self._pool.submit(self._run_plugin)
            future = self._inflight
            self._last_attempt = utcnow()
        try:
            status = future.result(timeout=self._timeout_s + 5)  # _run_plugin kills at _timeout_s
        except concurrent.futures.TimeoutError:
            raise CredentialError(
                f"credential plugin {self._command!r} did not answer within {self._timeout_s:g}s"
            ) from None
        except CredentialError:
            raise
        except Exception as error:
            raise CredentialError(f"credential plugin {self._command!r} failed: {error}") from None
        token = status.get("token") if isinstance(status, dict) else None
        if not token:
            raise CredentialError(f"credential plugin {self._command!r} returned no token")
        expiry = status.get("expirationTimestamp")
        with self._lock:
            self._token = str(token)
            self._expiry = _parse_time(expiry) if expiry else None
        log.debug("credential plugin refreshed the token (expires %s)", expiry or "never")

    def _run_plugin(self) -> JsonObject:
        """The library's ExecProvider.run waits for the plugin forever, so one hung `aws eks
        get-token` would block every later refresh. Run the same command (args, env, cwd from the
        provider) in its own process group and kill the group at the timeout."""
        provider = self._provider
        env = dict(provider.env)
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": provider.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
        )
        try:
            process = subprocess.Popen(
                provider.args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=provider.cwd,
                env=env,
                start_new_session=True,
            )
        except OSError as error:
            raise CredentialError(
                f"credential plugin {self._command!r} could not be started: {error}"
            ) from None
        try:
            stdout, stderr = process.communicate(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise CredentialError(
                f"credential plugin {self._command!r} did not answer within {self._timeout_s:g}s; killed it"
            ) from None
        if process.returncode != 0:
            detail = stderr.decode("utf-8", "replace").strip()[-300:]
            raise CredentialError(
                f"credential plugin {self._command!r} failed: exit status "
                f"{process.returncode}{': ' + detail if detail else ''}"
            )
        try:
            credential = json.loads(stdout)
            status = credential["status"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise CredentialError(f"credential plugin {self._command!r} printed no ExecCredential") from None
        if credential.get("apiVersion") != provider.api_version or not isinstance(status, dict):
            raise CredentialError(
                f"credential plugin {self._command!r} answered apiVersion "
                f"{credential.get('apiVersion')!r}, expected {provider.api_version!r}"
            )
        return status

    def _due(self) -> bool:
        return self._expiry is not None and self._expiry - REFRESH_AHEAD <= utcnow()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return  # warm_up runs again on every startup retry: keep one refresher, not one per try
        self._thread = threading.Thread(target=self._keep_fresh, name="token-keeper", daemon=True)
        self._thread.start()

    def _keep_fresh(self) -> None:
        while not self._stop.is_set():
            wait_s = 60.0
            if self._expiry is not None:
                wait_s = max(
                    MIN_REFRESH_GAP.total_seconds(), (self._expiry - REFRESH_AHEAD - utcnow()).total_seconds()
                )
            if self._stop.wait(min(wait_s, 300.0)):
                return
            if self._due():
                try:
                    self.refresh()
                except CredentialError as error:
                    log.warning("%s; will retry", error)

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        process.kill()
    process.communicate()


def _parse_time(text: str) -> datetime:

    return parse_rfc3339_utc(text)


@dataclass(frozen=True)
class KubeOptions:
    kubeconfig: str
    exec_timeout_s: float = 20.0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    pool_size: int = 40
    gate: GateLimits = field(default_factory=GateLimits)


def counts_as_failure(error: KubeError) -> bool:
    """Whether an error is a failure, not part of normal work: 404 and 409 (already gone or
    already changed: idempotent success), a PDB's 429 (the drain retries it by design) and the
    NodeRestriction 403 on the taint attempt (node credentials always get it) are not."""
    if isinstance(error, ApiError):
        if error.status in (404, 409):
            return False
        if error.status == 429 and not error.throttling:
            return False
        if error.status == 403 and "not allowed to modify taints" in error.message:
            return False
    return True


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
        self._once = LogOnce(log)
        self._api_client = self._load()

    def _load(self):
        path = self.options.kubeconfig
        if not os.path.exists(path):
            raise KubeconfigMissing(f"kubeconfig {path} does not exist yet")
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise KubeconfigInvalid(f"cannot read kubeconfig {path}: {error}") from None

        try:
            config_dict = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise KubeconfigInvalid(f"kubeconfig {path} is not valid YAML: {_yaml_problem(error)}") from None
        except RecursionError:
            raise KubeconfigInvalid(f"kubeconfig {path} is not valid YAML: nested too deeply") from None
        if not isinstance(config_dict, dict):
            raise KubeconfigInvalid(f"kubeconfig {path} is not a kubeconfig (no mapping at top level)")

        light_import.prepare()  # skip kubernetes' API and model classes: ~30 MB RSS we never use
        from kubernetes import client
        from kubernetes.config.config_exception import ConfigException
        from kubernetes.config.kube_config import KubeConfigLoader

        config_dict = copy.deepcopy(config_dict)
        exec_config = _pop_exec_config(config_dict)
        configuration = client.Configuration()
        try:
            KubeConfigLoader(config_dict, config_base_path=os.path.dirname(path)).load_and_set(configuration)
        except (ConfigException, KeyError, TypeError, ValueError) as error:
            raise KubeconfigInvalid(f"kubeconfig {path}: {error}") from None
        _proxy_from_environment(configuration)
        configuration.connection_pool_maxsize = self.options.pool_size
        # urllib3 would otherwise retry a GET that gets 429/503 with Retry-After by itself, sleeping
        # Retry-After each time (and re-send GETs that time out): unlogged, and blind to the
        # deadline. Our callers retry with backoff up to the deadline and say so.

        configuration.retries = Retry(total=3, read=0, status=0, redirect=0, respect_retry_after_header=False)
        if exec_config is not None:
            self.tokens = TokenKeeper(exec_config, os.path.dirname(path), self.options.exec_timeout_s)
            configuration.api_key_prefix["authorization"] = "Bearer"
            # auth_settings() consults the hook only when the key exists; the hook fills it in.
            configuration.api_key["authorization"] = ""
            tokens = self.tokens

            def use_cached_token(config) -> None:
                config.api_key["authorization"] = tokens.token()

            configuration.refresh_api_key_hook = use_cached_token
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
            except Exception as error:  # urllib3 connection/timeouts/SSL
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


def _proxy_from_environment(configuration) -> None:
    """The proxy for the API server's scheme, and NO_PROXY, as curl and requests read them.

    The library's Configuration() reads HTTP(S)_PROXY (the last of four variables set wins, so
    HTTP_PROXY beats HTTPS_PROXY for an https server) and then resets no_proxy to None: behind a
    proxy, every API call went to it even with the API server in NO_PROXY. The library's
    RESTClientObject checks no_proxy with requests' should_bypass_proxies (hosts, domain
    suffixes, IPs and CIDRs) when no_proxy is set, so setting both right is enough."""
    proxies = urllib.request.getproxies_environment()  # lower case wins, as in curl
    scheme = urlsplit(configuration.host or "").scheme or "https"
    configuration.proxy = proxies.get(scheme) or proxies.get("all") or None
    configuration.no_proxy = proxies.get("no") or None
    if configuration.proxy:
        proxy = urlsplit(configuration.proxy)
        log.debug(
            "proxy for API calls: %s (NO_PROXY: %s)", proxy.hostname or "?", configuration.no_proxy or "unset"
        )


def _pop_exec_config(config_dict: dict[str, object]) -> dict[str, object] | None:
    """Remove the current user's exec section (TokenKeeper runs it) and return it."""
    context_name = config_dict.get("current-context")
    contexts = config_dict.get("contexts") or []
    users = config_dict.get("users") or []
    if not isinstance(contexts, list) or not isinstance(users, list):
        raise KubeconfigInvalid("kubeconfig contexts/users are not lists")
    context = next((c for c in contexts if isinstance(c, dict) and c.get("name") == context_name), None)
    if context is None and len(contexts) == 1 and isinstance(contexts[0], dict):
        context = contexts[0]
        config_dict["current-context"] = context.get("name")
    if context is None:
        raise KubeconfigInvalid(f"kubeconfig has no context named {context_name!r}")
    user_name = (context.get("context") or {}).get("user")
    for user in users:
        if isinstance(user, dict) and user.get("name") == user_name and isinstance(user.get("user"), dict):
            return user["user"].pop("exec", None)
    return None


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


def _yaml_problem(error: Exception) -> str:
    """What kind of YAML error and where, never the text around it: PyYAML's message quotes the
    offending line, which in a kubeconfig can be an inline token or client key."""
    problem = str(getattr(error, "problem", "") or getattr(error, "context", "") or type(error).__name__)
    # Problems quote what was found; keep YAML's own tokens (',' '}' '\\t' '<stream end>'), hide the rest.
    problem = re.sub(
        r"'([^']*)'",
        lambda m: m.group(0) if re.fullmatch(r"[^\w]|\\t|<[a-z ]+>", m.group(1)) else "'...'",
        problem,
    )
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def _short(error: Exception) -> str:
    text = str(error)
    return text if len(text) < 200 else text[:200] + "..."


@dataclass(frozen=True)
class NodeIdentity:
    name: str
    provider_id: str
    labels: dict[str, str]
    unschedulable: bool
    how: str  # how the name was learned
    annotations: dict[str, str] = field(default_factory=dict)


def whoami(api: KubeApi) -> str:
    review = api.request(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
    )
    return str(((review.get("status") or {}).get("userInfo") or {}).get("username", ""))


PROVIDER_ID = re.compile(r"aws:///([^/]*)/([^/]+)")


def provider_id_problem(
    provider_id: str, instance_id: str | None, zone: str | None, explicit_name: bool
) -> str | None:
    """Why the Node with this providerID may not be taken for this instance, or None. Pure.

    The agent cordons and drains whatever Node it finds, so the Node must name this instance:
    its providerID (aws:///<zone>/<instance id>) has to carry IMDS's instance id (and zone, when
    both are known). What cannot be checked, an empty providerID (a Node not yet initialised) or
    an instance id IMDS did not give, is refused unless the operator named the node (NODE_NAME);
    a providerID that names another instance is refused even then (a NODE_NAME typo)."""
    if not provider_id or not instance_id:
        if explicit_name:
            return None
        missing = (
            "has no providerID yet"
            if not provider_id
            else "cannot be checked: this instance's id is unknown (IMDS did not give it)"
        )
        return (
            f"{missing}, so it cannot be matched to this instance"
            f"{' (' + instance_id + ')' if instance_id else ''} (set NODE_NAME to name this node yourself)"
        )
    match = PROVIDER_ID.fullmatch(provider_id)
    if not match or match.group(2) != instance_id or (zone and match.group(1) and match.group(1) != zone):
        expected = f"aws:///{zone or '<zone>'}/{instance_id}"
        return f"has providerID {provider_id!r}, but IMDS says this instance is {expected!r}"
    return None


def find_node(api: KubeApi, override_name: str, instance_id: str | None, zone: str | None) -> NodeIdentity:
    """Learn this node's name (NODE_NAME, else SelfSubjectReview) and check its providerID."""
    tried: list[str] = []
    if override_name:
        name, how = override_name, "NODE_NAME"
    else:
        try:
            username = whoami(api)
        except ApiError as error:
            raise KubeError(
                f"cannot tell which node this is: SelfSubjectReview failed ({error}); set NODE_NAME"
            ) from None
        tried.append(f"SelfSubjectReview says {username!r}")
        if not username.startswith("system:node:"):
            raise KubeError(
                f"cannot tell which node this is: {'; '.join(tried)}, which is not a node credential "
                "(system:node:<name>); set NODE_NAME"
            )
        name, how = username[len("system:node:") :], "SelfSubjectReview"
    try:
        node = api.request("GET", f"/api/v1/nodes/{name}")
    except ApiError as error:
        raise KubeError(f"node {name!r} (from {how}) could not be read: {error}") from None
    spec = node.get("spec") or {}
    provider_id = str(spec.get("providerID") or "")
    problem = provider_id_problem(provider_id, instance_id, zone, explicit_name=how == "NODE_NAME")
    if problem:
        raise KubeError(f"node {name!r} (from {how}) {problem}; refusing to act on another node")
    if not provider_id or not instance_id:
        log.warning(
            "node %s: %s; trusting NODE_NAME",
            name,
            "has no providerID"
            if not provider_id
            else "this instance's id is unknown, so its providerID cannot be checked",
        )
    metadata = node.get("metadata") or {}
    return NodeIdentity(
        name=name,
        provider_id=provider_id,
        labels=dict(metadata.get("labels") or {}),
        unschedulable=bool(spec.get("unschedulable")),
        how=how,
        annotations=dict(metadata.get("annotations") or {}),
    )
