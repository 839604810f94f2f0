"""light_import: the Kubernetes client without its model classes and without the OIDC modules,
and both still there for code that asks. Each case runs in a fresh interpreter, since what is
being checked is what an import leaves in sys.modules."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PREAMBLE = """
import json, sys
from nodeagent.kube import kubeconfig
kubeconfig.import_client_modules()
def loaded(prefix):
    return sorted(m for m in sys.modules if m == prefix or m.startswith(prefix + "."))
"""


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PREAMBLE + code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_client_loads_without_models_or_oidc_modules():
    seen = run('print(json.dumps({"models": loaded("kubernetes.client.models"), "api": loaded("kubernetes.client.api"),'
               ' "oidc": loaded("requests_oauthlib") + loaded("oauthlib.oauth2"),'
               ' "kube_config": "kubernetes.config.kube_config" in sys.modules}))')
    assert seen["kube_config"]
    assert seen["models"] == ["kubernetes.client.models"]  # the empty package only
    assert seen["api"] == []
    assert seen["oidc"] == []


def test_oidc_refresh_still_gets_the_real_oauth2_session():
    seen = run("""
from kubernetes.config import kube_config
session = kube_config.OAuth2Session(client_id="nodeagent")
import requests_oauthlib
error = kube_config.oauthlib.oauth2.rfc6749.errors.InvalidClientIdError
print(json.dumps({"real": type(session) is requests_oauthlib.OAuth2Session,
                  "error": error.__module__, "client_id": session.client_id}))
""")
    assert seen == {"real": True, "error": "oauthlib.oauth2.rfc6749.errors", "client_id": "nodeagent"}


def test_a_later_import_of_the_oidc_modules_is_the_real_one():
    seen = run("""
import requests_oauthlib, oauthlib.oauth2
print(json.dumps({"session": requests_oauthlib.OAuth2Session.__module__,
                  "oauth2": hasattr(oauthlib.oauth2, "WebApplicationClient")}))
""")
    assert seen == {"session": "requests_oauthlib.oauth2_session", "oauth2": True}


def test_other_code_asking_for_the_api_classes_gets_them():
    seen = run('from kubernetes import client\nprint(json.dumps({"api": client.CoreV1Api.__name__,'
               ' "pod": client.V1Pod.__name__}))')
    assert seen == {"api": "CoreV1Api", "pod": "V1Pod"}
