"""Ollama direction: ollama-python -> diglot (Ollama frontend, --target llama-server) -> llama.cpp.

Numbers are checked against llama-server's own answer to the same request (same messages and
sampling fields sent straight to its /v1/chat/completions)."""

import json

import ollama
import pytest

from common import (D_CHAT, D_EMBED, EMBED, EMBED_DIM, EMBED_MODEL, LLAMA, MESSAGES, MODEL, PROMPT,
                    SCHEMA, _http, check_schema, cosine, llama_completion, llama_embed, norm, pick_stop,
                    ref)

OPTS = {"temperature": 0, "seed": 7, "num_predict": 24}
REF = dict(temperature=0, seed=7, max_tokens=24)


@pytest.fixture(scope="module")
def client():
    return ollama.Client(host=D_CHAT, timeout=300)


def test_chat(client):
    r = client.chat(model=MODEL, messages=MESSAGES, options=OPTS)
    want = ref(**REF)
    assert r.message.role == "assistant"
    assert r.message.content, "empty answer"
    assert r.done is True
    assert r.message.content == want["text"], "greedy text differs from llama-server's for the same request"
    assert r.prompt_eval_count == want["prompt_tokens"]
    assert r.eval_count == want["completion_tokens"]
    assert r.done_reason == want["finish_reason"]
    assert isinstance(r.total_duration, int) and r.total_duration > 0
    assert isinstance(r.eval_duration, int) and r.eval_duration > 0


def test_chat_stream(client):
    parts = list(client.chat(model=MODEL, messages=MESSAGES, options=OPTS, stream=True))
    want = ref(**REF)
    content = [p.message.content for p in parts if p.message.content]
    assert len(content) > 1, f"answer not streamed: {len(content)} content chunks"
    assert "".join(content) == want["text"]
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    last = parts[-1]
    assert last.done_reason == want["finish_reason"]
    assert last.prompt_eval_count == want["prompt_tokens"]
    assert last.eval_count == want["completion_tokens"]


def test_num_predict_length(client):
    r = client.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0, "num_predict": 5})
    assert r.done_reason == "length"
    assert r.eval_count == 5
    parts = list(client.chat(model=MODEL, messages=MESSAGES, stream=True,
                             options={"temperature": 0, "num_predict": 5}))
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 5


def test_stop(client):
    full = ref(temperature=0, max_tokens=40)["text"]
    stop, before = pick_stop(full)
    r = client.chat(model=MODEL, messages=MESSAGES, options={"temperature": 0, "num_predict": 40, "stop": [stop]})
    assert r.done_reason == "stop"
    assert stop not in r.message.content
    assert r.message.content == before, f"stop {stop!r}: got {r.message.content!r}, want {before!r}"
    # streamed too
    parts = list(client.chat(model=MODEL, messages=MESSAGES, stream=True,
                             options={"temperature": 0, "num_predict": 40, "stop": [stop]}))
    assert "".join(p.message.content for p in parts) == before


def test_seed_and_temperature(client):
    def text(**o):
        return client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 24, **o}).message.content

    # temperature 0 is greedy: the seed does not matter and the answer repeats
    g1, g2 = text(temperature=0, seed=1), text(temperature=0, seed=2)
    assert g1 == g2
    # temperature 1: the same seed repeats, another seed (almost surely) differs
    a, b, c = text(temperature=1.0, seed=11), text(temperature=1.0, seed=11), text(temperature=1.0, seed=12)
    assert a == b, "same seed at temperature 1 gave different text"
    assert a != c, "different seeds gave the same text: seed not passed on?"
    assert a != g1, "temperature 1 gave the greedy text: temperature not passed on?"
    # and it is what llama-server itself gives for that seed
    assert a == ref(temperature=1.0, seed=11, max_tokens=24)["text"]


def test_generate(client):
    r = client.generate(model=MODEL, prompt=PROMPT, options=OPTS)
    want = ref(**REF)
    assert r.response, "empty answer"
    assert r.done is True and r.done_reason == want["finish_reason"]
    # /api/generate with a plain prompt runs on the upstream's chat endpoint, as a user turn
    assert r.response == want["text"]
    assert r.prompt_eval_count == want["prompt_tokens"]
    assert r.eval_count == want["completion_tokens"]
    parts = list(client.generate(model=MODEL, prompt=PROMPT, options=OPTS, stream=True))
    chunks = [p.response for p in parts if p.response]
    assert len(chunks) > 1
    assert "".join(chunks) == want["text"]
    assert parts[-1].done and parts[-1].eval_count == want["completion_tokens"]


