"""Fixtures of the API unit tests: the real engine over a small corpus, an app without Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.identity import ClientKeyStore
from kuberag_api.live_config import LiveConfig
from kuberag_api.rag import RagEngine
from kuberag_contract.config import parse_client_keys, parse_config
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import app_settings, open_engine


@pytest.fixture
def engine(tmp_path: Path) -> RagEngine:
    eng = open_engine(tmp_path)
    yield eng
    eng.close()


@pytest.fixture
def make_client(tmp_path: Path, engine: RagEngine) -> Callable:
    """make_client(config_yaml=None, client_keys=None, **settings) -> AsyncTestClient over create_app."""

    def make(config_yaml: str | None = None, client_keys: str | None = None, **kwargs) -> AsyncTestClient:
        live = LiveConfig(parse_config(config_yaml)) if config_yaml else None
        settings = app_settings(tmp_path, **kwargs)
        keys = ClientKeyStore(parse_client_keys(client_keys), admin_key=settings.admin.api_key) if client_keys else None
        app = create_app(settings, engine=engine, live=live, client_keys=keys, serve_metrics=False)
        return AsyncTestClient(app)

    return make


@pytest.fixture
async def client(make_client) -> AsyncIterator[AsyncTestClient]:
    # A generous limit: these tests are about the API, test_rate_limit* about limiting.
    async with make_client("rateLimit: {requestsPerMinute: 100000, burst: 1000}") as c:
        yield c
