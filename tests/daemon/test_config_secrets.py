"""Secrets outside the config lines: WEBHOOK_URL_FILE / WEBHOOK_HEADERS_FILE, and the
systemd credentials webhook-url, webhook-headers and kubeconfig picked up by name. Fast: files in
tmp_path, no sockets; the daemon end to end is in test_webhook.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from nodeagent import config

URL = "https://hooks.example.com/services/T0SECRET/B0SECRET/xoxb-5ecret"
HEADERS = "Authorization: Bearer hdr-5ecret-value; X-Team: spot"


def secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def load(tmp_path: Path, conf: str = "", **env: str) -> config.Settings:
    etc = tmp_path / "etc"
    (etc / "conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "conf.d" / "50-test.conf").write_text(conf)
    return config.load({"NODEAGENT_CONFIG_DIR": str(etc), **env})


def test_url_and_headers_from_owner_only_files(tmp_path):
    url = secret(tmp_path / "s" / "url", URL + "\n")
    headers = secret(tmp_path / "s" / "headers", HEADERS + "\n", 0o400)
    settings = load(tmp_path, f"WEBHOOK_URL_FILE={url}\nWEBHOOK_HEADERS_FILE={headers}\n")
    assert settings.webhook_url == URL and settings.webhook_headers == HEADERS
    assert settings.sources["WEBHOOK_URL"] == f"file {url}"
    rows = {key: shown for key, shown, _ in config.describe(settings)}
    assert rows["WEBHOOK_URL"] == rows["WEBHOOK_HEADERS"] == "<set, hidden>"


def test_credentials_are_picked_up_by_name(tmp_path):
    credentials = tmp_path / "credentials"
    secret(credentials / "webhook-url", URL, 0o400)
    secret(credentials / "webhook-headers", HEADERS, 0o400)
    secret(credentials / "kubeconfig", "apiVersion: v1\n", 0o400)
    settings = load(tmp_path, CREDENTIALS_DIRECTORY=str(credentials))
    assert settings.webhook_url == URL and settings.webhook_headers == HEADERS
    assert settings.kubeconfig == str(credentials / "kubeconfig")
    assert settings.sources["KUBECONFIG"] == "credential kubeconfig"
    assert settings.sources["WEBHOOK_URL"].startswith("credential webhook-url")


def test_an_explicit_kubeconfig_wins_over_the_credential(tmp_path):
    credentials = tmp_path / "credentials"
    secret(credentials / "kubeconfig", "apiVersion: v1\n", 0o400)
    settings = load(tmp_path, "KUBECONFIG=/etc/kubernetes/other\n", CREDENTIALS_DIRECTORY=str(credentials))
    assert settings.kubeconfig == "/etc/kubernetes/other"


def test_no_credentials_no_change(tmp_path):
    settings = load(tmp_path, CREDENTIALS_DIRECTORY=str(tmp_path / "none"))
    assert settings.webhook_url == "" and settings.kubeconfig == "/var/lib/kubelet/kubeconfig"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660])
def test_a_file_open_to_group_or_others_is_refused_without_showing_it(tmp_path, mode):
    url = secret(tmp_path / "url", URL, mode)
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"WEBHOOK_URL_FILE={url}\n")
    message = str(caught.value)
    assert caught.value.key == "WEBHOOK_URL_FILE"
    assert f"{mode:04o}" in message and "chmod 0600" in message and str(url) in message
    assert "5ecret" not in message and "hooks.example.com" not in message


def test_a_bad_value_in_the_file_is_named_but_not_shown(tmp_path):
    url = secret(tmp_path / "url", "hooks.example.com/services/T0SECRET/xoxb-5ecret")
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"WEBHOOK_URL_FILE={url}\n")
    assert caught.value.key == "WEBHOOK_URL" and "not an http(s) URL" in str(caught.value)
    assert "5ecret" not in str(caught.value) and "hooks.example.com" not in str(caught.value)
    headers = secret(tmp_path / "headers", "Authorization Bearer 5ecret")
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"WEBHOOK_HEADERS_FILE={headers}\n")
    assert caught.value.key == "WEBHOOK_HEADERS" and "5ecret" not in str(caught.value)


def test_set_twice_is_an_error(tmp_path):
    url = secret(tmp_path / "url", URL)
    with pytest.raises(config.ConfigError) as caught:
        load(tmp_path, f"WEBHOOK_URL=https://other.example.com/x\nWEBHOOK_URL_FILE={url}\n")
    assert caught.value.key == "WEBHOOK_URL" and "keep one" in str(caught.value)
    assert "other.example.com" not in str(caught.value)


def test_missing_directory_fifo_and_huge_files_are_clear_errors(tmp_path):
    for path, expected in ((tmp_path / "missing", "No such file"), (tmp_path, "not a regular file")):
        with pytest.raises(config.ConfigError, match=expected):
            load(tmp_path, f"WEBHOOK_URL_FILE={path}\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(config.ConfigError, match="not a regular file"):  # O_NONBLOCK: no hang
        load(tmp_path, f"WEBHOOK_URL_FILE={fifo}\n")
    huge = secret(tmp_path / "huge", "x" * (70 * 1024))
    with pytest.raises(config.ConfigError, match="larger than 64 KiB"):
        load(tmp_path, f"WEBHOOK_URL_FILE={huge}\n")


def test_a_file_owned_by_another_user_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    url = secret(tmp_path / "url", URL)
    os.chown(url, 65533, -1)
    with pytest.raises(config.ConfigError, match="belongs to uid 65533"):
        load(tmp_path, f"WEBHOOK_URL_FILE={url}\n")


def test_an_unreadable_file_says_how_to_pass_it(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    url = secret(tmp_path / "url", URL, 0o000)
    with pytest.raises(config.ConfigError, match="LoadCredential="):
        load(tmp_path, f"WEBHOOK_URL_FILE={url}\n")
