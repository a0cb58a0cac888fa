"""The official OpenAI Python SDK against diglot (OpenAI frontend) in front of the fake Ollama.

Run by tests/clients.rs as `python openai_sdk.py http://127.0.0.1:PORT/v1`. The fake upstream answers
from fixtures/ollama/**, chosen by the model name, so every expected value below comes from those
files. Prints one line per check and "ALL OK" at the end; exits non-zero at the first failure.
"""

import base64
import json
import struct
import sys
import traceback
import zlib
from pathlib import Path

from checks import check, eq, fail, ok
import openai
from openai import OpenAI
from pydantic import BaseModel

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "ollama"




def ndjson(path):
    return [json.loads(line) for line in (FIXTURES / path).read_text().splitlines()]


def user(text):
    return [{"role": "user", "content": text}]


def red_png():
    """A 1x1 red PNG, built by hand."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit, RGB
    idat = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then one red pixel
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


SKY = "The sky is blue because of Rayleigh scattering."
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
WANT_CALLS = [
    ("call_vnmov34f", "get_weather", {"city": "Paris"}),
    ("call_6sly0bao", "get_weather", {"city": "Tokyo"}),
]


def calls_of(message):
    check(message.tool_calls is not None, f"no tool_calls in {message!r}")
    return [(c.id, c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls]


def main(base_url):
    client = OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=30)

    # 1. Plain chat, not streamed.
    done = ndjson("chat/chat-text.ndjson")[-1]
    check(done["done"], "last chat-text fixture line is the done line")
    answer = client.chat.completions.create(model="chat-text", messages=user("Why is the sky blue?"))
    check(answer.id.startswith("chatcmpl-"), f"id {answer.id!r} starts with chatcmpl-")
    eq(answer.object, "chat.completion", "object")
    eq(answer.model, "chat-text", "model")
    eq(len(answer.choices), 1, "number of choices")
    eq(answer.choices[0].message.role, "assistant", "role")
    eq(answer.choices[0].message.content, SKY, "content")
    eq(answer.choices[0].finish_reason, "stop", "finish_reason")
    eq(answer.usage.prompt_tokens, done["prompt_eval_count"], "usage.prompt_tokens")
    eq(answer.usage.completion_tokens, done["eval_count"], "usage.completion_tokens")
    eq(answer.usage.total_tokens, done["prompt_eval_count"] + done["eval_count"], "usage.total_tokens")
    ok("chat.completions.create: content, finish_reason, usage from the fixture, chatcmpl- id")

    # 2. Streamed with include_usage.
    chunks = list(
        client.chat.completions.create(
            model="chat-text",
            messages=user("Why is the sky blue?"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    check(len(pieces) > 1, f"more than one content chunk, got {pieces!r}")
    eq("".join(pieces), SKY, "streamed text")
    eq({c.id for c in chunks}, {chunks[0].id}, "one id for all chunks")
    check(chunks[0].id.startswith("chatcmpl-"), f"chunk id {chunks[0].id!r}")
    check(all(c.object == "chat.completion.chunk" for c in chunks), "every chunk is a chat.completion.chunk")
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    eq(finishes, ["stop"], "finish reasons in the stream")
    last = chunks[-1]
    eq(last.choices, [], "choices of the usage chunk")
    check(last.usage is not None, "the last chunk carries usage")
    eq(
        (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens),
        (done["prompt_eval_count"], done["eval_count"], done["prompt_eval_count"] + done["eval_count"]),
        "streamed usage",
    )
    check(all(c.usage is None for c in chunks[:-1]), "only the last chunk carries usage")
    ok(f"chat.completions.create(stream=True): {len(pieces)} content chunks, one id, usage chunk last")

    # 3. The .stream() helper.
    with client.chat.completions.stream(model="chat-text", messages=user("Why is the sky blue?")) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    deltas = [e.delta for e in events if e.type == "content.delta"]
    check(len(deltas) > 1, f"several content.delta events, got {kinds}")
    eq("".join(deltas), SKY, "content.delta text")
    done_events = [e for e in events if e.type == "content.done"]
    eq([e.content for e in done_events], [SKY], "content.done")
    final = stream.get_final_completion()
    eq(final.choices[0].message.content, SKY, "final completion content")
    eq(final.choices[0].finish_reason, "stop", "final completion finish_reason")
    ok(f"chat.completions.stream helper: {len(deltas)} content.delta events, final completion")

    # 4. Parallel tool calls, whole and through the .stream() helper.
    answer = client.chat.completions.create(
        model="chat-tools", messages=user("Weather in Paris and Tokyo?"), tools=[WEATHER_TOOL]
    )
    choice = answer.choices[0]
    eq(choice.finish_reason, "tool_calls", "tools finish_reason")
    eq(calls_of(choice.message), WANT_CALLS, "tool calls (id, name, arguments)")
    check(all(c.type == "function" for c in choice.message.tool_calls), "tool call type is function")
    ok("tools: two parallel calls with the fixture ids, finish_reason tool_calls")

    with client.chat.completions.stream(
        model="chat-tools", messages=user("Weather in Paris and Tokyo?"), tools=[WEATHER_TOOL]
    ) as stream:
        events = list(stream)
    args_done = [(e.index, e.name, e.parsed_arguments or json.loads(e.arguments))
                 for e in events if e.type == "tool_calls.function.arguments.done"]
    eq(args_done, [(0, "get_weather", {"city": "Paris"}), (1, "get_weather", {"city": "Tokyo"})],
       "tool_calls.function.arguments.done events")
    final = stream.get_final_completion()
    eq(calls_of(final.choices[0].message), WANT_CALLS, "streamed tool calls after accumulation")
    eq(final.choices[0].finish_reason, "tool_calls", "streamed tools finish_reason")
    ok("tools via the stream helper: calls accumulated by index, same ids and arguments")

    # 5. An image as a data: URI.
    png = base64.b64encode(red_png()).decode()
    answer = client.chat.completions.create(
        model="chat-vision",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    )
    eq(answer.choices[0].message.content, "A red square.", "vision content")
    eq(answer.usage.prompt_tokens, ndjson("chat/chat-vision.ndjson")[-1]["prompt_eval_count"], "vision prompt_tokens")
    ok("image_url data: URI answered")

    # 6. Structured output: json_schema, then .parse() with pydantic.
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    answer = client.chat.completions.create(
        model="chat-json",
        messages=user("Who wrote the first program?"),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    eq(json.loads(answer.choices[0].message.content), {"name": "Ada", "age": 36}, "json_schema content")
    ok("response_format json_schema")

    class Person(BaseModel):
        name: str
        age: int

    parsed = client.chat.completions.parse(
        model="chat-json", messages=user("Who wrote the first program?"), response_format=Person
    )
    eq(parsed.choices[0].message.parsed, Person(name="Ada", age=36), "parsed Person")
    ok("chat.completions.parse with a pydantic model")

    # 7. Reasoning.
    thinking = "".join(line["message"].get("thinking", "") for line in ndjson("chat/chat-thinking.ndjson"))
    check(thinking, "the chat-thinking fixture has thinking")
    answer = client.chat.completions.create(model="chat-thinking", messages=user("hi"), reasoning_effort="high")
    message = answer.choices[0].message
    eq(message.content, "Hello! How can I help?", "thinking content")
    extra = message.model_extra or {}
    reasoning = extra.get("reasoning_content", getattr(message, "reasoning_content", None))
    check(reasoning, f"reasoning_content present and non-empty in {message!r}")
    eq(reasoning, thinking, "reasoning_content")
    eq(extra.get("reasoning", getattr(message, "reasoning", None)), thinking, "reasoning")
    ok("reasoning_effort: content plus reasoning_content/reasoning equal to the fixture's thinking")

    # 8. Embeddings, default encoding (the SDK asks for base64 and decodes it).
    want = json.loads((FIXTURES / "embed" / "embed-minilm.json").read_text())["embeddings"]
    result = client.embeddings.create(model="embed-minilm", input=["a", "b"])
    eq(len(result.data), 2, "number of embeddings")
    for i, (item, vector) in enumerate(zip(result.data, want)):
        eq(item.index, i, "embedding index")
        check(isinstance(item.embedding, list), f"embedding {i} decoded to a list, got {type(item.embedding)}")
        eq(len(item.embedding), 8, f"embedding {i} length")
        eq(len(vector), 8, f"fixture vector {i} length")
        for j, (got, exp) in enumerate(zip(item.embedding, vector)):
            check(abs(got - exp) <= 1e-7, f"embedding[{i}][{j}]: got {got!r}, want {exp!r}")
    eq(result.usage.prompt_tokens, 16, "embeddings usage.prompt_tokens")
    ok("embeddings (base64 by default) decode to the fixture vectors")

    # 9. Models.
    # The fake lists tags.json's models, then one per fixture it can answer for.
    ids = [m.id for m in client.models.list()]
    eq(ids[:4], ["llama3.2:latest", "qwen3:8b", "llava:7b", "all-minilm:latest"], "model ids")
    check("chat-text" in ids[4:], f"fixture models listed too: {ids}")
    eq(client.models.retrieve("qwen3:8b").id, "qwen3:8b", "retrieved model id")
    ok("models.list and models.retrieve")

    # 10. Errors.
    try:
        client.chat.completions.create(model="ghost", messages=user("x"))
    except openai.NotFoundError as e:
        eq(e.status_code, 404, "unknown model status")
        body = e.body if isinstance(e.body, dict) else {}
        body = body.get("error", body)
        eq(body.get("code"), "model_not_found", "unknown model error code")
        eq(e.code, "model_not_found", "NotFoundError.code")
    else:
        fail("model 'ghost' did not raise NotFoundError")
    ok("unknown model raises NotFoundError 404 model_not_found")

    got = []
    try:
        for c in client.chat.completions.create(model="chat-error", messages=user("x"), stream=True):
            if c.choices and c.choices[0].delta.content:
                got.append(c.choices[0].delta.content)
    except openai.APIError as e:
        check("unexpected EOF" in str(e), f"mid-stream error message mentions unexpected EOF: {e}")
    else:
        fail("the chat-error stream ended without an APIError")
    eq("".join(got), "The answer is", "content before the mid-stream error")
    ok("mid-stream upstream error raises APIError while iterating")

    # 11. n=2.
    answer = client.chat.completions.create(model="chat-text", messages=user("x"), n=2)
    eq([c.index for c in answer.choices], [0, 1], "choice indexes")
    eq([c.message.content for c in answer.choices], [SKY, SKY], "choice contents")
    ok("n=2 gives two choices")

    # 12. Legacy completions.
    answer = client.completions.create(model="gen-text", prompt="Tell me a story")
    eq(answer.choices[0].text, "Once upon a time", "completion text")
    eq(answer.choices[0].finish_reason, "stop", "completion finish_reason")
    check(answer.id.startswith("cmpl-"), f"completion id {answer.id!r}")
    ok("legacy completions.create")

    print("ALL OK", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail(f"usage: {sys.argv[0]} BASE_URL")
    try:
        main(sys.argv[1])
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        fail("unexpected exception (traceback above)")
