"""Real tool calls: llama_cpp.server with --chat_format chatml-function-calling (the Gemma base model,
grammar-constrained) behind diglot, driven by openai-python and ollama-python.

What llama_cpp.server 0.3.36 itself can do (checked directly in `test_upstream_can`): a forced
function (`tool_choice: {"type":"function",...}`) streamed or not; `tool_choice: "auto"` only
non-streamed; with `tools` but no `tool_choice` it does not call tools at all. diglot sends
`tool_choice: "auto"` whenever tools go upstream without a choice, and sends OpenAI clients'
unstreamed requests upstream unstreamed, so OpenAI clients get real tool calls, forced or auto.

The Ollama side asks the same way: an Ollama client's unstreamed request goes upstream
unstreamed, with `tool_choice: "auto"` (Ollama has no tool_choice), so it gets a real tool call
(`test_ollama_tool_call`). Streamed, llama_cpp.server refuses an auto tool choice once the model
picks the tool: it raises "Automatic streaming tool choice is not supported" inside an already
started 200 event stream and closes it empty; the message reaches only its own log, and diglot
answers 502 "the upstream closed the stream before it finished" (`test_ollama_tool_call_stream`).

The checks through diglot expect the same function name and arguments, text or failure that
llama_cpp.server gives for the same request."""

import json
import time

import ollama
import openai
import pytest

from common import D_CHAIN_TOOLS, D_TOOLS, RUN_DIR, TOOLS, TOOLS_MODEL, _http

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."}]
FORCED = {"type": "function", "function": {"name": "get_weather"}}
SAMPLING = dict(temperature=0, max_tokens=48)


def direct(**body):
    r = _http.post(f"{TOOLS}/v1/chat/completions",
                   json={"model": TOOLS_MODEL, "messages": ASK, "tools": [TOOL], **SAMPLING, **body})
    assert r.status_code == 200, r.text
    return r.json()


def direct_stream(**body):
    """llama_cpp.server's streamed answer: {"status", "events" (parsed data: lines, without
    [DONE]), "done" ([DONE] seen), "text", "finish", "tool_calls" (tool-call deltas)}."""
    r = _http.post(f"{TOOLS}/v1/chat/completions",
                   json={"model": TOOLS_MODEL, "messages": ASK, "tools": [TOOL], **SAMPLING, **body,
                         "stream": True})
    data = [line[len("data: "):] for line in r.text.splitlines() if line.startswith("data: ")]
    events = [json.loads(d) for d in data if d != "[DONE]"]
    choices = [c for e in events for c in e.get("choices", [])]
    return {"status": r.status_code, "events": events, "done": "[DONE]" in data,
            "text": "".join(c["delta"].get("content") or "" for c in choices),
            "finish": [c["finish_reason"] for c in choices if c.get("finish_reason")],
            "tool_calls": [tc for c in choices for tc in c["delta"].get("tool_calls") or []]}


def call_of(answer):
    c = answer["choices"][0]
    assert c["finish_reason"] == "tool_calls", c
    tc = c["message"]["tool_calls"][0]["function"]
    return tc["name"], json.loads(tc["arguments"])


@pytest.fixture(scope="module")
def want():
    """(name, arguments) llama_cpp.server gives for ASK, and its usage."""
    forced, auto = direct(tool_choice=FORCED), direct(tool_choice="auto")
    assert call_of(forced) == call_of(auto)
    return {"call": call_of(forced), "usage": forced["usage"]}


def test_upstream_can(want):
    name, args = want["call"]
    assert name == "get_weather" and isinstance(args, dict) and args


def oa(base=D_TOOLS):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0, timeout=300)


def test_openai_forced_tool_call(want):
    r = oa().chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], tool_choice=FORCED, **SAMPLING)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1
    tc = c.message.tool_calls[0]
    assert tc.type == "function" and tc.id
    assert (tc.function.name, json.loads(tc.function.arguments)) == want["call"]


def test_openai_tool_call_usage(want):
    r = oa().chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], tool_choice=FORCED, **SAMPLING)
    assert r.usage.prompt_tokens == want["usage"]["prompt_tokens"]
    assert r.usage.completion_tokens == want["usage"]["completion_tokens"]


def test_openai_forced_tool_call_stream(want):
    chunks = list(oa().chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], tool_choice=FORCED,
                                               stream=True, **SAMPLING))
    deltas = [tc for ch in chunks for c in ch.choices for tc in (c.delta.tool_calls or [])]
    assert len(deltas) > 1, "tool call not streamed"
    assert {d.index for d in deltas} == {0}
    args = "".join(d.function.arguments or "" for d in deltas)
    assert json.loads(args) == want["call"][1]
    finishes = [c.finish_reason for ch in chunks for c in ch.choices if c.finish_reason]
    assert finishes == ["tool_calls"]


