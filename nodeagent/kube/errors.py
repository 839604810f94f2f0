"""The Kubernetes side's errors, and which of them count as failures in the metrics."""

from __future__ import annotations

from nodeagent.errors import ExpectedFailure
from nodeagent.kube.throttle import is_throttling


class KubeError(ExpectedFailure):
    pass


class KubeconfigMissing(KubeError):
    pass


class KubeconfigInvalid(KubeError):
    pass


class CredentialError(KubeError):
    pass


class ApiUnavailable(KubeError):
    """Connection refused, reset or timed out."""


class ApiError(KubeError):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        method: str,
        path: str,
        retry_after_s: float | None = None,
        budget: str | None = None,
    ):
        super().__init__(f"{method} {path}: HTTP {status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s  # what a 429/503 asked for (throttle.retry_after_s)
        self.budget = budget  # the PodDisruptionBudget a refusal names (throttle.disruption_budget)

    @property
    def throttling(self) -> bool:
        """A 429/503 about the server's load, not a disruption-budget refusal."""
        return is_throttling(self.status, self.message)


class RequestAbandoned(KubeError):
    """The caller's stop came while its request waited for its turn at the gate: never sent."""


def counts_as_failure(error: KubeError) -> bool:
    """Whether an error is a failure, not part of normal work: 404 and 409 (already gone or
    already changed: idempotent success), a PDB's 429 (the drain retries it by design) and the
    NodeRestriction 403 on the taint attempt (node credentials always get it) are not."""
    if isinstance(error, ApiError):
        if error.status in (404, 409):
            return False
        if error.status == 429 and not error.throttling:
            return False
        if error.status == 403 and "not allowed to modify taints" in error.message:
            return False
    return True
