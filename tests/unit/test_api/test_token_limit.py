"""Per-client token buckets: reserve, settle, refill (a fake clock), and the policy headers."""

import math

import pytest
from kuberag_api.live_config import LiveConfig
from kuberag_api.token_limit import LocalTokenBuckets, TokenLimiter
from kuberag_contract.config import parse_config

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves: ``clock.now`` seconds."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_charges_refuses_and_refills():
    clock = Clock()
    buckets = LocalTokenBuckets(clock=clock)
    first = buckets.take("alice", 600, per_minute=600, burst=1000)
    assert first.allowed and first.remaining == 400
    refused = buckets.take("alice", 600, per_minute=600, burst=1000)
    assert not refused.allowed and refused.remaining == 400
    assert refused.retry_after == pytest.approx(20.0)  # 200 tokens short at 10 tokens/s
    assert buckets.take("bob", 600, per_minute=600, burst=1000).allowed  # per client
    clock.now += 20.0
    assert buckets.take("alice", 600, per_minute=600, burst=1000).allowed


def test_giving_back_the_unused_part_makes_room_at_once():
    buckets = LocalTokenBuckets(clock=Clock())
    buckets.take("alice", 900, per_minute=60, burst=1000)
    assert not buckets.take("alice", 500, per_minute=60, burst=1000).allowed
    buckets.give_back("alice", 800, per_minute=60)  # the call used 100 of its 900
    assert buckets.take("alice", 500, per_minute=60, burst=1000).allowed


def test_headers_name_the_token_policy():
    d = LocalTokenBuckets(clock=Clock()).take("a", 100, per_minute=6000, burst=500)
    h = d.headers()
    assert h["X-RateLimit-Limit-Tokens"] == "500" and h["X-RateLimit-Remaining-Tokens"] == "400"
    assert h["RateLimit-Policy"] == '"tokens";q=6000;w=60;burst=500' and "Retry-After" not in h


async def test_the_limiter_follows_the_live_config():
    live = LiveConfig(parse_config("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"))
    limiter = TokenLimiter(live)
    assert not limiter.enabled  # no tokensPerMinute: no token limit
    live.apply(parse_config("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n"
                            "rateLimit: {tokensPerMinute: 1000}\n"), "h1")
    assert limiter.enabled
    decision, reservation = await limiter.reserve("alice", 800)
    assert decision.allowed and decision.limit == 1000  # tokenBurst defaults to tokensPerMinute
    too_big, none = await limiter.reserve("alice", 5000)
    assert not too_big.allowed and none is None and math.isinf(too_big.retry_after)
    await limiter.settle(reservation, 0)  # a failed call gives it all back
    assert (await limiter.reserve("alice", 1000))[0].allowed


def test_token_fields_are_validated():
    from kuberag_contract.config import ConfigError

    with pytest.raises(ConfigError, match="tokensPerMinute"):
        parse_config("rateLimit: {tokensPerMinute: 0}\n")
