"""OpenAI direction: openai-python -> diglot -> llama.cpp, two ways:

* "direct": diglot (OpenAI frontend, --target llama-server) -> llama-server (pass-through pairing);
* "chain":  diglot#1 (OpenAI frontend, --upstream diglot#2) -> diglot#2 (Ollama frontend,
  --target llama-server) -> llama-server, which runs all four halves with real generated text.

Numbers are checked against llama-server's own answer to the same request."""

import json

import openai
import pytest

from common import (D_CHAIN, D_CHAIN_EMBED, D_CHAT, D_EMBED, EMBED_DIM, EMBED_MODEL, MESSAGES, MODEL,
                    SCHEMA, check_schema, cosine, llama_chat, llama_completion, llama_embed, pick_stop, ref)

BODY = dict(model=MODEL, messages=MESSAGES, temperature=0, seed=7, max_tokens=24)
REF = dict(temperature=0, seed=7, max_tokens=24)


@pytest.fixture(scope="module", params=["direct", "chain"])
def client(request):
    base = {"direct": D_CHAT, "chain": D_CHAIN}[request.param]
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)


def test_chat(client):
    r = client.chat.completions.create(**BODY)
    want = ref(**REF)
    c = r.choices[0]
    assert r.object == "chat.completion" and len(r.choices) == 1
    assert c.message.role == "assistant"
    assert c.message.content and c.message.content == want["text"]
    assert c.finish_reason == want["finish_reason"]
    assert r.usage.prompt_tokens == want["prompt_tokens"]
    assert r.usage.completion_tokens == want["completion_tokens"]
    assert r.usage.total_tokens == want["prompt_tokens"] + want["completion_tokens"]


def test_stream_with_usage(client):
    chunks = list(client.chat.completions.create(**BODY, stream=True, stream_options={"include_usage": True}))
    want = ref(**REF)
    deltas = [ch.choices[0].delta for ch in chunks if ch.choices]
    texts = [d.content for d in deltas if d.content]
    assert len(texts) > 1, "answer not streamed"
    assert "".join(texts) == want["text"]
    assert deltas[0].role == "assistant" and all(d.role is None for d in deltas[1:])
    assert len({ch.id for ch in chunks}) == 1
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == [want["finish_reason"]]
    usage = [ch.usage for ch in chunks if ch.usage]
    assert len(usage) == 1 and chunks[-1].usage and chunks[-1].choices == []
    assert usage[0].prompt_tokens == want["prompt_tokens"]
    assert usage[0].completion_tokens == want["completion_tokens"]


def test_stream_without_usage(client):
    chunks = list(client.chat.completions.create(**BODY, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == ref(**REF)["text"]


def test_max_tokens_length(client):
    r = client.chat.completions.create(**{**BODY, "max_tokens": 5})
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5
    r = client.chat.completions.create(**{**BODY, "max_tokens": None}, max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5


def test_stop(client):
    full = ref(temperature=0, max_tokens=40)["text"]
    stop, before = pick_stop(full)
    r = client.chat.completions.create(**{**BODY, "max_tokens": 40, "seed": None}, stop=[stop])
    assert r.choices[0].message.content == before, f"stop {stop!r}"
    assert r.choices[0].finish_reason == "stop"


def test_seed_and_temperature(client):
    def text(**kw):
        return client.chat.completions.create(**{**BODY, **kw}).choices[0].message.content

    assert text(temperature=0, seed=1) == text(temperature=0, seed=2)
    a, b, c = text(temperature=1.0, seed=11), text(temperature=1.0, seed=11), text(temperature=1.0, seed=12)
    assert a == b and a != c
    assert a == ref(temperature=1.0, seed=11, max_tokens=24)["text"]


def test_json_schema(client):
    msgs = [{"role": "user", "content": "Describe a box as JSON."}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=64,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "box", "schema": SCHEMA}})
    check_schema(json.loads(r.choices[0].message.content))
    r = client.chat.completions.create(model=MODEL, messages=msgs, temperature=0, max_tokens=64,
                                       response_format={"type": "json_object"})
    content = r.choices[0].message.content
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.lstrip().startswith("{")


def test_models(client):
    ids = [m.id for m in client.models.list()]
    assert any(i.split(":")[0] == MODEL for i in ids), ids
    m = client.models.retrieve(ids[0])
    assert m.id == ids[0]


def test_completions(client):
    prompt = "The lighthouse keeper climbed the stairs and"
    r = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12)
    if str(client.base_url).startswith(D_CHAIN):
        # through an Ollama hop /v1/completions becomes /api/generate without `raw` (as Ollama's own
        # /v1/completions does), which the second diglot runs as a chat turn
        want = llama_chat([{"role": "user", "content": prompt}], temperature=0, max_tokens=12)
        want = {"choices": [{"text": want["choices"][0]["message"]["content"]}], "usage": want["usage"]}
    else:
        want = llama_completion(prompt, temperature=0, max_tokens=12)
    assert r.choices[0].text and r.choices[0].text == want["choices"][0]["text"]
    assert r.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=12, stream=True))
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) > 1 and "".join(texts) == want["choices"][0]["text"]


def test_errors(client):
    # llama-server's own 400 (prompt longer than its context), in OpenAI's shape, streamed or not
    big = [{"role": "user", "content": "lighthouse " * 5000}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=big, max_tokens=2)
    assert "context" in e.value.body["message"] and e.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as e:
        list(client.chat.completions.create(model=MODEL, messages=big, max_tokens=2, stream=True))
    assert "context" in e.value.body["message"]
    # diglot's own 400 naming the field
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages="not a list", max_tokens=2)
    assert e.value.body["param"] == "messages"


@pytest.mark.parametrize("via", ["direct", "chain"])
def test_embeddings(via):
    base = {"direct": D_EMBED, "chain": D_CHAIN_EMBED}[via]
    c = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    texts = ["the sea at night", "a lamp in the window"]
    direct = llama_embed(texts)
    r = c.embeddings.create(model=EMBED_MODEL, input=texts)  # the SDK asks for base64
    assert [len(d.embedding) for d in r.data] == [EMBED_DIM, EMBED_DIM]
    assert [d.index for d in r.data] == [0, 1]
    for d, want in zip(r.data, direct):
        assert cosine(d.embedding, want) > 0.9999
    r = c.embeddings.create(model=EMBED_MODEL, input=texts[0], encoding_format="float")
    assert len(r.data[0].embedding) == EMBED_DIM and cosine(r.data[0].embedding, direct[0]) > 0.9999
    assert r.usage.prompt_tokens > 0
