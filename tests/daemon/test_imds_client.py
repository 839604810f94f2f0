"""The real ImdsClient against the real IMDS simulator on loopback sockets."""
from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from nodeagent.cycles import MIN_INTERVAL_S
from nodeagent.imds import (
    ImdsBodyNotText,
    ImdsBodyTooLarge,
    ImdsClient,
    ImdsError,
    ImdsOptions,
    ImdsUnavailable,
    ImdsV1Only,
)
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.retry import Failure
from nodeagent_sim.imds import ImdsSim
from tests.helpers import garbage_count, wait_for
from tests.servers import RawImdsServer

MD = "/latest/meta-data/"
TOKEN = "/latest/api/token"
# Generous ceilings for "fails fast instead of hanging"; the expected times are 1-4 s.
HANG_BOUND_S = 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sim():
    with ImdsSim() as running:
        yield running


@pytest.fixture
def make_client(sim):
    clients = []

    def make(**overrides) -> ImdsClient:
        clock = overrides.pop("clock", None)
        options = ImdsOptions(base_url=overrides.pop("base_url", sim.url), **overrides)
        client = ImdsClient(options, clock=clock) if clock else ImdsClient(options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def entries(sim, since=0):
    return [(method, path, status) for _, method, path, status in sim.request_log[since:]]


def live_tokens(sim):
    return list(sim._tokens)  # test-only peek, to prove the token never leaks


# --- the happy path -----------------------------------------------------------------------------


def test_get_uses_an_imdsv2_token(sim, make_client):
    client = make_client()
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert entries(sim) == [("PUT", TOKEN, 200), ("GET", MD + "instance-id", 200)]
    stats = client.stats
    assert (stats.requests, stats.errors, stats.token_refreshes, stats.last_status,
            stats.mode) == (2, 0, 1, 200, "v2")


def test_404_is_none(sim, make_client):
    client = make_client()
    assert client.get("spot/instance-action") is None
    assert client.get("/spot/instance-action") is None  # leading slash tolerated
    sim.schedule_spot(120)
    assert '"terminate"' in client.get("spot/instance-action")
    assert client.stats.errors == 0


def test_scheduled_empty_list_is_a_body(make_client):
    assert make_client().get("events/maintenance/scheduled") == "[]"


def test_identity(sim, make_client):
    client = make_client()
    assert client.identity() == InstanceIdentity(
        instance_id="i-0123456789abcdef0",
        availability_zone="us-east-1a",
        region="us-east-1",
        instance_type="m5.large",
        life_cycle="spot",
        local_hostname="ip-10-0-1-2.ec2.internal",
    )
    sim.inject(1, status=404, path_prefix="placement/region")
    sim.set_life_cycle("on-demand")
    identity = client.identity()
    assert identity.region is None
    assert identity.life_cycle == "on-demand"
    assert identity.instance_id == "i-0123456789abcdef0"


def test_keep_alive_one_connection_for_many_gets(sim, make_client):
    client = make_client()
    for _ in range(25):
        assert client.get("instance-id")
        assert client.get("spot/instance-action") is None  # 404s keep the connection too
    assert sim.connections == 1
    assert client.stats.token_refreshes == 1


def test_client_ignores_proxy_environment(sim, make_client, monkeypatch):
    # A proxy would see the token and add X-Forwarded-For; IMDS must be reached directly.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert make_client().get("instance-id") == "i-0123456789abcdef0"


# --- token lifecycle ----------------------------------------------------------------------------


def test_expired_token_gives_exactly_one_401_then_a_new_token(sim, make_client):
    client = make_client()
    assert client.get("instance-id")
    mark = len(sim.request_log)
    sim.expire_tokens()
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert entries(sim, mark) == [
        ("GET", MD + "instance-id", 401),
        ("PUT", TOKEN, 200),
        ("GET", MD + "instance-id", 200),
    ]
    assert client.stats.token_refreshes == 2
    assert client.stats.errors == 0


def test_a_second_401_is_an_error_not_a_loop(sim, make_client):
    client = make_client()
    assert client.get("instance-id")
    sim.inject(2, status=401, path_prefix="instance-id")
    with pytest.raises(ImdsError) as info:
        client.get("instance-id")
    assert not isinstance(info.value, ImdsUnavailable)
    assert "401" in str(info.value)
    assert [e for e in entries(sim) if e[2] == 401] == [("GET", MD + "instance-id", 401)] * 2
    assert client.get("instance-id")  # recovers once IMDS behaves


def test_token_refreshed_when_15s_or_less_remain(sim, make_client):
    clock = FakeClock()
    client = make_client(token_ttl_s=60, clock=clock)

    def puts():
        return sum(1 for e in entries(sim) if e[0] == "PUT")

    # Each GET answer re-arms the expiry to "now + ~60 s" (the sim's remaining-TTL header).
    assert client.get("instance-id") and puts() == 1
    clock.now += 40  # ~20 s left
    assert client.get("instance-id") and puts() == 1
    clock.now += 45.5  # ~14.5 s left since the last answer -> refresh first
    assert client.get("instance-id") and puts() == 2
    assert client.stats.token_refreshes == 2
    assert 401 not in [e[2] for e in entries(sim)]


def test_remaining_ttl_is_reread_from_get_responses(sim, make_client):
    # The client's own arithmetic says the token is nearly expired; IMDS's header says it has
    # an hour left. The header wins, so no new token is fetched.
    clock = FakeClock()
    client = make_client(token_ttl_s=3600, clock=clock)
    assert client.get("instance-id")
    clock.now += 3000
    assert client.get("instance-id")  # header: ~3600 s remain (real time barely moved)
    clock.now += 590  # 3590 s after the PUT: would be <= 15 s without the header
    assert client.get("instance-id")
    assert [e for e in entries(sim) if e[0] == "PUT"] == [("PUT", TOKEN, 200)]


def test_token_ttl_request_is_what_options_say(sim, make_client):
    client = make_client(token_ttl_s=1)
    assert client.get("instance-id")
    with pytest.raises(ValueError):
        ImdsOptions(token_ttl_s=0)
    with pytest.raises(ValueError):
        ImdsOptions(token_ttl_s=21601)


def test_token_put_rejected_as_bad_request_is_a_plain_error(sim, make_client):
    sim.inject(1, status=400, path_prefix=TOKEN)
    with pytest.raises(ImdsError) as info:
        make_client().get("instance-id")
    assert type(info.value) is ImdsError
    assert "400" in str(info.value)


def test_token_never_appears_in_errors_or_repr(sim, make_client):
    client = make_client()
    assert client.get("instance-id")
    [token] = live_tokens(sim)
    texts = [repr(client), repr(client.stats)]
    sim.inject(2, status=401, path_prefix="instance-id")
    sim.inject(3, status=503, path_prefix="instance-type")
    sim.inject(1, body=b"\xff" * 10, path_prefix="local-hostname")
    sim.inject(1, body=b"x" * 70000, path_prefix="placement/region")
    for path in ("instance-id", "instance-type", "local-hostname", "placement/region"):
        with pytest.raises(ImdsError) as info:
            client.get(path)
        texts += [str(info.value), repr(info.value), repr(info.value.__cause__)]
    assert all(token not in text for text in texts)


# --- IMDSv1 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [405, 403, 404])
def test_v1_only_endpoint_with_v1_disabled(sim, make_client, status):
    sim.set_v1_only(True, status=status)
    client = make_client()
    with pytest.raises(ImdsV1Only) as info:
        client.get("instance-id")
    message = str(info.value)
    assert f"HTTP {status}" in message
    assert "IMDSv1 fallback is disabled" in message and "IMDS_ALLOW_V1=true" in message
    assert ("GET", MD + "instance-id", 200) not in entries(sim)  # never fell back
    assert client.stats.errors == 1


def test_v1_only_endpoint_with_v1_allowed(sim, make_client):
    sim.set_v1_only(True)
    client = make_client(allow_v1=True)
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert client.get("instance-type") == "m5.large"
    # The refused PUT is not repeated on every poll.
    assert entries(sim) == [("PUT", TOKEN, 405), ("GET", MD + "instance-id", 200),
                            ("GET", MD + "instance-type", 200)]
    assert client.stats.mode == "v1"


def test_v1_mode_switches_back_to_v2_when_imds_starts_requiring_it(sim, make_client):
    sim.set_v1_only(True)
    client = make_client(allow_v1=True)
    assert client.get("instance-id")
    sim.set_v1_only(False)  # v2 required again: token-less GETs get 401
    mark = len(sim.request_log)
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert entries(sim, mark) == [("GET", MD + "instance-id", 401), ("PUT", TOKEN, 200),
                                  ("GET", MD + "instance-id", 200)]
    assert client.stats.mode == "v2"


def test_v2_preferred_even_when_v1_allowed(sim, make_client):
    client = make_client(allow_v1=True)
    assert client.get("instance-id")
    assert entries(sim)[0] == ("PUT", TOKEN, 200)
    assert client.stats.mode == "v2"


# --- retries and bounded failure ---------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried_then_succeed(sim, make_client, status):
    client = make_client()
    assert client.get("instance-id")
    sim.inject(2, status=status, path_prefix="instance-id")
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert client.stats.retries == 2
    assert client.stats.errors == 0


def test_five_consecutive_500s_raise_unavailable(sim, make_client):
    client = make_client()
    assert client.get("instance-id")
    sim.inject(5, status=500, path_prefix="instance-id")
    started = time.monotonic()
    with pytest.raises(ImdsUnavailable) as info:
        client.get("instance-id")
    assert time.monotonic() - started < HANG_BOUND_S
    assert "HTTP 500" in str(info.value) and "3 attempt" in str(info.value)
    assert client.stats.last_status == 500
    assert client.stats.errors == 1
    # The two faults left are absorbed by the next call's retries.
    assert client.get("instance-id") == "i-0123456789abcdef0"


def test_token_put_5xx_is_retried(sim, make_client):
    sim.inject(2, status=503, path_prefix=TOKEN, method="PUT")
    assert make_client().get("instance-id")


def test_slow_answer_beyond_read_timeout_fails_in_bounded_time(sim, make_client):
    client = make_client()  # default timeouts: 0.5 s connect, 1 s read, 3 attempts
    assert client.get("instance-id")
    sim.inject(10, delay_s=30, path_prefix="instance-id")
    started = time.monotonic()
    with pytest.raises(ImdsUnavailable) as info:
        client.get("instance-id")
    assert time.monotonic() - started < HANG_BOUND_S
    assert "did not answer within 1s" in str(info.value)
    assert client.stats.last_status is None


def test_one_slow_answer_is_retried(sim, make_client):
    client = make_client(read_timeout_s=0.3)
    assert client.get("instance-id")
    sim.inject(1, delay_s=5, path_prefix="instance-id")
    assert client.get("instance-id") == "i-0123456789abcdef0"
    assert client.stats.retries == 1


def test_hanging_token_put_fails_quickly_with_a_hop_limit_hint(sim, make_client):
    sim.hang_token_put(True)
    client = make_client()
    started = time.monotonic()
    with pytest.raises(ImdsUnavailable) as info:
        client.get("instance-id")
    assert time.monotonic() - started < HANG_BOUND_S
    message = str(info.value)
    assert "token request" in message and "hop limit" in message
    assert client.stats.requests == 1  # a read timeout on the PUT is not retried


def test_hanging_token_put_falls_back_to_v1_when_allowed():
    with ImdsSim(require_v2=False) as sim:
        sim.hang_token_put(True)
        with ImdsClient(ImdsOptions(base_url=sim.url, allow_v1=True)) as client:
            assert client.get("instance-id") == "i-0123456789abcdef0"
            assert client.stats.mode == "v1"


def test_connection_refused_is_unavailable(make_client):
    with ImdsSim() as gone:
        url = gone.url
    client = make_client(base_url=url)
    started = time.monotonic()
    with pytest.raises(ImdsUnavailable) as info:
        client.get("instance-id")
    assert time.monotonic() - started < HANG_BOUND_S
    assert "refused the connection" in str(info.value)
    assert client.stats.requests == 3


def test_other_statuses_are_errors_without_retry(sim, make_client):
    client = make_client()
    assert client.get("instance-id")
    sim.inject(1, status=403, path_prefix="instance-id")
    with pytest.raises(ImdsError) as info:
        client.get("instance-id")
    assert not isinstance(info.value, ImdsUnavailable)
    assert "HTTP 403" in str(info.value)
    assert client.stats.retries == 0


@pytest.mark.parametrize("trickled", ["GET", "PUT"])
def test_a_trickling_answer_is_cut_at_the_deadline(trickled):
    # A byte every 0.2 s never trips the 1 s read timeout: only the wall-clock deadline ends it.
    with RawImdsServer(trickle=(trickled,)) as server:
        with ImdsClient(ImdsOptions(base_url=server.url, deadline_s=2.0)) as client:
            started = time.monotonic()
            with pytest.raises(ImdsUnavailable) as info:
                client.get("instance-id")
            took = time.monotonic() - started
    assert 1.9 <= took < 3.0, took
    assert "2s deadline" in str(info.value)
    assert "RAWTOKEN" not in str(info.value)


def test_the_deadline_is_per_call_and_the_client_recovers(sim, make_client):
    client = make_client(read_timeout_s=0.4, retry_attempts=10, retry_max_wait_s=0.05, deadline_s=1.5)
    assert client.get("instance-id")
    sim.inject(10, delay_s=5, path_prefix="instance-id")
    started = time.monotonic()
    with pytest.raises(ImdsUnavailable) as info:
        client.get("instance-id")
    assert time.monotonic() - started < 2.2
    assert "1.5s deadline" in str(info.value)
    assert client.stats.requests < 2 + 10  # the deadline, not the attempt count, ended it
    sim.clear_faults()
    assert client.get("instance-id") == "i-0123456789abcdef0"  # a fresh call, a fresh budget


def test_keep_alive_reuse_survives_a_server_closing_idle_connections():
    with RawImdsServer(close_after_each=True) as server:
        with ImdsClient(ImdsOptions(base_url=server.url)) as client:
            for answered in range(1, 6):
                assert client.get("instance-id") == "i-0123456789abcdef0"
                wait_for(lambda: server.closed >= answered + 1)  # the token PUT's and this GET's connections are closed
            stats = client.stats
    # Each stale connection is noticed before use (or, if the close races the request, resent
    # once on a new one) and replaced: no retries, no errors.
    assert (stats.retries, stats.errors) == (0, 0)
    assert server.connections == 6  # the token PUT's, then one per GET
    assert server.requests == ["PUT /latest/api/token"] + ["GET /latest/meta-data/instance-id"] * 5


def test_keep_alive_reuse_on_a_server_that_keeps_connections():
    with RawImdsServer() as server:
        with ImdsClient(ImdsOptions(base_url=server.url)) as client:
            for _ in range(10):
                assert client.get("instance-id") == "i-0123456789abcdef0"
    assert server.connections == 1
    assert len(server.requests) == 11


# --- bodies ------------------------------------------------------------------------------------


def test_body_at_the_cap_is_fine_and_over_it_is_refused(sim, make_client):
    client = make_client(max_body_bytes=1000)
    sim.inject(1, body=b"a" * 1000, path_prefix="instance-id")
    assert client.get("instance-id") == "a" * 1000
    sim.inject(1, body=b"a" * 1001, path_prefix="instance-id")
    with pytest.raises(ImdsBodyTooLarge) as info:
        client.get("instance-id")
    assert "1000 bytes" in str(info.value)
    assert client.get("instance-id") == "i-0123456789abcdef0"  # the client is still usable


def test_huge_body_is_not_read_whole(sim, make_client):
    client = make_client()
    sim.inject(1, body=b"z" * 5_000_000, path_prefix="spot/")
    with pytest.raises(ImdsBodyTooLarge):
        client.get("spot/instance-action")


def test_non_utf8_body(sim, make_client):
    client = make_client()
    sim.inject(1, body=b"\xff\xfe{}", path_prefix="spot/")
    with pytest.raises(ImdsBodyNotText) as info:
        client.get("spot/instance-action")
    assert "not valid UTF-8" in str(info.value)
    sim.inject(1, body=b"\xff\xfe{}", path_prefix="spot/")
    assert client.get_bytes("spot/instance-action") == b"\xff\xfe{}"


def test_options_validation():
    with pytest.raises(ValueError):
        ImdsOptions(base_url="169.254.169.254")
    with pytest.raises(ValueError):
        ImdsOptions(retry_attempts=0)
    with pytest.raises(ValueError):
        ImdsOptions(read_timeout_s=0)
    with pytest.raises(ValueError):
        ImdsOptions(deadline_s=0)
    with pytest.raises(ValueError):
        ImdsOptions(base_url="https://169.254.169.254")  # IMDS has no TLS endpoint
    defaults = ImdsOptions()
    assert (defaults.base_url, defaults.allow_v1, defaults.token_ttl_s, defaults.connect_timeout_s,
            defaults.read_timeout_s, defaults.max_body_bytes, defaults.retry_attempts,
            defaults.retry_max_wait_s, defaults.deadline_s) == ("http://169.254.169.254", False, 21600,
                                                                 0.5, 1.0, 65536, 3, 0.5, 4.0)


# --- the real address, inside a private network namespace --------------------------------------


def _can_unshare_net() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_unshare_net(), reason="needs root and unshare --net")
def test_default_options_against_169_254_169_254_in_a_private_netns():
    script = textwrap.dedent(
        """
        from nodeagent.imds import ImdsClient, ImdsOptions
        from nodeagent_sim.imds import ImdsSim
        with ImdsSim("169.254.169.254", 80) as sim:
            assert sim.url == "http://169.254.169.254:80", sim.url
            sim.schedule_spot(120)
            with ImdsClient(ImdsOptions()) as client:
                print(client.identity().instance_id)
                print(client.get("spot/instance-action") is not None)
        """
    )
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c",
         'ip link set lo up && ip addr add 169.254.169.254/32 dev lo && exec "$0" -c "$1"',
         sys.executable, script],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["i-0123456789abcdef0", "True"]


def test_the_request_after_failures_frees_what_they_left(sim, make_client):
    """Failed and retried attempts leave reference cycles (the retry loop's state, the socket);
    the client's next request frees them, so they never wait for a full collection."""
    client = make_client(retry_attempts=3)
    assert client.get("instance-id") is not None
    gc.collect()
    gc.disable()  # only the client's own collection may run
    try:
        sim.inject(6, status=500, path_prefix="instance-id")
        for _ in range(2):
            with pytest.raises(ImdsUnavailable):
                client.get("instance-id")
        assert garbage_count(Failure) > 0  # what would otherwise wait for a full collection
        sim.inject(3, status=500, path_prefix="instance-id")
        with pytest.raises(ImdsUnavailable):
            client.get("instance-id")
        time.sleep(MIN_INTERVAL_S + 0.1)  # collections are spaced by at least this
        assert client.get("instance-id") is not None
        assert garbage_count(Failure) == 0
    finally:
        gc.enable()
