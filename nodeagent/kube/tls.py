"""One TLS context for every connection of the API client, made again when its files change.

Given file names, urllib3 builds a new SSLContext for each connection and parses the CA file and
the client certificate into it: 0.4 ms of CPU per connection for one CA, 26 ms for a full CA
bundle, and, while the API server is unreachable and every attempt is a new connection, a new
set of OpenSSL objects per attempt that the daemon's memory does not fully give back.

Here the client's pools get one context, built from the same files, and the files are looked at
(stat) before each request: the kubelet renews its client certificate by pointing a link at a
new file, and the next request after that builds a new context, which gives the pools a new key,
so new connections present the new certificate and the old pool ages out of the pool manager.
"""

from __future__ import annotations

import os
import ssl
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from urllib3.util.ssl_ import create_urllib3_context

# The pool arguments that name files for urllib3 to load on each connection.
FILE_KEYS = ("ca_certs", "cert_file", "key_file")

FileStamp = Optional[tuple]


@dataclass(frozen=True)
class TlsFiles:
    """What the client's pools were told to load: file names as the kubernetes client passes them."""

    ca_certs: str | None
    cert_file: str | None
    key_file: str | None
    verify: bool

    def paths(self) -> tuple[str | None, ...]:
        return (self.ca_certs, self.cert_file, self.key_file)


def build_context(files: TlsFiles) -> ssl.SSLContext:
    """The context urllib3 would build for one connection, built once."""
    # urllib3's own defaults (TLS 1.2 at least, hostname checks when verifying), so a shared
    # context changes nothing about what a connection accepts.
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if files.verify else ssl.CERT_NONE)
    if files.ca_certs:
        context.load_verify_locations(cafile=files.ca_certs)
    if files.cert_file:
        context.load_cert_chain(files.cert_file, files.key_file)
    return context


def _stamp(path: str | None) -> FileStamp:
    if not path:
        return None
    try:
        status = os.stat(path)  # follows links: a renewed certificate is a new target
    except OSError:
        return ("missing",)
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


class SharedTls:
    """Keeps one pool manager's `ssl_context` built from its TLS files (see the module's docstring)."""

    def __init__(
        self,
        pool_manager: Any,
        build: Callable[[TlsFiles], ssl.SSLContext] = build_context,
        stamp: Callable[[str | None], FileStamp] = _stamp,
    ):
        kw = pool_manager.connection_pool_kw
        self.files = TlsFiles(
            kw.get("ca_certs"), kw.get("cert_file"), kw.get("key_file"), kw.get("cert_reqs") != ssl.CERT_NONE
        )
        for key in FILE_KEYS:
            kw.pop(key, None)  # else urllib3 loads them into the shared context on every connection
        self._kw = kw
        self._build = build
        self._stamp = stamp
        self._lock = threading.Lock()
        self._stamps: tuple[FileStamp, ...] | None = None
        self.builds = 0

    def refresh(self) -> None:
        """Before a request: (re)build the context if a file it comes from has changed. A file
        that cannot be read raises (OSError or ssl.SSLError) and nothing changes."""
        stamps = tuple(self._stamp(path) for path in self.files.paths())
        if stamps == self._stamps:
            return
        with self._lock:
            if stamps == self._stamps:
                return
            context = self._build(self.files)
            self._kw["ssl_context"] = context
            self._stamps = stamps
            self.builds += 1