def test_generate_raw(client):
    prompt = "The lighthouse keeper climbed the stairs and"
    r = client.generate(model=MODEL, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": 12})
    want = llama_completion(prompt, temperature=0, max_tokens=12)
    assert r.response and r.response == want["choices"][0]["text"]
    assert r.prompt_eval_count == want["usage"]["prompt_tokens"]
    assert r.eval_count == want["usage"]["completion_tokens"] == 12
    assert r.done_reason == "length"


def test_format_json_schema(client):
    msgs = [{"role": "user", "content": "Describe a box as JSON."}]
    r = client.chat(model=MODEL, messages=msgs, format=SCHEMA, options={"temperature": 0, "num_predict": 64})
    check_schema(json.loads(r.message.content))
    # format: "json" -> JSON mode; the output must parse as a JSON object
    r = client.chat(model=MODEL, messages=msgs, format="json", options={"temperature": 0, "num_predict": 64})
    if r.done_reason == "stop":
        assert isinstance(json.loads(r.message.content), dict)
    else:  # a base model may write one long string until the limit: it must still be JSON so far
        assert r.message.content.lstrip().startswith("{")


def test_list_show_ps(client):
    client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 1})
    names = [m.model for m in client.list().models]
    assert f"{MODEL}:latest" in names
    meta = _http.get(f"{LLAMA}/v1/models").json()["data"][0]["meta"]
    s = client.show(MODEL)
    assert "completion" in (s.capabilities or [])
    ctx = [v for k, v in (s.modelinfo or {}).items() if k.endswith(".context_length")]
    assert ctx == [meta["n_ctx_train"]], f"context_length {ctx}, llama.cpp reports {meta['n_ctx_train']}"
    running = [m.model for m in client.ps().models]
    assert any(n.split(":")[0] == MODEL for n in running), running


def test_embed():
    c = ollama.Client(host=D_EMBED, timeout=120)
    texts = ["the sea at night", "a lamp in the window"]
    r = c.embed(model=EMBED_MODEL, input=texts)
    assert len(r.embeddings) == 2
    assert [len(e) for e in r.embeddings] == [EMBED_DIM, EMBED_DIM]
    for e in r.embeddings:
        assert abs(norm(e) - 1.0) < 1e-3, "Ollama's /api/embed vectors are L2-normalised"
    direct = llama_embed(texts)
    for got, want in zip(r.embeddings, direct):
        assert cosine(got, want) > 0.9999
    assert cosine(r.embeddings[0], r.embeddings[1]) < 0.9999, "two texts, one vector?"
    legacy = c.embeddings(model=EMBED_MODEL, prompt=texts[0])
    assert len(legacy.embedding) == EMBED_DIM
    assert cosine(legacy.embedding, direct[0]) > 0.9999


def test_durations_stream(client):
    """Ollama clients show eval_count / eval_duration as tokens per second."""
    last = list(client.chat(model=MODEL, messages=MESSAGES, stream=True, options={"num_predict": 16}))[-1]
    assert last.eval_count == 16
    rate = last.eval_count / last.eval_duration * 1e9
    assert rate < 2000, f"eval rate {rate:.0f} tok/s (llama.cpp does ~25 here)"
    assert last.prompt_eval_duration > 0 and last.total_duration >= last.prompt_eval_duration + last.eval_duration


def test_durations_non_stream(client):
    r = client.chat(model=MODEL, messages=MESSAGES, options={"num_predict": 16})
    assert r.eval_count == 16
    rate = r.eval_count / r.eval_duration * 1e9
    assert rate < 2000, (f"eval rate {rate:.0f} tok/s (llama.cpp does ~25 here): eval_duration={r.eval_duration} ns, "
                         f"prompt_eval_duration={r.prompt_eval_duration}, total_duration={r.total_duration}")


def test_upstream_error(client):
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "lighthouse " * 5000}],
                    options={"num_predict": 2})
    assert e.value.status_code == 400 and "context" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "lighthouse " * 5000}],
                    options={"num_predict": 2}, stream=True).__next__()
    assert e.value.status_code == 400 and "context" in e.value.error


def test_unknown_model(client):
    # /api/show already answers 404 for it ...
    with pytest.raises(ollama.ResponseError) as e:
        client.show("no-such-model")
    assert e.value.status_code == 404
    # ... and so does /api/chat (README: "a model no channel serves is `404 model 'NAME' not
    # found` before any upstream call"), although llama-server itself would accept any name
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=MESSAGES, options={"num_predict": 2})
    assert e.value.status_code == 404 and e.value.error == "model 'no-such-model' not found"
