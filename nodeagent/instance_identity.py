"""Who this instance is, as IMDS describes it: the facts the agent checks the Node against and
puts in its reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nodeagent import notices


@dataclass(frozen=True)
class InstanceIdentity:
    instance_id: str | None
    availability_zone: str | None
    region: str | None
    instance_type: str | None
    life_cycle: str | None
    local_hostname: str | None


def read_identity(get: Callable[[str], str | None]) -> InstanceIdentity:
    """The identity from `get` (a metadata path -> its text, None when IMDS has no such path).
    A missing or blank value gives None."""

    def field(path: str) -> str | None:
        value = get(path)
        value = value.strip() if value is not None else None
        return value or None

    return InstanceIdentity(
        instance_id=field(notices.INSTANCE_ID_PATH),
        availability_zone=field(notices.AVAILABILITY_ZONE_PATH),
        region=field(notices.REGION_PATH),
        instance_type=field(notices.INSTANCE_TYPE_PATH),
        life_cycle=field(notices.INSTANCE_LIFE_CYCLE_PATH),
        local_hostname=field(notices.LOCAL_HOSTNAME_PATH),
    )
