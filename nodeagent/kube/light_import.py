"""Import only the parts of the kubernetes package that nodeagent uses.

`import kubernetes.client` runs package __init__s that import every API class and all ~700
model classes: about 30 MB of RSS and most of the daemon's footprint (docs/performance.md, "Idle
RSS"). nodeagent sends raw JSON through ApiClient and needs only Configuration, ApiClient,
rest, exceptions and the config loader with its exec provider, none of which use the models.

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
