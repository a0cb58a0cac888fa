"""The official Ollama Python client against diglot (Ollama frontend) in front of the fake OpenAI upstream.

Run by tests/clients.rs as `python ollama_sdk.py http://127.0.0.1:PORT`. The fake upstream answers
from fixtures/openai/**, chosen by the model name, so every expected value below comes from those
files. Prints one line per check and "ALL OK" at the end; exits non-zero at the first failure.
"""

import base64
import json
import math
import struct
import sys
import traceback
import zlib
from datetime import datetime, timezone
from pathlib import Path

from checks import check, eq, fail, ok
import ollama
from ollama import Client
from pydantic import BaseModel

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "openai"




def sse(model):
    """The JSON chunks of fixtures/openai/chat/MODEL.sse, without the [DONE] marker."""
    text = (FIXTURES / "chat" / f"{model}.sse").read_text()
    data = [frame[len("data: "):] for frame in text.split("\n\n") if frame.strip()]
    return [json.loads(d) for d in data if d != "[DONE]"]


def deltas(model, field):
    """The concatenated `field` of every delta in the fixture stream."""
    return "".join(
        c["choices"][0]["delta"].get(field) or "" for c in sse(model) if c.get("choices")
    )


def usage(model):
    return [c["usage"] for c in sse(model) if c.get("usage")][-1]


def fixture_calls(model):
    """The fixture's tool-call fragments joined per index: [(name, arguments dict)]."""
    calls = {}
    for c in sse(model):
        for piece in (c.get("choices") or [{}])[0].get("delta", {}).get("tool_calls") or []:
            name, args = calls.get(piece["index"], ("", ""))
            function = piece.get("function", {})
            calls[piece["index"]] = (name + (function.get("name") or ""), args + (function.get("arguments") or ""))
    return [(name, json.loads(args)) for _, (name, args) in sorted(calls.items())]


def user(text):
    return [{"role": "user", "content": text}]


