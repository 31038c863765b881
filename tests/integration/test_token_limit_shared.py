"""Token limits in the shared scope: one bucket per client across pods, on a real redis-server."""

import pytest
from kuberag_api.cache.redis_tier import connect
from kuberag_api.circuit_breaker import CircuitBreaker
from kuberag_api.live_config import LiveConfig
from kuberag_api.rate_limit import SharedRateLimiter
from kuberag_api.token_limit import TokenLimiter
from kuberag_contract.config import parse_config

pytestmark = pytest.mark.integration

CONFIG = "rateLimit: {scope: shared, tokensPerMinute: 600, tokenBurst: 1000}\n"


def pod(url: str) -> TokenLimiter:
    shared = SharedRateLimiter(connect(url, 0.5), prefix="kuberag:rl:test:", timeout=0.5,
                               breaker=CircuitBreaker(3, 1.0))
    return TokenLimiter(LiveConfig(parse_config(CONFIG)), shared)


async def test_two_pods_share_one_token_bucket_per_client(redis_server):
    a, b = pod(redis_server.url), pod(redis_server.url)
    first, reservation = await a.reserve("k:alice", 700)
    assert first.allowed and first.remaining == 300
    refused, _ = await b.reserve("k:alice", 700)  # the other pod sees the same bucket
    assert not refused.allowed and 0 < refused.retry_after <= 40
    await a.settle(reservation, 100)  # 600 of the 700 come back, for every pod
    assert (await b.reserve("k:alice", 700))[0].allowed
    assert not a.degraded and not b.degraded


async def test_a_dead_shared_redis_limits_tokens_per_replica_visibly(redis_server):
    a = pod(redis_server.url)
    redis_server.stop()
    decision, _ = await a.reserve("k:alice", 700)
    assert decision.allowed and a.degraded  # never unlimited: the local bucket took it
    assert not (await a.reserve("k:alice", 700))[0].allowed
