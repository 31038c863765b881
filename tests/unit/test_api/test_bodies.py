"""No request body yields a 500: malformed JSON, invalid UTF-8, deep nesting and random bytes are
400 problems naming the cause (fuzzed with hypothesis); a body of another media type is a 415."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from tests.fixtures.api_app import ADMIN_KEY

pytestmark = pytest.mark.unit

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("body", "cause"), [
    (b'{"question": "caf\xe9 au lait?"}', "not valid UTF-8"),
    (b'{"question": "hello?", "user_id": "\xff\xfe"}', "not valid UTF-8"),
    # deep nesting: refused at the first value that is not what the body needs, never recursed into
    (b"[" * 5000 + b"]" * 5000, "Expected `object`, got `array`"),
    (b'{"question": ' + b"[" * 3000 + b"]" * 3000 + b"}", "question: Expected `str`, got `array`"),
    (b'{"question": "a", "colour": ' + b"{\"a\":" * 2000 + b"1" + b"}" * 2000 + b"}", "unknown field `colour`"),
    (b'{"question": "a", "use_cache": 0}', "use_cache: Expected `bool`, got `int`"),
    (b'{"question": "\\ud800?"}', "unpaired UTF-16 surrogate"),
    (b'\xef\xbb\xbf{"question": "a?"}', "byte order mark"),
    (b'{"question": "a?"} trailing', "not valid JSON"),
])
@pytest.mark.parametrize("path", ["/query", "/query/stream"])
async def test_malformed_bodies_are_400_problems_naming_the_cause(client, path, body, cause):
    """The defects: invalid UTF-8 and JSON nested a few thousand levels deep were 500s."""
    r = await client.post(path, content=body, headers=JSON)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert cause in r.json()["detail"] and r.json()["request_id"] == r.headers["x-request-id"]


async def test_body_of_another_media_type_is_415(client):
    r = await client.post("/query", content=b'{"question": "a?"}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = await client.post("/query", data={"question": "a?"})  # a form, as `curl -d` sends without -H
    assert r.status_code == 415
    # a missing type is accepted (the body is JSON)
    r = await client.post("/query", content=b'{"question": "How is green tea brewed?"}')
    assert r.status_code == 200


# --- fuzzing -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sync_client(tmp_path_factory):
    from kuberag_api.app import create_app
    from kuberag_api.live_config import LiveConfig
    from kuberag_contract.config import parse_config

    from tests.fixtures.api_app import app_settings, open_engine

    tmp = tmp_path_factory.mktemp("fuzz")
    engine = open_engine(tmp)
    # L3 off: every distinct question is then an embedding + search, and the fuzz stays about parsing
    live = LiveConfig(parse_config("rateLimit: {enabled: false}\ncache: {l3: {enabled: false}}"))
    app = create_app(app_settings(tmp), engine=engine, live=live, serve_metrics=False)
    with TestClient(app) as c:
        yield c
    engine.close()


def _assert_not_a_server_error(r) -> None:
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/problem+json"), r.text
        assert r.json()["detail"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
query_like = st.fixed_dictionaries(
    {}, optional={"question": json_values | st.text(max_size=600), "user_id": json_values | st.text(max_size=250),
                  "use_cache": json_values},
) | st.dictionaries(st.text(max_size=12), json_values, max_size=4)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(body=st.binary(max_size=300))
def test_random_bytes_never_make_a_server_error(sync_client, body):
    for path in ("/query", "/query/stream"):
        _assert_not_a_server_error(sync_client.post(path, content=body, headers=JSON))


@st.composite
def mutated_json(draw) -> bytes:
    """A valid query body with bytes spliced in, or wrapped in deep nesting: the malformed bodies a
    careless client (or an attacker) sends; random bytes alone are rarely near enough to JSON."""
    text = json.dumps(draw(query_like), ensure_ascii=draw(st.booleans())).encode()
    kind = draw(st.sampled_from(["splice", "nest", "truncate"]))
    if kind == "splice":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.binary(min_size=1, max_size=6)) + text[at:]
    if kind == "nest":
        depth = draw(st.integers(1, 4000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return opener * depth + text + closer * depth
    return text[:draw(st.integers(0, len(text)))]


@FUZZ
@given(body=mutated_json())
def test_mutated_json_never_makes_a_server_error(sync_client, body):
    for path in ("/query", "/query/stream"):
        _assert_not_a_server_error(sync_client.post(path, content=body, headers={**JSON, "Cache-Control": "no-store"}))


@FUZZ
@given(document=query_like | json_values)
def test_random_json_never_makes_a_server_error(sync_client, document):
    body = json.dumps(document).encode()
    r = sync_client.post("/query", content=body, headers={**JSON, "Cache-Control": "no-store"})
    _assert_not_a_server_error(r)


@FUZZ
@given(body=st.binary(max_size=400), boundary=st.sampled_from([b"xyz", b"", b"--", b"a" * 80]),
       content_type=st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data", "text/plain",
                                     "application/json", "multipart/form-data; boundary=\"\""]))
def test_random_uploads_never_make_a_server_error(sync_client, body, boundary, content_type):
    framed = b"--" + boundary + b"\r\n" + body + b"\r\n--" + boundary + b"--\r\n"
    for payload in (body, framed):
        r = sync_client.post("/documents", content=payload,
                             headers={"content-type": content_type, "X-API-Key": ADMIN_KEY})
        _assert_not_a_server_error(r)


def test_untyped_decoding_guards_deep_nesting_and_bad_utf8():
    """Routes without a struct body decode to Python values: the guard still names the cause."""
    from kuberag_api.request_bodies import BodyError, decode_json

    with pytest.raises(BodyError, match="nested too deeply"):
        decode_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(BodyError, match="not valid UTF-8"):
        decode_json(b'["\xff"]')
    assert decode_json(b'{"a": [1, 2]}') == {"a": [1, 2]}
