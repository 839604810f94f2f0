"""The exec credential plugin's token, kept fresh off the request path.

The kubernetes client refreshes exec-plugin tokens lazily on the request path, and its exec
provider has no timeout. EKS runs `aws eks get-token` (about a second), so the first call after
a notice would wait for it, and a hung plugin would hang the drain. TokenKeeper runs the
kubeconfig's own exec plugin (through the library's ExecProvider) on a background thread ahead
of expiry and with a timeout; requests only ever read the cached token.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import signal
import subprocess
import threading
from datetime import datetime, timedelta

from nodeagent.clock import utcnow
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.errors import CredentialError, KubeconfigInvalid
from nodeagent.timefmt import parse_rfc3339_utc

log = logging.getLogger("nodeagent.kube")

REFRESH_AHEAD = timedelta(minutes=6)  # before the library's own 5 min skew would kick in
MIN_REFRESH_GAP = timedelta(seconds=10)


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
            self._expiry = parse_rfc3339_utc(expiry) if expiry else None
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