def test_openai_stream_helper_assembles_tool_call(want):
    """openai-python's own stream accumulator: OpenAI's stream format carries a tool call's id and
    name once, in its first delta; every later delta only adds arguments."""
    with oa().chat.completions.stream(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], tool_choice=FORCED,
                                      **SAMPLING) as s:
        final = s.get_final_completion()
    tc = final.choices[0].message.tool_calls[0]
    assert (tc.function.name, json.loads(tc.function.arguments)) == want["call"]


def test_openai_auto_tool_call(want):
    r = oa().chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], tool_choice="auto", **SAMPLING)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls", c.message
    assert (c.message.tool_calls[0].function.name, json.loads(c.message.tool_calls[0].function.arguments)) \
        == want["call"]


def test_openai_tool_result_round_trip(want):
    name, args = want["call"]
    msgs = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"temp_c": 21})},
    ]
    # llama_cpp.server accepts this history with content "" (it rejects content null)
    assert _http.post(f"{TOOLS}/v1/chat/completions",
                      json={"model": TOOLS_MODEL, "messages": msgs, "max_tokens": 4}).status_code == 200
    r = oa().chat.completions.create(model=TOOLS_MODEL, messages=msgs, temperature=0, max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")


REFUSAL = "Automatic streaming tool choice is not supported"


def test_ollama_tool_call(want):
    """An Ollama client's unstreamed tool call: the call llama_cpp.server gives for the same
    request, as Ollama sends it (arguments an object)."""
    c = ollama.Client(host=D_TOOLS, timeout=300)
    r = c.chat(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], options={"temperature": 0, "num_predict": 48})
    assert r.done and r.done_reason == "stop", r
    calls = r.message.tool_calls or []
    assert len(calls) == 1, r.message
    assert (calls[0].function.name, dict(calls[0].function.arguments)) == want["call"]
    assert r.eval_count == want["usage"]["completion_tokens"]


def test_ollama_tool_call_stream():
    """Streamed, llama_cpp.server refuses the auto tool choice once the model picks the tool. The
    refusal never reaches the wire (a 200 event stream closed empty, the ValueError only in its
    log), so the client must get a clear error rather than an empty answer: 502 naming the
    unfinished upstream stream."""
    ref = direct_stream(tool_choice="auto")
    assert ref["status"] == 200 and not ref["events"] and not ref["done"], \
        f"llama_cpp.server no longer refuses a streamed auto tool choice: {ref}"
    log = RUN_DIR / "llama-tools.log"
    refusals = log.read_text(errors="replace").count(REFUSAL)
    c = ollama.Client(host=D_TOOLS, timeout=300)
    with pytest.raises(ollama.ResponseError) as e:
        r = list(c.chat(model=TOOLS_MODEL, messages=ASK, tools=[TOOL], stream=True,
                        options={"temperature": 0, "num_predict": 48}))
        pytest.fail(f"diglot answered instead of failing: {r}")
    assert e.value.status_code == 502, e.value
    assert e.value.error == "the upstream closed the stream before it finished"
    # the cause, as llama_cpp.server logged it (uvicorn writes the traceback right away)
    for _ in range(50):
        if log.read_text(errors="replace").count(REFUSAL) > refusals:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"no new {REFUSAL!r} in {log}")


def test_ollama_tool_result_round_trip(want):
    name, args = want["call"]
    c = ollama.Client(host=D_TOOLS, timeout=300)
    msgs = ASK + [
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": args}}]},
        {"role": "tool", "tool_name": name, "content": json.dumps({"temp_c": 21})},
    ]
    r = c.chat(model=TOOLS_MODEL, messages=msgs, options={"temperature": 0, "num_predict": 4})
    assert r.done


# what diglot's Ollama backend adds for a named tool_choice (README; src/protocol/ollama/client.rs)
FORCE_HINT = {"role": "system", "content": "You must answer by calling the tool `get_weather`."}


def test_chain_forced_tool_call():
    """diglot (OpenAI frontend) -> diglot (Ollama frontend) -> llama_cpp.server: all four halves.
    Ollama cannot force a tool: the first hop sends only the named tool plus a system instruction
    to call it; the second hop sends `tool_choice: "auto"`, unstreamed as the client asked. The
    chain must report exactly what llama_cpp.server answers to that last request: the same call,
    or the same text (README: "The model may still answer in text")."""
    ref = direct(messages=[FORCE_HINT] + ASK, tool_choice="auto")["choices"][0]
    r = oa(D_CHAIN_TOOLS).chat.completions.create(model=TOOLS_MODEL, messages=ASK, tools=[TOOL],
                                                  tool_choice=FORCED, **SAMPLING)
    c = r.choices[0]
    if ref["finish_reason"] == "tool_calls":
        assert c.finish_reason == "tool_calls" and len(c.message.tool_calls) == 1, c
        f = c.message.tool_calls[0].function
        want = ref["message"]["tool_calls"][0]["function"]
        assert (f.name, json.loads(f.arguments)) == (want["name"], json.loads(want["arguments"]))
    else:
        assert c.finish_reason == "stop" and not c.message.tool_calls, c
        assert (c.message.content or "") == (ref["message"]["content"] or "")
