"""The official Anthropic Python SDK against diglot's Messages frontend in front of the fake Ollama upstream.

Run by tests/clients.rs as `python anthropic_sdk.py http://127.0.0.1:PORT`. The fake upstream answers
from fixtures/ollama/chat/MODEL.ndjson, chosen by the model name, so every expected value below comes
from those files. Prints one line per check and "ALL OK" at the end; exits non-zero at the first failure.
"""

import json
import sys
import traceback
from pathlib import Path

import anthropic
from checks import check, eq, fail, ok

FIXTURES = Path(__file__).resolve().parent.parent.parent / "fixtures" / "ollama" / "chat"


def lines(model):
    return [json.loads(l) for l in (FIXTURES / f"{model}.ndjson").read_text().splitlines() if l.strip()]


def text(model, field="content"):
    return "".join(l.get("message", {}).get(field) or "" for l in lines(model))


def usage(model):
    last = lines(model)[-1]
    return last["prompt_eval_count"], last["eval_count"]


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def main(base):
    # The SDK appends /v1/messages to the base URL, as Claude Code does with ANTHROPIC_BASE_URL.
    client = anthropic.Anthropic(base_url=base, api_key="unused-without-tokens", max_retries=0)

    message = client.messages.create(
        model="chat-text",
        max_tokens=256,
        system="You are terse.",
        messages=[{"role": "user", "content": "Why is the sky blue?"}],
    )
    eq(message.type, "message", "type")
    check(message.id.startswith("msg_"), f"id {message.id}")
    eq(message.model, "chat-text", "model as sent")
    eq(message.content[0].text, text("chat-text"), "text")
    eq(message.stop_reason, "end_turn", "stop_reason")
    eq((message.usage.input_tokens, message.usage.output_tokens), usage("chat-text"), "usage")
    ok("messages.create")

    with client.messages.stream(
        model="chat-text", max_tokens=256, messages=[{"role": "user", "content": "Why is the sky blue?"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    check(len(pieces) > 1, f"text came in pieces: {pieces}")
    eq("".join(pieces), text("chat-text"), "streamed text")
    eq(final.content[0].text, text("chat-text"), "final message text")
    eq(final.stop_reason, "end_turn", "final stop_reason")
    eq((final.usage.input_tokens, final.usage.output_tokens), usage("chat-text"), "final usage")
    ok("messages.stream")

    with client.messages.stream(
        model="chat-tools",
        max_tokens=256,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "Weather in Paris and Tokyo?"}],
    ) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    eq([(c.id, c.name, c.input) for c in calls],
       [("call_vnmov34f", "get_weather", {"city": "Paris"}), ("call_6sly0bao", "get_weather", {"city": "Tokyo"})],
       "tool calls, inputs accumulated from input_json_delta")
    eq(final.stop_reason, "tool_use", "tool stop_reason")
    ok("messages.stream with tools")

    answer = client.messages.create(
        model="chat-text",
        max_tokens=256,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris and Tokyo?"},
            {"role": "assistant", "content": [c.model_dump() for c in calls]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_vnmov34f", "content": "18 C"},
                {"type": "tool_result", "tool_use_id": "call_6sly0bao", "content": [{"type": "text", "text": "22 C"}]},
            ]},
        ],
    )
    eq(answer.content[0].text, text("chat-text"), "answer after tool results")
    ok("tool round trip")

    with client.messages.stream(
        model="chat-thinking",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "hello"}],
    ) as stream:
        final = stream.get_final_message()
    eq([b.type for b in final.content], ["thinking", "text"], "blocks")
    eq(final.content[0].thinking, text("chat-thinking", "thinking"), "thinking")
    eq(final.content[0].signature, "", "signature field present")
    eq(final.content[1].text, text("chat-thinking"), "text after thinking")
    ok("thinking")

    count = client.messages.count_tokens(
        model="chat-text", messages=[{"role": "user", "content": "Why is the sky blue?"}]
    )
    eq(count.input_tokens, usage("chat-text")[0], "count_tokens: Ollama's prompt evaluation")
    ok("messages.count_tokens")

    try:
        client.messages.create(model="no-such-model", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
        fail("an unknown model was answered")
    except anthropic.NotFoundError as e:
        eq(e.status_code, 404, "status")
        eq(e.body["error"]["type"], "not_found_error", "error type")
    ok("errors as the SDK's exception types")

    try:
        with client.messages.stream(
            model="chat-error", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            for _ in stream.text_stream:
                pass
        fail("a stream that failed upstream ended normally")
    except anthropic.APIStatusError as e:
        check("unexpected EOF" in str(e), f"the upstream's error reached the SDK: {e}")
    ok("a mid-stream failure raises in the SDK")

    models = client.models.list()
    check(any(m.id == "chat-text" for m in models.data), f"models: {[m.id for m in models.data]}")
    ok("models.list")

    print("ALL OK")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        print("FAIL: exception")
        sys.exit(1)
