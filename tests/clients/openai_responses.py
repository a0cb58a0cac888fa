"""The official OpenAI Python SDK's Responses API against diglot in front of the fake Ollama.

Run by tests/clients.rs as `python openai_responses.py http://127.0.0.1:PORT/v1`, diglot having a
store. The fake upstream answers from fixtures/ollama/**, chosen by the model name, so every
expected value below comes from those files. Prints one line per check and "ALL OK" at the end;
exits non-zero at the first failure.
"""

import json
import sys
import traceback

from checks import check, eq, fail, ok
import openai
from openai import OpenAI

SKY = "The sky is blue because of Rayleigh scattering."
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def main(base):
    client = OpenAI(base_url=base, api_key="unused", max_retries=0)

    first = client.responses.create(model="chat-text", instructions="Be brief.", input="Why is the sky blue?")
    eq(first.object, "response", "object")
    eq(first.status, "completed", "status")
    eq(first.output_text, SKY, "output_text")
    eq(first.output[0].type, "message", "output item")
    eq(first.usage.input_tokens, 31, "input tokens")
    eq(first.usage.output_tokens, 7, "output tokens")
    eq(first.usage.total_tokens, 38, "total tokens")
    check(first.id.startswith("resp_"), f"id {first.id}")
    ok("responses.create: text")

    second = client.responses.create(model="chat-text", previous_response_id=first.id, input="And at sunset?")
    eq(second.previous_response_id, first.id, "previous_response_id")
    eq(client.responses.retrieve(second.id).output_text, SKY, "retrieved")
    items = client.responses.input_items.list(second.id)
    eq([i.content[0].text for i in items.data], ["And at sunset?"], "input items")
    ok("previous_response_id, retrieve, input_items")

    deleted = client.responses.delete(second.id)
    check(deleted is None or getattr(deleted, "deleted", True), f"deleted {deleted!r}")
    try:
        client.responses.retrieve(second.id)
        fail("a deleted response was found")
    except openai.NotFoundError:
        pass
    ok("delete")

    called = client.responses.create(model="chat-tools", input="Weather in Paris and Tokyo?", tools=[WEATHER])
    calls = [item for item in called.output if item.type == "function_call"]
    eq([(c.call_id, c.name, json.loads(c.arguments)) for c in calls],
       [("call_vnmov34f", "get_weather", {"city": "Paris"}), ("call_6sly0bao", "get_weather", {"city": "Tokyo"})], "calls")
    answered = client.responses.create(
        model="chat-text",
        previous_response_id=called.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "sunny"} for c in calls],
    )
    eq(answered.output_text, SKY, "answer after the tool results")
    ok("function call round trip")

    with client.responses.stream(model="chat-text", input="Why is the sky blue?") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    check(len(deltas) > 1, f"deltas {deltas}")
    eq("".join(deltas), SKY, "streamed text")
    eq(final.output_text, SKY, "final response")
    eq(final.status, "completed", "final status")
    ok("responses.stream")

    with client.responses.stream(model="chat-thinking", input="hello", reasoning={"effort": "low"}) as stream:
        thoughts = [e.delta for e in stream if e.type == "response.reasoning_summary_text.delta"]
        final = stream.get_final_response()
    check(thoughts, "reasoning deltas")
    eq(final.output[0].type, "reasoning", "reasoning item first")
    eq(final.output[0].summary[0].text, "".join(thoughts), "reasoning summary")
    ok("responses.stream: reasoning")

    streamed_calls = client.responses.create(model="chat-tools", input="Weather?", tools=[WEATHER], stream=True)
    done = [e.item for e in streamed_calls if e.type == "response.output_item.done"]
    eq([d.call_id for d in done], ["call_vnmov34f", "call_6sly0bao"], "streamed calls")
    ok("stream=True: function calls")

    try:
        client.responses.create(model="no-such-model", input="x")
        fail("an unknown model was answered")
    except openai.NotFoundError as e:
        eq(e.body["code"], "model_not_found", "error code")
    try:
        client.responses.create(model="chat-text", input="x", tools=[{"type": "web_search"}])
        fail("a built-in tool was accepted")
    except openai.BadRequestError as e:
        eq(e.body["param"], "tools[0].type", "error param")
    ok("errors")

    print("ALL OK", flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except SystemExit:
        raise
    except Exception:
        traceback.print_exc()
        fail("unexpected exception")
