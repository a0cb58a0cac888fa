"""LiteLLM's SDK against diglot, run in its own venv (litellm pins openai<3) by
tests/e2e/suite/test_litellm.py, which holds the assertions. Prints one JSON object with what
LiteLLM returned, as an OpenAI client (`openai/<model>`, api_base = diglot/v1) and as an Ollama
client (`ollama_chat/<model>`, api_base = diglot)."""

import json
import os
import sys
import traceback

import litellm

D_CHAT = os.environ["E2E_DIGLOT_CHAT"]
MODEL = "gemma-3-270m"
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
CLIENTS = {
    "openai": {"model": f"openai/{MODEL}", "api_base": f"{D_CHAT}/v1", "api_key": "unused"},
    "ollama_chat": {"model": f"ollama_chat/{MODEL}", "api_base": D_CHAT},
}
out = {}


def step(name, fn):
    try:
        out[name] = fn()
    except Exception as e:  # recorded, asserted on by the test
        out[name] = {"error": repr(e), "trace": traceback.format_exc()[-2000:]}


def usage_of(u):
    return None if u is None else {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}


for label, kw in CLIENTS.items():
    base = dict(messages=MESSAGES, temperature=0, seed=7, max_tokens=16, **kw)

    def chat(base=base):
        r = litellm.completion(**base)
        c = r.choices[0]
        return {"content": c.message.content, "finish_reason": c.finish_reason, "usage": usage_of(r.usage)}

    def stream(base=base):
        text, n, finish, usage = "", 0, None, None
        for ch in litellm.completion(**base, stream=True, stream_options={"include_usage": True}):
            if getattr(ch, "usage", None):
                usage = usage_of(ch.usage)
            for c in ch.choices:
                if c.delta.content:
                    n += 1
                    text += c.delta.content
                if c.finish_reason:
                    finish = c.finish_reason
        return {"text": text, "content_chunks": n, "finish_reason": finish, "usage": usage}

    def length(base=base):
        r = litellm.completion(**{**base, "max_tokens": 4})
        return {"finish_reason": r.choices[0].finish_reason, "usage": usage_of(r.usage)}

    def json_mode(base=base):
        r = litellm.completion(**{**base, "max_tokens": 64,
                                  "messages": [{"role": "user", "content": "Describe a box as JSON."}]},
                               response_format={"type": "json_schema", "json_schema": {
                                   "name": "box", "schema": json.loads(os.environ["E2E_SCHEMA"])}})
        return {"content": r.choices[0].message.content, "finish_reason": r.choices[0].finish_reason}

    step(f"{label}_chat", chat)
    step(f"{label}_stream", stream)
    step(f"{label}_length", length)
    step(f"{label}_json", json_mode)

print(f"litellm {litellm.__version__ if hasattr(litellm, '__version__') else ''}", file=sys.stderr)
print(json.dumps(out))
