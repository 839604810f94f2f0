"""Configuration: the key table, its parsers, the layered loading and check-config's view.

    defaults < nodeagent.conf < conf.d/*.conf < NODEAGENT_<KEY> < CLI flags

The package's modules, each with one job (none reads a name from this __init__; callers do):

    keys.py          the key table: one KeySpec per key, with its flags
    parsers.py       value parsers, pure
    settings.py      Settings: one typed field per key
    layers.py        the merge of all layers, pure
    trusted_file.py  the one reader for trusted files (config and secrets)
    loading.py       the config files from disk, then the merge, then the secret files
    secret_files.py  *_FILE keys and systemd credentials
    describe.py      each key's value as check-config and status show it
"""

from __future__ import annotations

from nodeagent.config.describe import describe
from nodeagent.config.errors import EX_CONFIG, ConfigError
from nodeagent.config.keys import KEYS, KEYS_BY_NAME, KeySpec
from nodeagent.config.layers import (
    ENV_PREFIX,
    ConfigSource,
    load_settings,
    parse_config_text,
    parse_set_flags,
)
from nodeagent.config.loading import (
    DEFAULT_CONFIG_DIR,
    config_file_rules,
    load,
    load_with_set_flags,
    read_config_files,
)
from nodeagent.config.parsers import parse_bool, parse_duration
from nodeagent.config.settings import Settings, restart_only_changes
from nodeagent.config.trusted_file import TrustRules, trust_problem

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "ENV_PREFIX",
    "EX_CONFIG",
    "KEYS",
    "KEYS_BY_NAME",
    "ConfigError",
    "ConfigSource",
    "KeySpec",
    "Settings",
    "TrustRules",
    "config_file_rules",
    "describe",
    "load",
    "load_settings",
    "load_with_set_flags",
    "parse_bool",
    "parse_config_text",
    "parse_duration",
    "parse_set_flags",
    "read_config_files",
    "restart_only_changes",
    "trust_problem",
]
