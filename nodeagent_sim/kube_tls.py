"""A throwaway CA and a server certificate for 127.0.0.1/localhost, made with the `openssl` CLI.

Clients verify the server through `certificate-authority` in the kubeconfig, as they would a real
cluster (no insecure-skip). EC P-256 keys keep generation fast (a few ms per key).
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from dataclasses import dataclass

_CA_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = nodeagent-sim-ca
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_SERVER_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = kube-apiserver
"""

_SERVER_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class ServerCert:
    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def _run(args: list, cwd: str) -> None:
    proc = subprocess.run(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError("openssl failed (%s): %s" % (" ".join(args[:3]), proc.stderr.decode(errors="replace")))


def make_server_cert(directory: str, days: int = 7) -> ServerCert:
    """Write ca.crt, server.crt and server.key into directory."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the `openssl` command is needed to make the simulator's certificates "
                           "(apt-get install -y openssl)")
    os.makedirs(directory, exist_ok=True)
    for name, text in (("ca.cnf", _CA_CONFIG), ("server.cnf", _SERVER_CONFIG), ("server.ext", _SERVER_EXT)):
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run([openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", str(days),
          "-config", "ca.cnf"], directory)
    _run([openssl, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
          "-config", "server.cnf"], directory)
    _run([openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
          "-CAcreateserial", "-out", "server.crt", "-days", str(days), "-sha256", "-extfile", "server.ext"],
         directory)
    os.chmod(os.path.join(directory, "ca.key"), 0o600)
    os.chmod(os.path.join(directory, "server.key"), 0o600)
    return ServerCert(os.path.join(directory, "ca.crt"), os.path.join(directory, "server.crt"),
                      os.path.join(directory, "server.key"))
