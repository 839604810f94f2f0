"""Import only the parts of the kubernetes package that nodeagent uses.

`import kubernetes.client` runs package __init__s that import every API class and all ~700
model classes: about 30 MB of RSS and most of the daemon's footprint (docs/performance.md, "Idle
RSS"). nodeagent sends raw JSON through ApiClient and needs only Configuration, ApiClient,
rest, exceptions and the config loader with its exec provider, none of which use the models.

kube_config also imports oauthlib and requests_oauthlib at its top, for one auth provider only
(OIDC token refresh; a node's kubelet kubeconfig uses a client certificate or an exec plugin):
about 1.3 MB more. `prepare()` imports kube_config with those deferred: the one name it takes
from them, OAuth2Session, loads them when it is first called.

`prepare()` puts the four packages (kubernetes, kubernetes.client, kubernetes.client.models,
kubernetes.config) into sys.modules as empty packages over the real directories, so importing a
submodule loads just that file. Nothing else in the process loses anything: the first time some
other code asks one of these packages for a name that is not a submodule (e.g.
`from kubernetes import client; client.CoreV1Api`), the package runs its real __init__ and
answers. If kubernetes is already imported, prepare() does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
import types

PACKAGES = ("kubernetes", "kubernetes.client", "kubernetes.client.models", "kubernetes.config")
KUBE_CONFIG = "kubernetes.config.kube_config"
# What kube_config imports for OIDC alone, with the names it takes from each (`from ... import`).
OIDC_ONLY = {"oauthlib.oauth2": (), "requests_oauthlib": ("OAuth2Session",)}
_lock = threading.RLock()


def prepare() -> None:
    with _lock:
        if "kubernetes" in sys.modules:
            return
        spec = importlib.util.find_spec("kubernetes")
        if spec is None or not spec.submodule_search_locations:
            return  # not installed: the real import reports it
        root = next(iter(spec.submodule_search_locations))
        for name in PACKAGES:
            directory = os.path.join(root, *name.split(".")[1:])
            module = _LazyPackage(name, directory)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
        # kube_config does `from kubernetes.client import ApiClient, Configuration`.
        client = sys.modules["kubernetes.client"]
        configuration = importlib.import_module("kubernetes.client.configuration")
        api_client = importlib.import_module("kubernetes.client.api_client")
        vars(client).update(Configuration=configuration.Configuration, ApiClient=api_client.ApiClient)
        _import_kube_config_without_oidc()


def _import_kube_config_without_oidc() -> None:
    if any(name in sys.modules for name in (KUBE_CONFIG, *OIDC_ONLY)):
        importlib.import_module(KUBE_CONFIG)  # too late to defer anything: import as it is
        return
    stand_ins = {name: _StandIn(name, names) for name, names in OIDC_ONLY.items()}
    sys.modules.update(stand_ins)
    try:
        importlib.import_module(KUBE_CONFIG)
    finally:  # only kube_config's import sees the stand-ins; any later import gets the real thing
        for name, stand_in in stand_ins.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]


def _load_oidc_modules() -> None:
    for name in OIDC_ONLY:
        importlib.import_module(name)


class _StandIn(types.ModuleType):
    """What `import oauthlib.oauth2` / `from requests_oauthlib import OAuth2Session` find while
    kube_config is imported: each name it takes is a _Deferred."""

    def __init__(self, name: str, names: tuple[str, ...]):
        super().__init__(name)
        for attr in names:
            setattr(self, attr, _Deferred(name, attr))


class _Deferred:
    """Stands for `module.name` until first called: then the OIDC modules are imported for real
    (so kube_config's `except oauthlib.oauth2...` clauses resolve too) and the call goes on."""

    def __init__(self, module: str, name: str):
        self._module, self._name = module, name

    def __call__(self, *args: object, **kwargs: object) -> object:
        _load_oidc_modules()
        return getattr(sys.modules[self._module], self._name)(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<deferred {self._module}.{self._name}>"


class _LazyPackage(types.ModuleType):
    def __init__(self, name: str, directory: str):
        super().__init__(name)
        self.__path__ = [directory]
        self._init_file = os.path.join(directory, "__init__.py")
        self.__file__ = self._init_file
        self.__package__ = name
        self.__spec__ = importlib.util.spec_from_file_location(
            name, self.__file__, submodule_search_locations=[directory]
        )
        self._nodeagent_loaded = False

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr not in ("__version__", "__project__", "__all__"):
            raise AttributeError(attr)  # import machinery probing: not a reason to load
        directory = self.__path__[0]
        if os.path.exists(os.path.join(directory, attr + ".py")) or os.path.isdir(
            os.path.join(directory, attr)
        ):
            return importlib.import_module(f"{self.__name__}.{attr}")
        with _lock:
            if not self._nodeagent_loaded:
                self._nodeagent_loaded = True
                with open(self._init_file, encoding="utf-8") as handle:
                    code = compile(handle.read(), self._init_file, "exec")
                exec(code, self.__dict__)  # the package's real __init__, run once, on demand
        try:
            return self.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}") from None