def red_png():
    """A 1x1 red PNG, built by hand."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, RGB
    idat = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def get_weather(city: str) -> str:
    """
    Current weather in a city.

    Args:
      city: The city to look up

    Returns:
      str: The weather
    """
    return "21 C"


def get_time(timezone: str) -> str:
    """
    Current time in a timezone.

    Args:
      timezone: An IANA timezone name

    Returns:
      str: The time
    """
    return "12:00"


def check_final(chunk, what):
    check(chunk.done is True, f"{what}: done is True, got {chunk.done!r}")
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_count", "eval_duration"):
        value = getattr(chunk, key)
        check(isinstance(value, int), f"{what}: {key} is an integer, got {value!r}")
    check(chunk.eval_duration > 0, f"{what}: eval_duration > 0, got {chunk.eval_duration!r}")


def calls_of(message):
    check(message.tool_calls, f"no tool_calls in {message!r}")
    return [(c.function.name, dict(c.function.arguments)) for c in message.tool_calls]


def main(host):
    client = Client(host=host, timeout=30)

    # 1. Plain chat, whole and streamed.
    text = deltas("oai-text", "content")
    used = usage("oai-text")
    check(text, "the oai-text fixture has content")
    answer = client.chat(model="oai-text", messages=user("Why is the sky blue?"))
    eq(answer.model, "oai-text", "model")
    eq(answer.message.role, "assistant", "role")
    eq(answer.message.content, text, "content")
    eq(answer.done_reason, "stop", "done_reason")
    eq((answer.prompt_eval_count, answer.eval_count), (used["prompt_tokens"], used["completion_tokens"]), "token counts")
    check(datetime.fromisoformat(answer.created_at.replace("Z", "+00:00")), f"created_at {answer.created_at!r}")
    check_final(answer, "whole chat")
    ok("chat: content, done_reason stop, prompt_eval_count/eval_count from the fixture's usage")

    chunks = list(client.chat(model="oai-text:latest", messages=user("Why is the sky blue?"), stream=True))
    check(len(chunks) > 1, f"more than one chunk, got {len(chunks)}")
    eq("".join(c.message.content or "" for c in chunks), text, "streamed content")
    eq([c.done for c in chunks], [False] * (len(chunks) - 1) + [True], "done flags")
    eq({c.model for c in chunks}, {"oai-text:latest"}, "streamed model names")
    last = chunks[-1]
    check_final(last, "last streamed chunk")
    eq(last.done_reason, "stop", "streamed done_reason")
    eq((last.prompt_eval_count, last.eval_count), (used["prompt_tokens"], used["completion_tokens"]), "streamed token counts")
    ok(f"chat(stream=True): {len(chunks)} chunks, joined text, done chunk last with integer metrics")

    # 2. Tools: Python functions in, whole calls with object arguments out, then the next turn.
    want_calls = fixture_calls("vllm-tools")
    eq(want_calls, [("get_weather", {"city": "Paris"}), ("get_time", {"timezone": "UTC"})], "fixture tool calls")
    tools = [get_weather, get_time]
    answer = client.chat(model="vllm-tools", messages=user("Weather in Paris and the time in UTC?"), tools=tools)
    eq(calls_of(answer.message), want_calls, "tool calls (name, arguments)")
    check(all(isinstance(c.function.arguments, dict) for c in answer.message.tool_calls), "arguments are objects")
    eq(answer.done_reason, "stop", "tools done_reason (Ollama never says tool_calls)")
    eq(answer.prompt_eval_count, usage("vllm-tools")["prompt_tokens"], "tools prompt_eval_count")
    ok("tools (Python functions): two calls with object arguments, done_reason stop")

    chunks = list(client.chat(model="vllm-tools", messages=user("Weather in Paris and the time in UTC?"), tools=tools, stream=True))
    with_calls = [c for c in chunks if c.message.tool_calls]
    eq([len(c.message.tool_calls) for c in with_calls], [1, 1], "tool calls per chunk")
    eq([calls_of(c.message)[0] for c in with_calls], want_calls, "streamed tool calls")
    check(chunks[-1].done, "the stream ends with a done chunk")
    ok("tools streamed: each call whole in its own chunk")

    turn = client.chat(
        model="oai-text",
        messages=[
            *user("Weather in Paris?"),
            answer.message,
            {"role": "tool", "tool_name": "get_weather", "content": "21 C"},
        ],
    )
    eq(turn.message.content, text, "answer after the tool result")
    ok("second turn: the assistant's tool_calls as returned plus a tool result by tool_name")

    # 3. An image in a message, as raw bytes (the client base64-encodes it).
    answer = client.chat(model="oai-vision", messages=[{"role": "user", "content": "What is this?", "images": [red_png()]}])
    eq(answer.message.content, deltas("oai-vision", "content"), "vision content")
    eq(answer.message.content, "A red square.", "vision content literal")
    eq(answer.prompt_eval_count, usage("oai-vision")["prompt_tokens"], "vision prompt_eval_count")
    ok("images: PNG bytes answered")

    answer = client.chat(
        model="oai-vision",
        messages=[{"role": "user", "content": "What is this?", "images": [base64.b64encode(red_png()).decode()]}],
    )
    eq(answer.message.content, "A red square.", "vision content from a base64 string")
    ok("images: a base64 string answered")

    # 4. Structured output with a pydantic schema.
    class Person(BaseModel):
        name: str
        age: int

    answer = client.chat(model="oai-json", messages=user("Who wrote the first program?"), format=Person.model_json_schema())
    eq(answer.message.content, deltas("oai-json", "content"), "json content")
    eq(Person.model_validate_json(answer.message.content), Person(name="Ada", age=36), "parsed Person")
    ok("format=Person.model_json_schema(): content validates as Person(name='Ada', age=36)")

    # 5. Thinking.
    thinking = deltas("vllm-reasoning", "reasoning")
    content = deltas("vllm-reasoning", "content")
    check(thinking and content, "the vllm-reasoning fixture has reasoning and content")
    for think in (True, "high"):
        answer = client.chat(model="vllm-reasoning", messages=user("hello"), think=think)
        eq(answer.message.thinking, thinking, f"thinking (think={think!r})")
        eq(answer.message.content, content, f"content (think={think!r})")
        ok(f"think={think!r}: message.thinking equals the fixture's reasoning, content follows")

    chunks = list(client.chat(model="vllm-reasoning", messages=user("hello"), think="high", stream=True))
    eq("".join(c.message.thinking or "" for c in chunks), thinking, "streamed thinking")
    eq("".join(c.message.content or "" for c in chunks), content, "streamed content after thinking")
    ok("think streamed: thinking chunks, then content")

    # 6. Generate, whole and streamed.
    answer = client.generate(model="oai-text", prompt="Why?")
    eq(answer.response, text, "generate response")
    eq(answer.done_reason, "stop", "generate done_reason")
    check_final(answer, "whole generate")
    chunks = list(client.generate(model="oai-text", prompt="Why?", system="Be brief.", stream=True))
    check(len(chunks) > 1, f"more than one generate chunk, got {len(chunks)}")
    eq("".join(c.response or "" for c in chunks), text, "streamed generate text")
    check_final(chunks[-1], "last generate chunk")
    ok(f"generate: whole and streamed ({len(chunks)} chunks)")

    # 7. Embeddings, L2-normalised like Ollama's.
    want = [d["embedding"] for d in json.loads((FIXTURES / "embeddings" / "oai-embed.json").read_text())["data"]]
    result = client.embed(model="oai-embed", input=["a", "b"])
    eq(len(result.embeddings), 2, "number of embeddings")
    for i, (got, raw) in enumerate(zip(result.embeddings, want)):
        eq(len(got), 8, f"embedding {i} length")
        norm = math.sqrt(sum(x * x for x in got))
        check(abs(norm - 1.0) <= 1e-5, f"embedding {i} L2 norm: got {norm!r}, want 1")
        raw_norm = math.sqrt(sum(x * x for x in raw))
        for j, (g, r) in enumerate(zip(got, raw)):
            check(abs(g - r / raw_norm) <= 1e-6, f"embedding[{i}][{j}]: got {g!r}, want {r / raw_norm!r}")
    ok("embed: two unit vectors proportional to the fixture's")

    # 8. Models: list, show, ps.
    listed = {m.model: m for m in client.list().models}
    for name in ("oai-text:latest", "gpt-4o:latest"):
        check(name in listed, f"{name} in list(): {sorted(listed)}")
        entry = listed[name]
        check(isinstance(entry.modified_at, datetime), f"{name} modified_at is a datetime: {entry.modified_at!r}")
        check(entry.details is not None, f"{name} has details")
    raw = {m["model"]: m for m in client._client.get("/api/tags").json()["models"]}
    eq(raw["oai-text:latest"].get("name"), "oai-text:latest", "name of oai-text in /api/tags")
    eq(raw["gpt-4o:latest"].get("name"), "gpt-4o:latest", "name of gpt-4o in /api/tags")
    ok(f"list: {len(listed)} models with :latest tags, modified_at and details")

    show = client.show("oai-text:latest")
    check("completion" in (show.capabilities or []), f"capabilities include completion: {show.capabilities!r}")
    check(show.modelinfo, "modelinfo present")
    arch = show.modelinfo.get("general.architecture")
    check(isinstance(arch, str) and arch, f"general.architecture: {show.modelinfo!r}")
    length = show.modelinfo.get(f"{arch}.context_length")
    check(isinstance(length, int) and length > 0, f"{arch}.context_length: {show.modelinfo!r}")
    ok(f"show: capabilities {show.capabilities}, {arch}.context_length {length}")

    running = {m.model: m for m in client.ps().models}
    check("oai-text:latest" in running, f"oai-text:latest in ps(): {sorted(running)}")
    entry = running["oai-text:latest"]
    eq(entry.name, "oai-text:latest", "ps name")
    check(entry.expires_at and entry.expires_at > datetime.now(timezone.utc), f"expires_at in the future: {entry.expires_at!r}")
    ok("ps: oai-text:latest in use, expires_at in the future")

    # 9. Errors.
    try:
        client.chat(model="ghost", messages=user("x"))
    except ollama.ResponseError as e:
        eq(e.status_code, 404, "unknown model status")
        check("not found" in e.error, f"'not found' in the error: {e.error!r}")
    else:
        fail("model 'ghost' did not raise ResponseError")
    ok("unknown model raises ResponseError 404 'not found'")

    message = next(c for c in sse("oai-error") if "error" in c)["error"]["message"]
    got = []
    try:
        for c in client.chat(model="oai-error", messages=user("x"), stream=True):
            got.append(c.message.content or "")
            check(not c.done, "no done chunk before the error")
    except ollama.ResponseError as e:
        eq(e.error, message, "mid-stream error")
    else:
        fail("the oai-error stream ended without a ResponseError")
    eq("".join(got), deltas("oai-error", "content"), "content before the mid-stream error")
    ok("mid-stream upstream error raises ResponseError while iterating")

    # 10. Pull.
    eq(client.pull("oai-text:latest").status, "success", "pull status")
    statuses = [p.status for p in client.pull("oai-text:latest", stream=True)]
    eq(statuses[-1:], ["success"], "last streamed pull status")
    ok("pull: success, whole and streamed")

    print("ALL OK", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail(f"usage: {sys.argv[0]} HOST")
    try:
        main(sys.argv[1])
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        fail("unexpected exception (traceback above)")
