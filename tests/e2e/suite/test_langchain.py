"""Ollama direction: LangChain's ChatOllama / OllamaEmbeddings -> diglot (Ollama frontend) -> llama.cpp."""

from langchain_ollama import ChatOllama, OllamaEmbeddings

from common import (D_CHAT, D_EMBED, EMBED_DIM, EMBED_MODEL, MODEL, PROMPT, SCHEMA, check_schema,
                    cosine, llama_embed, pick_stop, ref)


def chat(**kw):
    return ChatOllama(model=MODEL, base_url=D_CHAT, **kw)


def test_invoke_and_usage():
    m = chat(temperature=0, seed=7, num_predict=24)
    r = m.invoke(PROMPT)
    want = ref(temperature=0, seed=7, max_tokens=24)
    assert r.content == want["text"] and r.content
    assert r.usage_metadata["input_tokens"] == want["prompt_tokens"]
    assert r.usage_metadata["output_tokens"] == want["completion_tokens"]
    assert r.response_metadata["done_reason"] == want["finish_reason"]
    assert r.response_metadata["model"].split(":")[0] == MODEL


def test_stream():
    m = chat(temperature=0, seed=7, num_predict=24)
    chunks = list(m.stream(PROMPT))
    texts = [c.content for c in chunks if c.content]
    assert len(texts) > 1
    want = ref(temperature=0, seed=7, max_tokens=24)
    assert "".join(texts) == want["text"]
    total = chunks[0]
    for c in chunks[1:]:
        total = total + c
    assert total.usage_metadata["output_tokens"] == want["completion_tokens"]
    assert total.usage_metadata["input_tokens"] == want["prompt_tokens"]


def test_num_predict_stop_seed_temperature():
    r = chat(temperature=0, num_predict=3).invoke(PROMPT)
    assert r.response_metadata["done_reason"] == "length"
    assert r.usage_metadata["output_tokens"] == 3

    full = ref(temperature=0, max_tokens=40)["text"]
    stop, before = pick_stop(full)
    r = chat(temperature=0, num_predict=40, stop=[stop]).invoke(PROMPT)
    assert r.content == before and r.response_metadata["done_reason"] == "stop"

    a = chat(temperature=1.0, seed=5, num_predict=20).invoke(PROMPT).content
    b = chat(temperature=1.0, seed=5, num_predict=20).invoke(PROMPT).content
    c = chat(temperature=1.0, seed=6, num_predict=20).invoke(PROMPT).content
    assert a == b and a != c


def test_structured_output():
    m = chat(temperature=0, num_predict=64).with_structured_output(SCHEMA, method="json_schema")
    check_schema(m.invoke("Describe a box as JSON."))


def test_embeddings():
    e = OllamaEmbeddings(model=EMBED_MODEL, base_url=D_EMBED)
    v = e.embed_query("the sea at night")
    assert len(v) == EMBED_DIM
    vs = e.embed_documents(["the sea at night", "a lamp in the window"])
    assert [len(x) for x in vs] == [EMBED_DIM, EMBED_DIM]
    direct = llama_embed(["the sea at night", "a lamp in the window"])
    assert cosine(vs[0], direct[0]) > 0.9999 and cosine(vs[1], direct[1]) > 0.9999
