"""GCRA limiter math with a controlled clock, client keys, bounded memory."""

from __future__ import annotations

import pytest
from kuberag_api.identity import ClientIdentity
from kuberag_api.rate_limit import Bucket, LocalRateLimiter, caller_bucket, user_id_of
from kuberag_contract.config import Limit, parse_config

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_rate():
    clock = Clock()
    rl = LocalRateLimiter(clock=clock)
    decisions = [rl.check("a", 60, 5) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[5]
    assert refused.retry_after == pytest.approx(1.0)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.reset_after == pytest.approx(5.0)
    clock.now += 0.99
    assert not rl.check("a", 60, 5).allowed
    clock.now += 0.02
    d = rl.check("a", 60, 5)
    assert d.allowed and d.remaining == 0
    clock.now += 10  # long idle: the bucket is full again, never more than the burst
    assert [rl.check("a", 60, 5).allowed for _ in range(6)] == [True] * 5 + [False]


def test_exact_count_over_a_minute():
    clock = Clock()
    rl = LocalRateLimiter(clock=clock)
    assert sum(rl.check("k", 120, 10).allowed for _ in range(15)) == 10  # the burst
    allowed = 0
    for _ in range(120):  # one minute: one token every 0.5 s, three tries each time
        clock.now += 0.5
        allowed += sum(rl.check("k", 120, 10).allowed for _ in range(3))
    assert allowed == 120


def test_clients_are_independent_and_idle_ones_forgotten():
    clock = Clock()
    rl = LocalRateLimiter(max_keys=100, clock=clock)
    assert not any(not rl.check(f"c{i}", 60, 1).allowed for i in range(50))
    assert not rl.check("c1", 60, 1).allowed
    clock.now += 5
    for i in range(100, 200):
        rl.check(f"c{i}", 60, 1)
    assert len(rl) <= 100


def test_headers_follow_the_ratelimit_fields():
    d = LocalRateLimiter(clock=Clock()).check("x", 60, 10)
    h = d.headers()
    assert h["RateLimit-Limit"] == "10" and h["RateLimit-Remaining"] == "9" and h["RateLimit-Reset"] == "1"
    assert "Retry-After" not in h


def test_caller_bucket_is_the_verified_client_else_the_ip():
    cfg = parse_config("rateLimit: {requestsPerMinute: 60, burst: 10}").rate_limit
    anonymous = caller_bucket(ClientIdentity(ip="10.1.2.3"), cfg)
    assert (anonymous.key, anonymous.requests_per_minute, anonymous.burst) == ("ip:10.1.2.3", 60, 10)
    assert anonymous.subject == "IP 10.1.2.3"
    own = caller_bucket(ClientIdentity(ip="10.1.2.3", client="ci", limit=Limit(requests_per_minute=600, burst=50)), cfg)
    assert (own.key, own.requests_per_minute, own.burst, own.subject) == ("c:ci", 600, 50, "client 'ci'")
    # the same client from another address is the same budget
    assert caller_bucket(ClientIdentity(ip="10.9.9.9", client="ci"), cfg).key == "c:ci"
    assert caller_bucket(ClientIdentity(ip="10.9.9.9", client="admin", admin=True), cfg).key == "a:admin"
    by_ip = parse_config("rateLimit: {keySource: ip}").rate_limit
    assert caller_bucket(ClientIdentity(ip="10.1.2.3", client="ci"), by_ip).key == "ip:10.1.2.3/c:ci"


def test_a_refusal_takes_from_no_bucket():
    clock = Clock()
    rl = LocalRateLimiter(clock=clock)
    client = Bucket("c:a", 60, 3, "client 'a'")
    user = Bucket("c:a/u:bob", 60, 1, "user bob")
    first = rl.check_many([client, user])
    assert first.allowed and first.remaining == 0 and first.subject == "user bob"  # the tightest bucket
    refused = rl.check_many([client, user])
    assert not refused.allowed and refused.subject == "user bob"
    # bob's refusals did not spend the client's budget: two more users still fit
    assert rl.check_many([client, Bucket("c:a/u:carol", 60, 1, "carol")]).allowed
    assert rl.check_many([client, Bucket("c:a/u:dan", 60, 1, "dan")]).allowed
    over = rl.check_many([client, Bucket("c:a/u:erin", 60, 1, "erin")])
    assert not over.allowed and over.subject == "client 'a'"
    assert not rl.check_many([client], commit=False).allowed


def test_user_id_of_body():
    assert user_id_of(b'{"question": "q", "user_id": "bob"}') == "bob"
    assert user_id_of(b'{"question": "q"}') is None
    assert user_id_of(b"{not json") is None
    assert user_id_of(b'{"user_id": 5}') is None
    assert user_id_of(b"") is None
    assert user_id_of(b'{"user_id": "' + b"x" * 500 + b'"}') == "x" * 200
