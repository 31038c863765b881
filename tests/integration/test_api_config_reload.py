"""A config swap the way the kubelet does it (..data symlink replaced) is applied live."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from kuberag_api.app import create_app
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import ADMIN_KEY, app_settings, kubelet_dir, open_engine

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": ADMIN_KEY}


async def eventually(check, within: float = 5.0):
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.05)


async def test_symlink_swap_changes_limits_and_cache_live(tmp_path: Path):
    engine = open_engine(tmp_path)
    volume = tmp_path / "etc-kuberag"
    kubelet_dir(volume, "2026_11_24_01", "rateLimit: {requestsPerMinute: 1, burst: 2}\n")
    app = create_app(app_settings(tmp_path, config_path=volume / "config.yaml"), engine=engine,
                     serve_metrics=False, background_interval=0.1)
    try:
        async with AsyncTestClient(app) as client:
            q = {"question": "How is green tea brewed?", "user_id": "u1"}
            codes = [(await client.post("/query", json=q)).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            hash_before = (await client.get("/readyz", headers=ADMIN)).json()["checks"]["config"]["hash"]

            kubelet_dir(volume, "2026_11_24_02", "rateLimit: {requestsPerMinute: 1, burst: 50}\n"
                                                 "cache: {l1: {maxEntries: 0}, l3: {enabled: false}}\n")

            async def applied() -> bool:
                r = await client.post("/query", json={**q, "user_id": "u2"})
                return r.headers.get("ratelimit-limit") == "50"

            assert await eventually(applied)
            config = (await client.get("/readyz", headers=ADMIN)).json()["checks"]["config"]
            assert config["hash"] != hash_before and config["reloads"] == 1
            # L1 off now: a repeated question is computed again.
            r1 = (await client.post("/query", json={**q, "user_id": "u3"})).json()
            r2 = (await client.post("/query", json={**q, "user_id": "u3"})).json()
            assert r1["cache_hit"] is False and r2["cache_hit"] is False

            # A bad file is refused: the last good config stays, readyz says why.
            kubelet_dir(volume, "2026_11_24_03", "rateLimit: {requestsPerMinute: 0}\n")

            async def refused() -> bool:
                return "error" in (await client.get("/readyz", headers=ADMIN)).json()["checks"]["config"]

            assert await eventually(refused)
            config = (await client.get("/readyz", headers=ADMIN)).json()["checks"]["config"]
            assert "requestsPerMinute" in config["error"] and "last good" in config["error"]
            r = await client.post("/query", json={**q, "user_id": "u4"})
            assert r.status_code == 200 and r.headers["ratelimit-limit"] == "50"
    finally:
        engine.close()
