"""SharedTls: one context for a pool manager's connections, built again when a file it was built
from changes (fake stamps and builds; the real handshakes are in tests/daemon/test_kube_tls.py)."""
import ssl
from types import SimpleNamespace

import pytest

from nodeagent.kube.tls import SharedTls, TlsFiles


def pool_manager(**kw):
    base = {"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": "/etc/kubernetes/pki/ca.crt",
            "cert_file": "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "key_file": "/var/lib/kubelet/pki/kubelet-client-current.pem", "maxsize": 40}
    base.update(kw)
    return SimpleNamespace(connection_pool_kw=base)


def make(manager, stamps):
    built = []

    def build(files: TlsFiles):
        if stamps.get("broken"):
            raise ssl.SSLError("PEM lib")
        built.append(files)
        return f"context-{len(built)}"

    return SharedTls(manager, build=build, stamp=lambda path: stamps.get(path)), built


def test_the_file_names_leave_the_pool_arguments_and_one_context_takes_their_place():
    manager = pool_manager()
    tls, built = make(manager, {})
    current = "/var/lib/kubelet/pki/kubelet-client-current.pem"
    assert tls.files == TlsFiles("/etc/kubernetes/pki/ca.crt", current, current, True)
    assert not {"ca_certs", "cert_file", "key_file"} & set(manager.connection_pool_kw)
    for _ in range(5):
        tls.refresh()
    assert manager.connection_pool_kw["ssl_context"] == "context-1" and len(built) == 1
    assert manager.connection_pool_kw["maxsize"] == 40


def test_a_changed_file_builds_a_new_context_once():
    manager = pool_manager()
    stamps = {"/var/lib/kubelet/pki/kubelet-client-current.pem": (1, 10)}
    tls, built = make(manager, stamps)
    tls.refresh()
    stamps["/var/lib/kubelet/pki/kubelet-client-current.pem"] = (1, 11)  # the link now names a new file
    tls.refresh()
    tls.refresh()
    assert manager.connection_pool_kw["ssl_context"] == "context-2" and len(built) == 2


def test_a_file_that_cannot_be_read_raises_and_keeps_the_last_context():
    manager = pool_manager()
    stamps = {"/etc/kubernetes/pki/ca.crt": (1, 1)}
    tls, _ = make(manager, stamps)
    tls.refresh()
    stamps.update({"/etc/kubernetes/pki/ca.crt": ("missing",), "broken": True})
    with pytest.raises(ssl.SSLError):
        tls.refresh()
    assert manager.connection_pool_kw["ssl_context"] == "context-1"
    stamps.update({"/etc/kubernetes/pki/ca.crt": (1, 2), "broken": False})
    tls.refresh()  # tried again on the next request
    assert manager.connection_pool_kw["ssl_context"] == "context-2"


def test_verification_follows_the_pool_arguments():
    tls, _ = make(pool_manager(cert_reqs=ssl.CERT_NONE, cert_file=None, key_file=None), {})
    assert tls.files.verify is False and tls.files.cert_file is None
