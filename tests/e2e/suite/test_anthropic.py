"""Anthropic direction: Messages requests (plain HTTP, as Claude Code sends them) -> diglot -> llama.cpp,
two ways:

* "direct": diglot (Messages frontend, --target llama-server) -> llama-server;
* "chain":  diglot#1 (Messages frontend, --upstream diglot#2) -> diglot#2 (Ollama frontend,
  --target llama-server) -> llama-server.

The answers are compared with llama-server's own answer to the same chat sent to it directly: the
same greedy text, the same token counts, the same stop."""

import json

import httpx
import pytest

from common import D_CHAIN, D_CHAT, MESSAGES, MODEL, pick_stop, ref

HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "unused"}
BODY = dict(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=24)
REF = dict(temperature=0, max_tokens=24)
STOPS = {"length": "max_tokens", "stop": "end_turn"}

_http = httpx.Client(timeout=300)


@pytest.fixture(scope="module", params=["direct", "chain"])
def base(request):
    return {"direct": D_CHAT, "chain": D_CHAIN}[request.param]


def events(text):
    """The (event, data) pairs of a Messages stream."""
    out = []
    for frame in text.split("\n\n"):
        if frame.strip():
            name, data = frame.split("\n", 1)
            out.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def usage(u):
    """(prompt, completion) tokens: Anthropic counts prompt tokens read from a cache apart."""
    return u["input_tokens"] + u.get("cache_read_input_tokens", 0), u["output_tokens"]


def test_message(base):
    r = _http.post(f"{base}/v1/messages", headers=HEADERS, json=BODY)
    assert r.status_code == 200, r.text
    m, want = r.json(), ref(**REF)
    assert m["type"] == "message" and m["role"] == "assistant" and m["model"] == MODEL
    assert [b["type"] for b in m["content"]] == ["text"]
    assert m["content"][0]["text"] == want["text"]
    assert m["stop_reason"] == STOPS[want["finish_reason"]]
    assert usage(m["usage"]) == (want["prompt_tokens"], want["completion_tokens"])


def test_stream(base):
    r = _http.post(f"{base}/v1/messages", headers=HEADERS, json={**BODY, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/event-stream"
    evs, want = events(r.text), ref(**REF)
    names = [n for n, _ in evs]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    texts = [e["delta"]["text"] for n, e in evs if n == "content_block_delta"]
    assert len(texts) > 1, "answer not streamed"
    assert "".join(texts) == want["text"]
    delta = evs[-2][1]
    assert delta["delta"]["stop_reason"] == STOPS[want["finish_reason"]]
    assert usage(delta["usage"]) == (want["prompt_tokens"], want["completion_tokens"])


def test_stop_sequence(base):
    full = ref(temperature=0, max_tokens=48)["text"]
    stop, before = pick_stop(full)
    r = _http.post(f"{base}/v1/messages", headers=HEADERS,
                   json={**BODY, "max_tokens": 48, "stop_sequences": [stop]})
    assert r.status_code == 200, r.text
    assert r.json()["content"][0]["text"] == before
    # llama-server's OpenAI-compatible answer says `stop` without naming the sequence.
    assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("end_turn", None)


def test_count_tokens_is_llama_servers_own_count():
    # diglot asks llama-server's /apply-template and /tokenize: the count the chat's usage reports.
    r = _http.post(f"{D_CHAT}/v1/messages/count_tokens", headers=HEADERS,
                   json={"model": MODEL, "messages": MESSAGES})
    assert r.status_code == 200, r.text
    assert r.headers["x-diglot-token-count"] == "upstream"
    assert r.json() == {"input_tokens": ref(**REF)["prompt_tokens"]}
