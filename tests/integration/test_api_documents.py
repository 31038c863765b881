"""Ingestion of every supported format over HTTP, and no stale answer from any cache level (with a
real Redis as L2) after a document is added or removed."""

from __future__ import annotations

from pathlib import Path

import pytest
from kuberag_api.app import create_app
from kuberag_api.live_config import LiveConfig
from kuberag_contract.config import parse_config
from litestar.testing import AsyncTestClient

from tests.fixtures.api_app import ADMIN_KEY, app_settings, open_engine
from tests.unit.test_rag.minimal_pdf import text_pdf

pytestmark = pytest.mark.integration

ADMIN = {"X-API-Key": ADMIN_KEY}
UNLIMITED = "rateLimit: {requestsPerMinute: 100000, burst: 100000}"

DOCUMENTS = [
    ("falcon.txt", "text/plain", b"The peregrine falcon dives at more than 300 kilometres per hour.",
     "How fast does the peregrine falcon dive?", "300"),
    ("glacier.md", "text/markdown", b"# Glaciers\n\nThe Aletsch glacier is 23 kilometres long.\n",
     "How long is the Aletsch glacier?", "23"),
    ("volcano.html", "text/html",
     b"<html><head><title>Volcanoes</title><script>var x = 'ignored';</script></head><body>"
     b"<h1>Volcanoes</h1><p>Mauna Loa rises 4169 metres above sea level.</p></body></html>",
     "How high does Mauna Loa rise?", "4169"),
    ("river.pdf", "application/pdf", text_pdf([["The Danube flows through ten countries."]]),
     "Through how many countries does the Danube flow?", "ten"),
]


@pytest.fixture
async def client(tmp_path: Path, redis_server):
    engine = open_engine(tmp_path)
    app = create_app(app_settings(tmp_path, redis_url=redis_server.url), engine=engine,
                     live=LiveConfig(parse_config(UNLIMITED)), serve_metrics=False)
    async with AsyncTestClient(app) as c:
        yield c
    engine.close()


@pytest.mark.parametrize(("name", "ctype", "data", "question", "expected"), DOCUMENTS,
                         ids=[d[0] for d in DOCUMENTS])
async def test_each_format_is_ingested_and_answerable(client, name, ctype, data, question, expected):
    before = (await client.post("/query", json={"question": question})).json()
    assert expected not in before["answer"]
    r = await client.post("/documents", files={"file": (name, data, ctype)}, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "added" and r.json()["chunks"] >= 1
    after = (await client.post("/query", json={"question": question})).json()
    assert after["cache_hit"] is False, "an answer cached before the ingest was served"
    assert expected in after["answer"] and after["sources"][0]["source"] == name
    again = await client.post("/documents", files={"file": (name, data, ctype)}, headers=ADMIN)
    assert again.status_code == 200 and again.json()["status"] == "unchanged"
    listing = (await client.get("/documents", headers=ADMIN)).json()
    assert name in {d["source"] for d in listing["documents"]}


async def test_broken_documents_are_refused_with_a_reason(client):
    r = await client.post("/documents", files={"file": ("empty.txt", b"   ", "text/plain")}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "file"
    r = await client.post("/documents", files={"file": ("bad.pdf", b"%PDF-1.4 garbage", "application/pdf")},
                          headers=ADMIN)
    assert r.status_code in (415, 422) and r.json()["detail"]
    r = await client.post("/documents", files={"file": ("photo.png", b"\x89PNG\r\n", "image/png")}, headers=ADMIN)
    assert r.status_code == 415


async def test_replacing_a_document_changes_the_answer(client):
    q = {"question": "What colour is the kuberag mascot?"}
    await client.post("/documents", files={"file": ("mascot.md", b"# Mascot\n\nThe kuberag mascot is orange.\n",
                                                    "text/markdown")}, headers=ADMIN)
    first = (await client.post("/query", json=q)).json()
    assert "orange" in first["answer"]
    assert (await client.post("/query", json=q)).json()["cache_hit"] is True
    r = await client.post("/documents", files={"file": ("mascot.md", b"# Mascot\n\nThe kuberag mascot is teal.\n",
                                                        "text/markdown")}, headers=ADMIN)
    assert r.json()["status"] == "replaced"
    second = (await client.post("/query", json=q)).json()
    assert second["cache_hit"] is False and "teal" in second["answer"] and "orange" not in second["answer"]
