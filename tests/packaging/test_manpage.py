"""nodeagent(8): generated from the config table and the CLI's parser, it must render cleanly."""

import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    path = tmp_path_factory.mktemp("man") / "nodeagent.8"
    result = subprocess.run(
        [sys.executable, "-m", "nodeagent.reference", "man", "--date", "2026-01-01"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    path.write_text(result.stdout, encoding="utf-8")
    return path


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (scripts/test installs it as root)")
def test_groff_renders_it_with_no_warning(page):
    result = subprocess.run(["groff", "-man", "-ww", "-z", str(page)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db not installed (scripts/test installs it as root)")
def test_man_renders_it_with_no_warning(page):
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0"}
    result = subprocess.run(["man", "--warnings=all", "-l", str(page)], capture_output=True, text=True,
                            timeout=60, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    text = re.sub(".\b", "", result.stdout)  # no overstrike bold/underline
    assert "NODEAGENT(8)" in text and "DRAIN_MARGIN (default 15s)" in text
    assert "nodeagent drill" in text and "--dry-run" in text
