"""LiteLLM's SDK -> diglot -> llama.cpp, as an OpenAI client (`openai/<model>`, api_base diglot/v1)
and as an Ollama client (`ollama_chat/<model>`, api_base diglot). litellm_driver.py makes the calls
in LiteLLM's own venv; the checks are here."""

import json

import pytest

from common import check_schema, ref

REF = dict(temperature=0, seed=7, max_tokens=16)
CLIENTS = ["openai", "ollama_chat"]


def get(results, name):
    r = results[name]
    assert not (isinstance(r, dict) and "error" in r), f"{name}: {r.get('trace') or r}"
    return r


@pytest.mark.parametrize("via", CLIENTS)
def test_chat(litellm_results, via):
    r, want = get(litellm_results, f"{via}_chat"), ref(**REF)
    assert r["content"] and r["content"] == want["text"]
    assert r["finish_reason"] == want["finish_reason"]
    assert r["usage"] == {"prompt_tokens": want["prompt_tokens"], "completion_tokens": want["completion_tokens"]}


@pytest.mark.parametrize("via", CLIENTS)
def test_stream(litellm_results, via):
    r, want = get(litellm_results, f"{via}_stream"), ref(**REF)
    assert r["content_chunks"] > 1 and r["text"] == want["text"]
    assert r["finish_reason"] == want["finish_reason"]
    # the real counts, not LiteLLM's own estimate (it makes one up when a stream carries none)
    assert r["usage"] == {"prompt_tokens": want["prompt_tokens"], "completion_tokens": want["completion_tokens"]}


@pytest.mark.parametrize("via", CLIENTS)
def test_max_tokens_length(litellm_results, via):
    r = get(litellm_results, f"{via}_length")
    assert r["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("via", CLIENTS)
def test_json_schema(litellm_results, via):
    check_schema(json.loads(get(litellm_results, f"{via}_json")["content"]))
