"""The one error every config step raises, and the exit status it maps to."""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h EX_CONFIG: the unit's RestartPreventExitStatus= keeps it from looping


class ConfigError(Exception):
    """A bad key, value or file. `key` names it; the message says what is wrong."""

    def __init__(self, key: str, message: str):
        super().__init__(f"config: {key}: {message}")
        self.key = key
