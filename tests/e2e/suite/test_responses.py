"""The Responses API: openai-python's `responses` -> diglot -> llama.cpp, two ways:

* "direct": diglot (OpenAI frontend, /v1/responses, --target llama-server) -> llama-server;
* "chain":  diglot#1 (/v1/responses, --upstream diglot#2) -> diglot#2 (Ollama frontend,
  --target llama-server) -> llama-server.

llama-server has no /v1/responses: the answer must be its own chat answer to the same request."""

import openai
import pytest

from common import D_CHAIN, D_CHAT, MODEL, PROMPT, ref

REF = dict(temperature=0, seed=7, max_tokens=24)
BODY = dict(model=MODEL, input=PROMPT, temperature=0, max_output_tokens=24, store=False, extra_body={"seed": 7})


@pytest.fixture(scope="module", params=["direct", "chain"])
def client(request):
    base = {"direct": D_CHAT, "chain": D_CHAIN}[request.param]
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def status_for(finish_reason):
    return "incomplete" if finish_reason == "length" else "completed"


def test_responses_create(client):
    r = client.responses.create(**BODY)
    want = ref(**REF)
    assert r.object == "response" and r.model == MODEL
    assert r.output_text and r.output_text == want["text"]
    assert r.status == status_for(want["finish_reason"])
    if r.status == "incomplete":
        assert r.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in r.output] == ["message"]
    assert r.usage.input_tokens == want["prompt_tokens"]
    assert r.usage.output_tokens == want["completion_tokens"]
    assert r.usage.total_tokens == want["prompt_tokens"] + want["completion_tokens"]


def test_responses_stream(client):
    want = ref(**REF)
    with client.responses.stream(**BODY) as stream:
        events = list(stream)
    # Cut at max_output_tokens the stream ends with `response.incomplete`, as OpenAI's does
    # (the SDK's get_final_response only knows `response.completed`).
    final = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1, "answer not streamed"
    assert "".join(deltas) == want["text"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type == f"response.{status_for(want['finish_reason'])}"
    assert final.output_text == want["text"]
    assert final.usage.output_tokens == want["completion_tokens"]
