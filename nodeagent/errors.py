"""Exception bases shared across parts, so no part has to probe another's exceptions."""

from __future__ import annotations


class ExpectedFailure(Exception):
    """A failure that is part of normal operation (the API is down, a credential is refused):
    logged as one line, without a traceback."""
