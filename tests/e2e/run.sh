#!/usr/bin/env bash
# diglot's end-to-end suite: real client SDKs -> diglot -> real llama.cpp servers.
#
#   tests/e2e/run.sh                 # install (cached), start servers, run every suite, stop
#   tests/e2e/run.sh -k ollama -x    # extra arguments go to pytest
#   DIGLOT_E2E_HOLD=1 tests/e2e/run.sh   # start everything and keep it up (Ctrl-C stops it)
#
# Installs into ${DIGLOT_E2E_HOME:-~/.cache/diglot/e2e} (see setup.sh; the first run builds
# llama.cpp, ~10 min on 2 cores, later runs reuse it). Every server listens on a free loopback
# port, runs one thread, and is stopped on exit, failure or interrupt. Logs of the run are kept
# in $DIGLOT_E2E_HOME/run/last/ (printed on failure).
#
# Topology (one llama.cpp build serves all three upstreams):
#   llama-server  "gemma-3-270m"  chat/completions, json_schema, usage in streams, /slots, /metrics
#   llama-server  "gemma-embed"   --embeddings --pooling mean (an embedding-only instance)
#   llama_cpp.server "gemma-tools" --chat_format chatml-function-calling (real tool calls)
#   diglot CHAT  --target llama-server chat     (Ollama and OpenAI frontends)
#   diglot EMBED --target llama-server embed
#   diglot TOOLS --target llama_cpp.server
#   diglot CHAIN --upstream diglot CHAT         (OpenAI frontend -> Ollama backend -> ... )
#   diglot CHAIN-EMBED --upstream diglot EMBED, diglot CHAIN-TOOLS --upstream diglot TOOLS
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
T_START=$(date +%s)
log() { printf '[e2e %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Settings that would redirect diglot or the clients elsewhere must not leak in.
unset OLLAMA_URL OLLAMA_HOST OPENAI_BASE_URL OPENAI_API_KEY DIGLOT_PROFILE \
  HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy || true
for v in $(env | sed -n 's/^\(DIGLOT_[A-Z0-9_]*\)=.*/\1/p'); do
  case "$v" in DIGLOT_E2E_*) ;; *) unset "$v" ;; esac
done
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
export LITELLM_LOCAL_MODEL_COST_MAP=True   # else `import litellm` tries to download a cost map
export LANGSMITH_TRACING=false LANGCHAIN_TRACING_V2=false
export PYTHONDONTWRITEBYTECODE=1

