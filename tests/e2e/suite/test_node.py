"""ollama-js and openai-node -> diglot -> llama.cpp. node/clients.cjs makes the calls once (a session
fixture) and records what the clients returned; the checks are here."""

import json

import pytest

from common import EMBED_DIM, MODEL, check_schema, cosine, llama_embed, ref

REF = dict(temperature=0, seed=7, max_tokens=16)


def get(results, name):
    r = results[name]
    assert not (isinstance(r, dict) and "error" in r), f"{name}: {r}"
    return r


def test_ollama_js_chat(node_results):
    r, want = get(node_results, "ollama_chat"), ref(**REF)
    assert r["content"] and r["content"] == want["text"]
    assert r["role"] == "assistant" and r["done"] is True and r["done_reason"] == want["finish_reason"]
    assert r["prompt_eval_count"] == want["prompt_tokens"] and r["eval_count"] == want["completion_tokens"]


def test_ollama_js_chat_stream(node_results):
    r, want = get(node_results, "ollama_chat_stream"), ref(**REF)
    assert r["content_chunks"] > 1 and r["text"] == want["text"]
    assert r["done"] is True and r["done_reason"] == want["finish_reason"]
    assert r["prompt_eval_count"] == want["prompt_tokens"] and r["eval_count"] == want["completion_tokens"]


def test_ollama_js_num_predict(node_results):
    r = get(node_results, "ollama_num_predict")
    assert r == {"done_reason": "length", "eval_count": 4}


def test_ollama_js_generate(node_results):
    want = ref(**REF)
    r = get(node_results, "ollama_generate")
    assert r["response"] == want["text"] and r["done"] and r["done_reason"] == want["finish_reason"]
    assert r["prompt_eval_count"] == want["prompt_tokens"] and r["eval_count"] == want["completion_tokens"]
    s = get(node_results, "ollama_generate_stream")
    assert s["content_chunks"] > 1 and s["text"] == want["text"] and s["eval_count"] == want["completion_tokens"]


def test_ollama_js_format(node_results):
    check_schema(json.loads(get(node_results, "ollama_format")["content"]))


def test_ollama_js_list_show_ps(node_results):
    assert f"{MODEL}:latest" in get(node_results, "ollama_list")
    show = get(node_results, "ollama_show")
    assert "completion" in show["capabilities"]
    assert any(k.endswith(".context_length") for k in show["model_info"])
    assert any(n.split(":")[0] == MODEL for n in get(node_results, "ollama_ps"))


def test_ollama_js_embed(node_results):
    r = get(node_results, "ollama_embed")
    assert r["n"] == 2 and r["dims"] == [EMBED_DIM, EMBED_DIM]
    assert all(abs(n - 1) < 1e-3 for n in r["norms"])
    assert cosine(r["first"], llama_embed(["the sea at night"])[0]) > 0.9999


@pytest.mark.parametrize("name", ["ollama_abort", "openai_abort", "openai_chain_abort"])
def test_abort_stops_llama(node_results, name):
    r = get(node_results, name)
    assert r["chunks_before_abort"] >= 3 and r["busy_before"] is True, r
    assert r["idle_after_s"] is not None and r["idle_after_s"] < 5, r


@pytest.mark.parametrize("via", ["openai", "openai_chain"])
def test_openai_node_chat(node_results, via):
    want = ref(**REF)
    r = get(node_results, f"{via}_chat")
    assert r["object"] == "chat.completion" and r["content"] == want["text"] and r["content"]
    assert r["finish_reason"] == want["finish_reason"]
    assert r["usage"]["prompt_tokens"] == want["prompt_tokens"]
    assert r["usage"]["completion_tokens"] == want["completion_tokens"]
    s = get(node_results, f"{via}_stream")
    assert s["content_chunks"] > 1 and s["text"] == want["text"] and s["role_deltas"] == 1 and s["ids"] == 1
    assert s["finish_reason"] == want["finish_reason"]
    assert s["usage"]["prompt_tokens"] == want["prompt_tokens"]
    assert s["usage"]["completion_tokens"] == want["completion_tokens"]
    n = get(node_results, f"{via}_length")
    assert n["finish_reason"] == "length" and n["usage"]["completion_tokens"] == 4
    assert any(i.split(":")[0] == MODEL for i in get(node_results, f"{via}_models"))


def test_openai_node_embeddings(node_results):
    r = get(node_results, "openai_embeddings")
    assert r["n"] == 2 and r["dims"] == [EMBED_DIM, EMBED_DIM]
    assert cosine(r["first"], llama_embed(["the sea at night"])[0]) > 0.9999
