#!/usr/bin/env bash
# The browser test (run by .ci/run after `cargo test`): a real headless Chromium loads a
# page from another origin and calls diglot with fetch, as LobeChat, ChatGPT-Next-Web or
# an extension would. An allowed origin gets through the preflight and reads a stream as
# it comes; a foreign origin is refused; a text/plain POST (no preflight) is refused.
# diglot sits in front of the mock upstream (examples/mock_upstream.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/browser
BROWSER_HOME="$(bash $HERE/setup.sh | tail -n 1)"
cargo build --bin diglot --example mock_upstream >&2
BIN="${CARGO_TARGET_DIR:-target}/debug"

source "$HERE/lib.sh"

P_MOCK="$(free_port)"
"$BIN/examples/mock_upstream" --listen "127.0.0.1:$P_MOCK" --chunks 5 --delay-ms 50 \
  > "$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_MOCK/api/version"

# No DIGLOT_* from the caller's environment; no store.
P_DIGLOT="$(free_port)"
env $(compgen -e | grep '^DIGLOT_' | sed 's/^/-u /') DIGLOT_STORE__DATA_DIR= \
  DIGLOT_LOG__FORMAT=json "$BIN/diglot" --listen "127.0.0.1:$P_DIGLOT" \
  --target "http://127.0.0.1:$P_MOCK" > "$WORK/diglot.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_DIGLOT/api/version"

# The pages: a static server on another port. Served as 127.0.0.1 (an origin diglot
# allows by default) and as foreign.test (mapped to 127.0.0.1 inside Chromium).
P_PAGE="$(free_port)"
mkdir -p "$WORK/site"
echo '<!doctype html><title>diglot browser test</title>' > "$WORK/site/index.html"
python3 -m http.server "$P_PAGE" --bind 127.0.0.1 --directory "$WORK/site" > "$WORK/page.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_PAGE/index.html"

status=0
NODE_PATH="$BROWSER_HOME/node/node_modules" node $HERE/check.cjs \
  "http://127.0.0.1:$P_DIGLOT" "http://127.0.0.1:$P_PAGE" "http://foreign.test:$P_PAGE" || status=$?

# What diglot saw of the foreign page's no-preflight POST: refused with 403, never sent
# upstream (the mock logs nothing per request, so diglot's access lines decide).
if [ "$status" -eq 0 ]; then
  if ! grep '"target":"diglot::access"' "$WORK/diglot.log" | grep '"path":"/api/chat"' | grep -q '"status":403'; then
    echo "FAIL: diglot's log has no 403 for the foreign page's text/plain POST to /api/chat" >&2
    status=1
  fi
  if grep '"target":"diglot::access"' "$WORK/diglot.log" | grep '"path":"/api/chat"' | grep -q '"status":200'; then
    echo "FAIL: a foreign page's POST to /api/chat was answered" >&2
    status=1
  fi
fi
if [ "$status" -ne 0 ]; then
  echo "--- diglot log" >&2
  tail -n 40 "$WORK/diglot.log" >&2
  exit "$status"
fi
echo "browser test: ok"