# ---- 0. stop everything we start, whatever happens ---------------------------------
PIDS=()     # processes to stop on exit
GROUPS_=()  # process groups (setsid) to stop on exit: setup and pytest, with their children
RUN=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pg in "${GROUPS_[@]}"; do kill -TERM -- "-$pg" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "$rc" -ne 0 ] && [ -n "$RUN" ]; then
    for f in "$RUN"/*.log; do
      [ -f "$f" ] || continue
      echo "---- last lines of $f" >&2; tail -15 "$f" >&2
    done
  fi
  log "stopped $(( ${#PIDS[@]} + ${#GROUPS_[@]} )) processes; total $(( $(date +%s) - T_START ))s; exit $rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- 1. install (idempotent) -----------------------------------------------------------
# in its own process group, in the background, so that an interrupt stops it and its pip/cmake
mkdir -p "${DIGLOT_E2E_HOME:-$HOME/.cache/diglot/e2e}"
SETUP_OUT=$(mktemp)
setsid bash "$HERE/setup.sh" >"$SETUP_OUT" &
GROUPS_+=("$!")
wait "$!" || { echo "e2e: setup failed" >&2; exit 1; }
GROUPS_=()
eval "$(sed 's/^/export /' "$SETUP_OUT")"; rm -f "$SETUP_OUT"
T_SETUP=$(date +%s)
log "setup done in $((T_SETUP - T_START))s"

# ---- 2. diglot itself --------------------------------------------------------------
DIGLOT="${DIGLOT_E2E_BIN:-$ROOT/target/debug/diglot}"
if [ -z "${DIGLOT_E2E_BIN:-}" ]; then
  # a no-op after `cargo test`; rebuilds if src/ changed since
  (cd "$ROOT" && cargo build --quiet --bin diglot)
fi
[ -x "$DIGLOT" ] || { echo "e2e: $DIGLOT missing" >&2; exit 1; }

# ---- 3. servers ----------------------------------------------------------------------
RUN="$E2E_HOME/run/last"
rm -rf "$RUN"; mkdir -p "$RUN"
# nine distinct free loopback ports (all held open while choosing, so none repeats)
read -r P_LLAMA P_EMBED P_TOOLS P_CHAT P_DEMBED P_DTOOLS P_CHAIN P_CEMBED P_CTOOLS < <("$E2E_VENV/bin/python" -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
# start NAME CMD... : background process, its output in $RUN/NAME.log
start() {
  local name=$1; shift
  "$@" >"$RUN/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
  echo "$!" > "$RUN/$name.pid"
}
# wait_ready NAME URL : until URL answers 200, or the process died, or 180 s
wait_ready() {
  local name=$1 url=$2 pid
  pid=$(cat "$RUN/$name.pid")
  "$E2E_VENV/bin/python" - "$url" "$pid" "$name" <<'EOF'
import os, sys, time, urllib.request
url, pid, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
deadline = time.time() + 180
while time.time() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(f"e2e: {name} exited during start-up")
    time.sleep(0.2)
sys.exit(f"e2e: {name} not ready at {url} after 180 s")
EOF
}

# diglot reads DIGLOT_* variables as configuration (older builds refused unknown ones), so our
# own DIGLOT_E2E_* settings do not reach it.
# (`env` execs diglot, so the PID recorded is diglot's own.)
NO_DIGLOT_ENV=()
for v in $(compgen -e); do case "$v" in DIGLOT_*) NO_DIGLOT_ENV+=(-u "$v") ;; esac; done
# No store: never the user's own data directory (and its tokens).
NO_DIGLOT_ENV+=(DIGLOT_STORE__DATA_DIR=)

THREADS=1   # on 2 cores, 2 threads is several times slower (OpenMP busy-waits)
start llama-chat "$E2E_LLAMA_SERVER_BIN" -m "$E2E_MODEL" --host 127.0.0.1 --port "$P_LLAMA" \
  --alias gemma-3-270m -t $THREADS -tb $THREADS -c 4096 -np 1 --no-ui --metrics --slots \
  --jinja --chat-template-file "$HERE/gemma-tools.jinja"
start llama-embed "$E2E_LLAMA_SERVER_BIN" -m "$E2E_MODEL" --host 127.0.0.1 --port "$P_EMBED" \
  --alias gemma-embed -t $THREADS -tb $THREADS -c 2048 -np 1 --no-ui --embeddings --pooling mean
start llama-tools env PYTHONPATH="$E2E_LLAMA_PY" "$E2E_VENV/bin/python" -m llama_cpp.server \
  --model "$E2E_MODEL" --host 127.0.0.1 --port "$P_TOOLS" --model_alias gemma-tools \
  --chat_format chatml-function-calling --n_ctx 2048 --n_threads $THREADS --n_threads_batch $THREADS
wait_ready llama-chat "http://127.0.0.1:$P_LLAMA/health"
wait_ready llama-embed "http://127.0.0.1:$P_EMBED/health"
wait_ready llama-tools "http://127.0.0.1:$P_TOOLS/v1/models"

start diglot-chat env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_CHAT" --target "http://127.0.0.1:$P_LLAMA" --debug
start diglot-embed env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_DEMBED" --target "http://127.0.0.1:$P_EMBED/v1" --debug
start diglot-tools env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_DTOOLS" --target "http://127.0.0.1:$P_TOOLS/v1" --debug
start diglot-chain env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_CHAIN" --upstream "http://127.0.0.1:$P_CHAT" --debug
start diglot-chain-embed env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_CEMBED" --upstream "http://127.0.0.1:$P_DEMBED" --debug
start diglot-chain-tools env "${NO_DIGLOT_ENV[@]}" "$DIGLOT" --listen "127.0.0.1:$P_CTOOLS" --upstream "http://127.0.0.1:$P_DTOOLS" --debug
wait_ready diglot-chat "http://127.0.0.1:$P_CHAT/api/version"
wait_ready diglot-embed "http://127.0.0.1:$P_DEMBED/api/version"
wait_ready diglot-tools "http://127.0.0.1:$P_DTOOLS/api/version"
wait_ready diglot-chain "http://127.0.0.1:$P_CHAIN/api/version"
wait_ready diglot-chain-embed "http://127.0.0.1:$P_CEMBED/api/version"
wait_ready diglot-chain-tools "http://127.0.0.1:$P_CTOOLS/api/version"
T_SERVERS=$(date +%s)
log "servers up in $((T_SERVERS - T_SETUP))s: llama-server :$P_LLAMA, embed :$P_EMBED, llama_cpp.server :$P_TOOLS; diglot chat :$P_CHAT embed :$P_DEMBED tools :$P_DTOOLS chain :$P_CHAIN"

# ---- 4. suites -----------------------------------------------------------------------
export E2E_LLAMA_URL="http://127.0.0.1:$P_LLAMA" E2E_EMBED_URL="http://127.0.0.1:$P_EMBED" \
  E2E_TOOLS_URL="http://127.0.0.1:$P_TOOLS" E2E_DIGLOT_CHAT="http://127.0.0.1:$P_CHAT" \
  E2E_DIGLOT_EMBED="http://127.0.0.1:$P_DEMBED" E2E_DIGLOT_TOOLS="http://127.0.0.1:$P_DTOOLS" \
  E2E_DIGLOT_CHAIN="http://127.0.0.1:$P_CHAIN" E2E_DIGLOT_CHAIN_EMBED="http://127.0.0.1:$P_CEMBED" \
  E2E_DIGLOT_CHAIN_TOOLS="http://127.0.0.1:$P_CTOOLS" E2E_RUN_DIR="$RUN" E2E_DIR="$HERE"
env | grep '^E2E_' | sed 's/^/export /' > "$RUN/env.sh"
if [ "${DIGLOT_E2E_HOLD:-0}" = 1 ]; then
  # for poking at the servers by hand: `source $RUN/env.sh` elsewhere; Ctrl-C stops everything
  log "holding the servers up (DIGLOT_E2E_HOLD=1); environment in $RUN/env.sh"
  while :; do sleep 3600 & PIDS+=("$!"); wait $! || true; done
fi
# pytest runs in the background, in its own process group (with the node and LiteLLM drivers it
# starts), so that a signal reaches the trap at once (bash runs traps only between commands).
set +e
(cd "$HERE" && exec setsid "$E2E_VENV/bin/python" -m pytest -p no:cacheprovider -q -rxXfE suite "$@") &
GROUPS_+=("$!")
wait "$!"
rc=$?
set -e
log "suites: $(( $(date +%s) - T_SERVERS ))s (exit $rc)"
exit $rc
