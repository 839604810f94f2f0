"""The agent on its default IMDS_URL, with the simulator on 169.254.169.254:80 inside a private
network namespace. The host namespace's 169.254.169.254 is never touched."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


def unshare_allowed() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "--net", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not unshare_allowed(), reason="unshare --net is not allowed here (needs CAP_SYS_ADMIN or user namespaces)")
def test_default_imds_url_in_a_private_namespace():
    script = (
        "ip link set lo up && ip addr add 169.254.169.254/32 dev lo && "
        f"exec {sys.executable} -m tests.netns_driver"
    )
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=str(REPO),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready: watching IMDS at http://169.254.169.254" in result.stdout
    assert "notice spot-itn" in result.stdout
