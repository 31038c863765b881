"""Verified client identity: known keys, unknown keys refused, X-Forwarded-For only from trusted
proxies, a body user_id that subdivides a budget but never escapes it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from kuberag_api.identity import ClientIdentity, ClientKeyStore, IdentityResolver, UnknownClientKey
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import ConfigError, parse_client_keys, parse_config

from tests.fixtures.api_app import ADMIN_KEY, client_keys_yaml

pytestmark = pytest.mark.unit

CI_KEY = "ci-key-0123456789abcdef"
BOT_KEY = "bot-key-0123456789abcdef"
KEYS = client_keys_yaml(
    {"name": "ci", "key": CI_KEY, "rateLimit": {"requestsPerMinute": 2, "burst": 5}},
    {"name": "bot", "keySha256": hashlib.sha256(BOT_KEY.encode()).hexdigest()},
)


def scope(headers: dict[str, str] | list[tuple[str, str]] = (), peer: str = "10.0.0.7") -> dict:
    items = headers.items() if isinstance(headers, dict) else headers
    return {"headers": [(k.lower().encode(), v.encode()) for k, v in items], "client": (peer, 40000)}


def resolver(config: str = "", keys: str = KEYS) -> IdentityResolver:
    return IdentityResolver(ClientKeyStore(parse_client_keys(keys), admin_key=ADMIN_KEY),
                            LiveConfig(parse_config(config)))


def test_known_keys_are_their_clients_with_their_limits():
    r = resolver()
    ci = r.resolve(scope({"X-API-Key": CI_KEY}))
    assert ci.client == "ci" and ci.verified and ci.ip == "10.0.0.7"
    assert (ci.limit.requests_per_minute, ci.limit.burst) == (2, 5)
    bot = r.resolve(scope({"Authorization": f"Bearer {BOT_KEY}"}))  # keySha256, OpenAI-style header
    assert bot.client == "bot" and bot.limit is None
    admin = r.resolve(scope({"X-API-Key": ADMIN_KEY}))
    assert admin.client == "admin" and admin.admin
    anonymous = r.resolve(scope({}))
    assert anonymous == ClientIdentity(ip="10.0.0.7") and not anonymous.verified


@pytest.mark.parametrize("headers", [{"X-API-Key": "made-up-key-0123456789"}, {"Authorization": "Bearer nope"},
                                     {"X-API-Key": CI_KEY[:-1]}])
def test_unknown_key_is_refused(headers):
    with pytest.raises(UnknownClientKey):
        resolver().resolve(scope(headers))


def test_forwarded_for_only_from_trusted_proxies():
    trusting = resolver("rateLimit: {trustedProxies: [10.0.0.0/24, 'fd00::/8']}")
    xff = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}
    # the peer is a trusted ingress: the nearest untrusted hop is the client (not the spoofable leftmost)
    assert trusting.resolve(scope(xff, peer="10.0.0.7")).ip == "203.0.113.9"
    # a chain of trusted proxies is walked; several header lines are one list
    assert trusting.resolve(scope([("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.9, 10.0.0.3")],
                                  peer="10.0.0.7")).ip == "203.0.113.9"
    assert trusting.resolve(scope({"X-Forwarded-For": "[2001:db8::1]:443"}, peer="fd00::1")).ip == "2001:db8::1"
    # an untrusted peer cannot choose its address
    assert trusting.resolve(scope(xff, peer="192.0.2.50")).ip == "192.0.2.50"
    # nobody is trusted by default
    assert resolver().resolve(scope(xff, peer="10.0.0.7")).ip == "10.0.0.7"
    # garbage forwarded by a trusted proxy: the last address that can be believed
    assert trusting.resolve(scope({"X-Forwarded-For": "203.0.113.9, not-an-ip"}, peer="10.0.0.7")).ip == "10.0.0.7"


def test_trusted_proxies_follow_the_live_config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\n")
    live = LiveConfig.from_file(path)
    r = IdentityResolver(ClientKeyStore(), live)
    xff = {"X-Forwarded-For": "203.0.113.9"}
    assert r.resolve(scope(xff)).ip == "10.0.0.7"
    path.write_text("apiVersion: kuberag.io/v1alpha1\nkind: ApiConfig\nrateLimit: {trustedProxies: [10.0.0.7]}\n")
    assert live.check()
    assert r.resolve(scope(xff)).ip == "203.0.113.9"


def test_client_keys_file_is_validated():
    for bad, word in (
        ("", "empty"),
        ("clients: []", "apiVersion"),
        (client_keys_yaml({"name": "a", "key": "short"}), "at least 16"),
        (client_keys_yaml({"name": "a", "key": CI_KEY}, {"name": "a", "key": BOT_KEY}), "twice"),
        (client_keys_yaml({"name": "a", "key": CI_KEY}, {"name": "b", "key": CI_KEY}), "same key"),
        (client_keys_yaml({"name": "a"}), "exactly one of key and keySha256"),
        (client_keys_yaml({"name": "a", "keySha256": "abc"}), "64 lowercase hex"),
        (client_keys_yaml({"name": "../x", "key": CI_KEY}), "client name"),
        (client_keys_yaml({"name": "a", "key": CI_KEY, "rateLimit": {"burst": 5}}), "requestsPerMinute"),
        (client_keys_yaml({"name": "a", "key": CI_KEY, "colour": 1}), "colour"),
    ):
        with pytest.raises(ConfigError, match=word):
            parse_client_keys(bad)


def test_client_keys_reload_and_a_bad_file_keeps_the_last_good(tmp_path: Path):
    path = tmp_path / "clients.yaml"
    path.write_text(client_keys_yaml({"name": "ci", "key": CI_KEY}))
    store = ClientKeyStore.from_file(path)
    assert store.lookup(CI_KEY).client == "ci" and store.lookup(BOT_KEY) is None
    path.write_text(client_keys_yaml({"name": "bot", "key": BOT_KEY}))  # a rotation
    assert store.check()
    assert store.lookup(CI_KEY) is None and store.lookup(BOT_KEY).client == "bot"
    path.write_text("")  # an empty (or truncated) file is refused: the last good keys stay
    os.utime(path, ns=(os.stat(path).st_mtime_ns + 1_000_000,) * 2)
    assert not store.check()
    assert store.lookup(BOT_KEY).client == "bot" and "empty" in store.state["error"]
    with pytest.raises(ConfigError, match="cannot read"):
        ClientKeyStore.from_file(tmp_path / "missing.yaml")
    path.write_text("clients: [")
    with pytest.raises(ConfigError, match="YAML"):
        ClientKeyStore.from_file(path)


# --- over HTTP ---------------------------------------------------------------------------------
Q = {"question": "How is green tea brewed?"}


async def test_new_user_id_or_made_up_key_per_request_never_escapes_the_limit(make_client):
    """The defect: with the default key source, a new user_id (or a made-up X-API-Key) on each
    request was a new budget, so a careless or hostile client was never limited."""
    async with make_client("rateLimit: {requestsPerMinute: 1, burst: 3}") as c:
        codes = [(await c.post("/query", json={**Q, "user_id": f"user-{i}"})).status_code for i in range(6)]
        assert codes == [200, 200, 200, 429, 429, 429]
        r = await c.post("/query", json=Q, headers={"X-API-Key": "made-up-key-0123456789"})
        assert r.status_code == 401 and "unknown API key" in r.json()["detail"]
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["request_id"] == r.headers["x-request-id"]


async def test_verified_clients_have_their_own_budgets(make_client):
    async with make_client("rateLimit: {requestsPerMinute: 1, burst: 2}", client_keys=KEYS) as c:
        ci = {"X-API-Key": CI_KEY}
        codes = [(await c.post("/query", json=Q, headers=ci)).status_code for _ in range(6)]
        assert codes == [200] * 5 + [429]  # its own burst of 5
        r = await c.post("/query", json=Q, headers=ci)
        assert "client 'ci'" in r.json()["detail"] and "2 requests per minute" in r.json()["detail"]
        bot = {"Authorization": f"Bearer {BOT_KEY}"}  # the config's default limit
        assert [(await c.post("/query", json=Q, headers=bot)).status_code for _ in range(3)] == [200, 200, 429]
        # callers without a key share their IP's budget, apart from the clients'
        assert [(await c.post("/query", json=Q)).status_code for _ in range(3)] == [200, 200, 429]
        r = await c.post("/query", json=Q)
        assert "IP " in r.json()["detail"]


async def test_user_id_subdivides_a_budget_but_never_escapes_it(make_client):
    config = "rateLimit: {requestsPerMinute: 1, burst: 4, perUser: {requestsPerMinute: 1, burst: 2}}"
    async with make_client(config) as c:
        alice = [(await c.post("/query", json={**Q, "user_id": "alice"})).status_code for _ in range(3)]
        assert alice == [200, 200, 429]
        r = await c.post("/query", json={**Q, "user_id": "alice"})
        assert "user_id 'alice'" in r.json()["detail"] and r.headers["ratelimit-limit"] == "2"
        # bob has his own share, but the caller's budget (4) is the ceiling: alice's refusals spent none of it
        assert [(await c.post("/query", json={**Q, "user_id": "bob"})).status_code for _ in range(2)] == [200, 200]
        r = await c.post("/query", json={**Q, "user_id": "carol"})
        assert r.status_code == 429 and "IP " in r.json()["detail"]


async def test_admin_routes_with_client_keys(make_client):
    async with make_client(client_keys=KEYS) as c:
        # a verified client is not an administrator: 403; a key nobody knows: 401
        r = await c.delete("/cache", headers={"X-API-Key": CI_KEY})
        assert r.status_code == 403 and "client 'ci'" in r.json()["detail"]
        r = await c.delete("/cache", headers={"X-API-Key": "made-up-key-0123456789"})
        assert r.status_code == 401 and "invalid" in r.json()["detail"]
        assert (await c.delete("/cache", headers={"X-API-Key": ADMIN_KEY})).status_code == 200
        # the admin key is a verified identity on the query routes too
        assert (await c.post("/query", json=Q, headers={"X-API-Key": ADMIN_KEY})).status_code == 200
