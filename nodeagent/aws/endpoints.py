"""Auto Scaling endpoints by partition (the ones the SDKs' endpoint rules give). Pure."""

from __future__ import annotations

import re

# Region prefix -> DNS suffix of the partition. Checked in order: the longest prefix first.
PARTITIONS = (
    ("cn-", "amazonaws.com.cn"),  # aws-cn
    ("us-gov-", "amazonaws.com"),  # aws-us-gov
    ("us-isob-", "sc2s.sgov.gov"),  # aws-iso-b
    ("us-iso-", "c2s.ic.gov"),  # aws-iso
    ("", "amazonaws.com"),  # aws
)
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


class EndpointError(ValueError):
    pass


def dns_suffix(region: str) -> str:
    for prefix, suffix in PARTITIONS:
        if region.startswith(prefix):
            return suffix
    raise EndpointError(region)  # unreachable: the last prefix matches everything


def autoscaling_endpoint(region: str, fips: bool = False) -> str:
    """https://autoscaling[-fips].<region>.<partition suffix>/"""
    if not _REGION_RE.fullmatch(region or ""):
        raise EndpointError(f"{region!r} is not an AWS region name")
    if fips and region.startswith("cn-"):
        raise EndpointError(f"the China regions have no FIPS endpoint (ASG_FIPS=true, region {region})")
    service = "autoscaling-fips" if fips else "autoscaling"
    return f"https://{service}.{region}.{dns_suffix(region)}/"
