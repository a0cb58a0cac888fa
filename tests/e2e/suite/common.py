"""Helpers of the end-to-end suite (run by tests/e2e/run.sh).

Every check talks to real servers: llama.cpp's llama-server and llama_cpp.server serving the
Gemma 3 270M *base* model (nonsense text, real protocol) behind diglot. Assertions are on protocol
facts, and where numbers are involved they are compared with what llama.cpp itself answers for the
same request sent to it directly.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from pathlib import Path

import httpx

# ---- where things are (set by run.sh) ----------------------------------------------------
LLAMA = os.environ["E2E_LLAMA_URL"]          # native llama-server, chat model
EMBED = os.environ["E2E_EMBED_URL"]          # native llama-server, --embeddings --pooling mean
TOOLS = os.environ["E2E_TOOLS_URL"]          # llama_cpp.server --chat_format chatml-function-calling
D_CHAT = os.environ["E2E_DIGLOT_CHAT"]       # diglot --target LLAMA
D_EMBED = os.environ["E2E_DIGLOT_EMBED"]     # diglot --target EMBED
D_TOOLS = os.environ["E2E_DIGLOT_TOOLS"]     # diglot --target TOOLS
D_CHAIN = os.environ["E2E_DIGLOT_CHAIN"]     # diglot --upstream D_CHAT (Ollama upstream)
D_CHAIN_EMBED = os.environ["E2E_DIGLOT_CHAIN_EMBED"]  # diglot --upstream D_EMBED
D_CHAIN_TOOLS = os.environ["E2E_DIGLOT_CHAIN_TOOLS"]  # diglot --upstream D_TOOLS
E2E_DIR = Path(os.environ["E2E_DIR"])
RUN_DIR = Path(os.environ["E2E_RUN_DIR"])

MODEL = "gemma-3-270m"
EMBED_MODEL = "gemma-embed"
TOOLS_MODEL = "gemma-tools"
EMBED_DIM = 640                              # n_embd of this GGUF

# A prompt on which the base model, greedy, writes at least a few dozen tokens.
PROMPT = "Write a short story about a lighthouse keeper."
MESSAGES = [{"role": "user", "content": PROMPT}]

# ---- direct llama.cpp calls (the reference) ---------------------------------------------
_http = httpx.Client(timeout=300)


def llama_chat(messages=MESSAGES, base=LLAMA, **body) -> dict:
    """POST /v1/chat/completions directly to llama.cpp; the parsed answer."""
    r = _http.post(f"{base}/v1/chat/completions",
                   json={"model": MODEL, "messages": messages, **body})
    assert r.status_code == 200, r.text
    return r.json()


def llama_completion(prompt, base=LLAMA, **body) -> dict:
    r = _http.post(f"{base}/v1/completions", json={"model": MODEL, "prompt": prompt, **body})
    assert r.status_code == 200, r.text
    return r.json()


def llama_embed(texts: list[str]) -> list[list[float]]:
    r = _http.post(f"{EMBED}/v1/embeddings", json={"model": EMBED_MODEL, "input": texts})
    assert r.status_code == 200, r.text
    return [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]


@functools.lru_cache(maxsize=None)
def _ref(key: str) -> dict:
    return _ref_uncached(**json.loads(key))


def ref(**sampling) -> dict:
    """Reference answer of llama-server for MESSAGES (cached per sampling fields)."""
    return dict(_ref(json.dumps(sampling, sort_keys=True)))


def _ref_uncached(**sampling) -> dict:
    """Reference answer of llama-server for MESSAGES with the given sampling fields:
    {"text", "prompt_tokens", "completion_tokens", "finish_reason"}."""
    j = llama_chat(**sampling)
    return {"text": j["choices"][0]["message"]["content"] or "",
            "prompt_tokens": j["usage"]["prompt_tokens"],
            "completion_tokens": j["usage"]["completion_tokens"],
            "finish_reason": j["choices"][0]["finish_reason"]}


def pick_stop(text: str) -> tuple[str, str]:
    """A stop string taken from the middle of `text` and the prefix expected before it: the
    first 4-character window starting at or after offset 8 whose first occurrence is there."""
    for k in range(8, len(text) - 4):
        s = text[k:k + 4]
        if s.strip() == s and s.strip() and text.find(s) == k:
            return s, text[:k]
    raise AssertionError(f"no usable stop string in {text!r}")


def slots_busy() -> bool:
    r = _http.get(f"{LLAMA}/slots")
    assert r.status_code == 200, r.text
    return any(s.get("is_processing") for s in r.json())


def metric(name: str) -> float:
    """A counter of llama-server's Prometheus /metrics, e.g. llamacpp:tokens_predicted_total."""
    r = _http.get(f"{LLAMA}/metrics")
    assert r.status_code == 200, r.text
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_idle(timeout=10.0) -> float:
    """Seconds until llama-server's slot is idle; fails after `timeout`."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not slots_busy():
            return time.time() - t0
        time.sleep(0.05)
    raise AssertionError(f"llama-server still generating {timeout}s later")


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / (norm(a) * norm(b))


# JSON schema used for structured output checks: small, so a base model cannot ramble.
SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"type": "string", "enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "ok": {"type": "boolean"},
    },
    "required": ["color", "count", "ok"],
    "additionalProperties": False,
}


def check_schema(obj):
    assert isinstance(obj, dict), obj
    assert set(obj) == {"color", "count", "ok"}, obj
    assert obj["color"] in ("red", "green", "blue"), obj
    assert isinstance(obj["count"], int) and not isinstance(obj["count"], bool) and 0 <= obj["count"] <= 99, obj
    assert isinstance(obj["ok"], bool), obj


