"""The kubelet's kubeconfig read into the Kubernetes client's Configuration.

The file is parsed with safe_load and its errors never quote it (a kubeconfig can hold an inline
token or client key). The current user's exec section is taken out and run by TokenKeeper
(tokens.py) instead of the library, and the proxy comes from the environment as curl reads it.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import yaml

from nodeagent.kube import light_import
from nodeagent.kube.errors import KubeconfigInvalid, KubeconfigMissing
from nodeagent.kube.tokens import TokenKeeper

log = logging.getLogger("nodeagent.kube")


def import_client_modules() -> None:
    """Import the Kubernetes client's modules now, on the calling thread (the main one). Left to
    the worker thread, the imports' allocations land in a second glibc malloc arena, and an idle
    daemon keeps about 1.5 MiB more RSS for the rest of its life."""
    import yaml  # noqa: F401
    from urllib3.util import retry  # noqa: F401

    light_import.prepare()  # first: the kubernetes package's own __init__ imports every model
    from kubernetes import client  # noqa: F401
    from kubernetes.config import kube_config  # noqa: F401


def load(path: str, exec_timeout_s: float) -> tuple[Any, TokenKeeper | None]:
    """(the client's Configuration, the exec plugin's TokenKeeper or None) for the kubeconfig at
    `path`. Raises KubeconfigMissing or KubeconfigInvalid."""
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
    if exec_config is None:
        return configuration, None
    tokens = TokenKeeper(exec_config, os.path.dirname(path), exec_timeout_s)
    configuration.api_key_prefix["authorization"] = "Bearer"
    # auth_settings() consults the hook only when the key exists; the hook fills it in.
    configuration.api_key["authorization"] = ""

    def use_cached_token(config) -> None:
        config.api_key["authorization"] = tokens.token()

    configuration.refresh_api_key_hook = use_cached_token
    return configuration, tokens


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
