"""instance_identity.read_identity: the instance's facts from IMDS paths, blanks as None."""

from __future__ import annotations

from nodeagent import notices
from nodeagent.instance_identity import InstanceIdentity, read_identity


def test_each_fact_comes_from_its_path_and_is_stripped():
    answers = {
        notices.INSTANCE_ID_PATH: "i-0123456789abcdef0\n",
        notices.AVAILABILITY_ZONE_PATH: " us-east-1a",
        notices.REGION_PATH: "us-east-1",
        notices.INSTANCE_TYPE_PATH: "m5.large",
        notices.INSTANCE_LIFE_CYCLE_PATH: "spot",
        notices.LOCAL_HOSTNAME_PATH: "ip-10-0-1-2.ec2.internal",
    }
    assert read_identity(answers.get) == InstanceIdentity(
        instance_id="i-0123456789abcdef0",
        availability_zone="us-east-1a",
        region="us-east-1",
        instance_type="m5.large",
        life_cycle="spot",
        local_hostname="ip-10-0-1-2.ec2.internal",
    )


def test_a_missing_or_blank_path_gives_none():
    answers = {notices.INSTANCE_ID_PATH: "i-0123456789abcdef0", notices.REGION_PATH: "  \n"}
    identity = read_identity(answers.get)
    assert identity.instance_id == "i-0123456789abcdef0"
    assert identity.region is None and identity.availability_zone is None and identity.life_cycle is None
