#!/usr/bin/env bash
# The admin web UI test (run by .ci/run after run.sh): Debian's headless Chromium, driven
# by playwright-core, uses the UI at /admin of a real diglot (a temporary store, an admin
# password from DIGLOT_ADMIN__PASSWORD) in front of the mock upstream, with a second mock
# upstream for a channel made in the UI. admin.cjs says what it checks; screenshots of
# every page go to target/ui/.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=tests/browser
BROWSER_HOME="$(bash $HERE/setup.sh | tail -n 1)"
cargo build --bin diglot --example mock_upstream >&2
BIN="${CARGO_TARGET_DIR:-target}/debug"
SHOTS="$PWD/target/ui"
mkdir -p "$SHOTS"

source "$HERE/lib.sh"

# Two fake upstreams: the profile's channel, and one the test adds in the UI.
P_MOCK="$(free_port)"
"$BIN/examples/mock_upstream" --listen "127.0.0.1:$P_MOCK" --chunks 12 --delay-ms 80 > "$WORK/mock.log" 2>&1 &
PIDS+=($!)
P_MOCK2="$(free_port)"
"$BIN/examples/mock_upstream" --listen "127.0.0.1:$P_MOCK2" --chunks 6 --delay-ms 150 > "$WORK/mock2.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_MOCK/api/version"
wait_for "http://127.0.0.1:$P_MOCK2/api/version"

PASSWORD="ui-test-$(date +%s)-$$"
P_DIGLOT="$(free_port)"
env $(compgen -e | grep '^DIGLOT_' | sed 's/^/-u /') DIGLOT_STORE__DATA_DIR="$WORK/store" \
  DIGLOT_ADMIN__PASSWORD="$PASSWORD" DIGLOT_LOG__FORMAT=json \
  "$BIN/diglot" --listen "127.0.0.1:$P_DIGLOT" --target "http://127.0.0.1:$P_MOCK" > "$WORK/diglot.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_DIGLOT/api/version"
# And one with no admin password at all (an empty store of its own).
P_NOPW="$(free_port)"
env $(compgen -e | grep '^DIGLOT_' | sed 's/^/-u /') DIGLOT_STORE__DATA_DIR="$WORK/store-nopw" \
  "$BIN/diglot" --listen "127.0.0.1:$P_NOPW" --target "http://127.0.0.1:$P_MOCK" > "$WORK/diglot-nopw.log" 2>&1 &
PIDS+=($!)
wait_for "http://127.0.0.1:$P_NOPW/api/version"

status=0
NODE_PATH="$BROWSER_HOME/node/node_modules" node $HERE/admin.cjs \
  "http://127.0.0.1:$P_DIGLOT" "$PASSWORD" "http://127.0.0.1:$P_MOCK2" "$SHOTS" "http://127.0.0.1:$P_NOPW" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- diglot log" >&2
  tail -n 40 "$WORK/diglot.log" >&2
  exit "$status"
fi
echo "admin UI browser test: ok (screenshots in target/ui/)"
