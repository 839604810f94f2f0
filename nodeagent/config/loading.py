"""Loading: the config files from disk, then every layer merged, then the secret files.

    defaults < nodeagent.conf < conf.d/*.conf < NODEAGENT_<KEY> < flags (--set KEY=value)

The files are read through nodeagent.config.trusted_file; the merge is nodeagent.config.layers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from nodeagent.config import secret_files
from nodeagent.config.layers import CONFIG_DIR_VARIABLE, ConfigSource, load_settings, parse_set_flags
from nodeagent.config.settings import Settings
from nodeagent.config.trusted_file import (
    TrustRules,
    check_trusted_directory,
    list_trusted_directory,
    read_trusted_file,
)

DEFAULT_CONFIG_DIR = "/etc/nodeagent"
MAX_CONFIG_BYTES = 1 << 20  # a config file is a few KB; a FIFO or /dev/zero must not hang or fill memory
FILE_KEY = "CONFIG_FILE"  # what a ConfigError about a file names


def config_file_rules(euid: int) -> TrustRules:
    """Root's files, or those of the user running the command; nobody else may write them."""
    return TrustRules(
        what="config",
        owners=frozenset({0, euid}),
        owner_names="root",
        owner_only=False,
        max_bytes=MAX_CONFIG_BYTES,
        fix="make it root-owned and not group/world-writable: chown root:root, chmod go-w",
        content="a KEY=value file",
        permission_hint=" (run as root, or with sudo); its settings would be missing",
        missing_ok=True,
    )


def read_config_files(config_dir: str) -> list[ConfigSource]:
    """nodeagent.conf then conf.d/*.conf in lexical order. Missing files are fine; files and
    directories that anyone but root (or the user running the command) could change are refused,
    and one that cannot be read is an error, never silently skipped."""
    rules = config_file_rules(os.geteuid())
    base = Path(config_dir)
    check_trusted_directory(str(base), rules, FILE_KEY)
    candidates = [base / "nodeagent.conf"]
    drop_in_dir = base / "conf.d"
    names = list_trusted_directory(str(drop_in_dir), rules, FILE_KEY) or []
    candidates += [drop_in_dir / name for name in names if name.endswith(".conf")]
    sources = []
    for path in candidates:
        text = read_trusted_file(str(path), rules, FILE_KEY)
        if text is not None:
            sources.append(ConfigSource(str(path), text))
    return sources


def load(environ: Mapping[str, str], flags: Mapping[str, str] | None = None) -> Settings:
    """Every layer, from the config directory NODEAGENT_CONFIG_DIR names (default /etc/nodeagent)."""
    config_dir = environ.get(CONFIG_DIR_VARIABLE, DEFAULT_CONFIG_DIR)
    return secret_files.resolve(load_settings(read_config_files(config_dir), environ, flags), environ)


def load_with_set_flags(environ: Mapping[str, str], pairs: Sequence[str]) -> Settings:
    """What each command runs with: the config files, the environment, then its --set pairs."""
    return load(environ, parse_set_flags(pairs))
