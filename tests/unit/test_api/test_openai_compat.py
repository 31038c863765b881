"""The front door's request handling: which message is the question, content parts, OpenAI's user."""

import msgspec
import pytest
from kuberag_api.openai_compat import ChatCompletionRequest, _question_and_history
from kuberag_api.rate_limit import user_id_of
from litestar.exceptions import ValidationException

pytestmark = pytest.mark.unit


def request(*messages, **fields) -> ChatCompletionRequest:
    return msgspec.convert({"model": "docs-qa", "messages": list(messages), **fields}, ChatCompletionRequest)


def test_the_last_user_message_is_the_question_and_earlier_turns_the_history():
    question, history = _question_and_history(request(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Which port does Redis use?"},
        {"role": "assistant", "content": "6379 [1]."},
        {"role": "user", "content": [{"type": "text", "text": "And its memory limit?"}]},
    ))
    assert question == "And its memory limit?"
    assert history == [("user", "Which port does Redis use?"), ("assistant", "6379 [1].")]


@pytest.mark.parametrize(("messages", "message"), [
    ([{"role": "system", "content": "hi"}], "must contain a user message"),
    ([{"role": "user", "content": "   "}], "empty"),
    ([{"role": "user", "content": "x" * 501}], "at most 500 characters"),
    ([{"role": "user", "content": [{"type": "image_url"}]}], "only text content parts"),
])
def test_bad_messages_are_refused_with_the_reason(messages, message):
    with pytest.raises(ValidationException, match=message):
        _question_and_history(request(*messages))


def test_openai_fields_the_service_does_not_use_are_accepted_and_n_must_be_one():
    body = request({"role": "user", "content": "q"}, temperature=0.2, top_p=1, seed=7, stream=True,
                   stream_options={"include_usage": True}, user="alice")
    assert body.stream and body.stream_options.include_usage and body.user == "alice"
    with pytest.raises(msgspec.ValidationError):
        request({"role": "user", "content": "q"}, n=2)


def test_openai_user_is_read_like_user_id_for_the_per_user_bucket():
    assert user_id_of(b'{"model": "m", "messages": [], "user": "alice"}') == "alice"
    assert user_id_of(b'{"question": "q", "user_id": "bob"}') == "bob"
