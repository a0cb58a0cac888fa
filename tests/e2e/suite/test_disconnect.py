"""A client that hangs up mid-stream makes llama.cpp stop generating.

Each check asks for 1500 tokens (about a minute of work for llama-server on one thread), reads a
few chunks while llama-server's only slot is busy, closes the connection, and then requires:
the slot goes idle within seconds (GET /slots), a next request is answered promptly (with one
slot, it would otherwise queue behind the abandoned one), and llama-server decoded far fewer than
1500 tokens for the abandoned request (its /metrics counter)."""

import time

import ollama
import openai
import pytest

from common import D_CHAIN, D_CHAT, MESSAGES, MODEL, llama_chat, metric, slots_busy, wait_idle

LONG = 1500
PREDICTED = "llamacpp:tokens_predicted_total"


def check_cancelled(read_some_then_close):
    # llama-server adds a task's generated tokens to its /metrics counter when the slot is next
    # reused: a 1-token request first, so that the counter later moves by exactly 1 + the
    # abandoned task's tokens once the follow-up request has started.
    wait_idle()
    llama_chat(max_tokens=1)
    before = metric(PREDICTED)
    busy = read_some_then_close()
    assert busy, "llama-server was not generating while the client read the stream"
    idle_s = wait_idle(timeout=10)
    assert idle_s < 5, f"llama-server kept generating {idle_s:.1f}s after the client hung up"
    t0 = time.time()
    r = openai.OpenAI(base_url=f"{D_CHAT}/v1", api_key="x", max_retries=0).chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=2)
    assert r.choices[0].finish_reason == "length"
    assert time.time() - t0 < 10, "the next request waited behind the abandoned one"
    decoded = metric(PREDICTED) - before - 1
    print(f"abandoned request: {decoded:.0f} tokens decoded, slot idle {idle_s:.2f}s after the hang-up")
    assert 3 <= decoded < LONG / 3, f"llama-server decoded {decoded} of {LONG} tokens for the abandoned request"


@pytest.mark.parametrize("via", ["direct", "chain"])
def test_openai_python_hangup(via):
    base = {"direct": D_CHAT, "chain": D_CHAIN}[via]
    c = openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0)

    def go():
        s = c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=LONG, stream=True)
        n = 0
        for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                n += 1
            if n == 3:
                break
        busy = slots_busy()
        s.close()
        return busy

    check_cancelled(go)


@pytest.mark.parametrize("api", ["chat", "generate"])
def test_ollama_python_hangup(api):
    c = ollama.Client(host=D_CHAT)

    def go():
        opts = {"num_predict": LONG}
        if api == "chat":
            it = c.chat(model=MODEL, messages=MESSAGES, options=opts, stream=True)
        else:
            it = c.generate(model=MODEL, prompt=MESSAGES[0]["content"], options=opts, stream=True)
        for i, _ in enumerate(it):
            if i == 3:
                break
        busy = slots_busy()
        it.close()  # the generator's `with` block closes the HTTP response
        return busy

    check_cancelled(go)
