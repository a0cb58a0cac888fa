"""openai-python, ollama-python and the anthropic SDK through diglot to the fake Anthropic upstream.

Run by tests/clients.rs as `python anthropic_upstream.py http://127.0.0.1:PORT`. diglot's upstream
is the fake speaking Anthropic's Messages, which answers from fixtures/anthropic/messages/MODEL.sse,
so every expected value below comes from those files. Prints one line per check and "ALL OK" at the
end; exits non-zero at the first failure.
"""

import json
import sys
import traceback

import anthropic
import ollama
import openai
from checks import check, eq, fail, ok

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}


def main(base):
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model="claude-text", messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hello"}])
    eq(answer.choices[0].message.content, "Hello! How can I help you today?", "openai: text")
    eq((answer.usage.prompt_tokens, answer.usage.completion_tokens), (25, 15), "openai: usage")
    eq(answer.choices[0].finish_reason, "stop", "openai: finish")
    ok("openai-python chat over Anthropic")

    stream = client.chat.completions.create(
        model="claude-tools", messages=[{"role": "user", "content": "Weather in SF?"}], tools=[WEATHER],
        stream=True, stream_options={"include_usage": True})
    text, arguments, finish, usage = "", "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    eq(text, "Okay, let me check the weather.", "openai: streamed text")
    eq(json.loads(arguments), {"location": "San Francisco, CA"}, "openai: streamed tool arguments")
    eq(finish, "tool_calls", "openai: finish")
    eq(usage.prompt_tokens, 472, "openai: usage of message_start")
    ok("openai-python streamed tool call over Anthropic")

    try:
        client.chat.completions.create(
            model="claude-overloaded", messages=[{"role": "user", "content": "hi"}])
        fail("a failed upstream answer was answered")
    except openai.APIStatusError as e:
        eq(e.status_code, 502, "openai: status of the upstream's failure")
    ok("openai-python sees an upstream failure as an error")

    o = ollama.Client(host=base)
    answer = o.chat(model="claude-thinking", think=True, messages=[{"role": "user", "content": "GCD of 1071 and 462?"}])
    eq(answer.message.content, "The greatest common divisor is 21.", "ollama: text")
    check(answer.message.thinking.startswith("I need to find the GCD"), f"ollama: thinking {answer.message.thinking!r}")
    ok("ollama-python chat with thinking over Anthropic")

    pieces = [part.message.content for part in o.chat(
        model="claude-text", messages=[{"role": "user", "content": "Hello"}], stream=True)]
    eq("".join(pieces), "Hello! How can I help you today?", "ollama: streamed text")
    answer = o.chat(model="claude-tools", messages=[{"role": "user", "content": "Weather in SF?"}], tools=[WEATHER])
    call = answer.message.tool_calls[0]
    eq((call.function.name, dict(call.function.arguments)), ("get_weather", {"location": "San Francisco, CA"}),
       "ollama: tool call")
    ok("ollama-python streamed text and tools over Anthropic")

    a = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
    answer = a.messages.create(model="claude-stop", max_tokens=100, stop_sequences=[", 5"],
                               messages=[{"role": "user", "content": "Count to ten"}])
    eq((answer.stop_reason, answer.stop_sequence), ("stop_sequence", ", 5"), "anthropic: stop sequence")
    with a.messages.stream(model="claude-stop", max_tokens=100, stop_sequences=[", 5"],
                           messages=[{"role": "user", "content": "Count to ten"}]) as stream:
        final = stream.get_final_message()
    eq((final.stop_reason, final.stop_sequence), ("stop_sequence", ", 5"), "anthropic: streamed stop sequence")
    ok("anthropic SDK sees the stop sequence the upstream matched")

    ask = {"role": "user", "content": "GCD of 1071 and 462?"}
    with a.messages.stream(model="claude-thinking", max_tokens=8000, messages=[ask],
                           thinking={"type": "enabled", "budget_tokens": 2000}) as stream:
        final = stream.get_final_message()
    thinking = final.content[0]
    eq((thinking.type, thinking.signature), ("thinking", "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"),
       "anthropic: the upstream's signature")
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    a.messages.create(
        model="claude-text", max_tokens=8000, thinking={"type": "enabled", "budget_tokens": 2000}, tools=[tool],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        messages=[ask, {"role": "assistant", "content": [
            thinking.model_dump(), {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "15"}]}])
    ok("anthropic SDK sends signed thinking back with a tool-use turn")

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
