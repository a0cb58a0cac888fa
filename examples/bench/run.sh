#!/usr/bin/env bash
# diglot's benchmark: overhead, streaming throughput and memory, side by side with
# direct calls, an nginx hop and LiteLLM's proxy, all against one mock upstream.
#
#   examples/bench/run.sh            full run (release build, ~15 min on 2 cores)
#   examples/bench/run.sh --smoke    seconds per scenario, debug binaries; CI runs this
#
# Everything it installs lives outside the repository, under
# ${DIGLOT_BENCH_HOME:-~/.cache/diglot/bench}, and is reused when present:
#   bin/oha          oha (pinned) from crates.io, `cargo install --locked`
#   venv-litellm/    litellm[proxy] (pinned, every dependency constrained) from PyPI
#   nginx            Debian's nginx-light, only when no `nginx` is on PATH; it is always
#                    run as our own foreground process with its own prefix and config.
#   postgresql, redis-server   Debian's, by tests/services/setup.sh, for the fleet row (G).
# The orchestration (ports, processes, measuring, the report) is bench.py next to this file;
# extra arguments are passed to it (see `bench.py --help`).
set -euo pipefail

# Everything is in main(), read whole before it runs, so editing this file during a run
# (a full run takes a quarter of an hour) cannot change what the running copy does.
main() {
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
BENCH_HOME="${DIGLOT_BENCH_HOME:-$HOME/.cache/diglot/bench}"
OHA_VERSION=1.16.0
LITELLM_PIN="litellm[proxy]==1.102.4"

SMOKE=0
for arg in "$@"; do [ "$arg" = "--smoke" ] && SMOKE=1; done

say() { echo "bench: $*" >&2; }
mkdir -p "$BENCH_HOME"
# Two runs at once would fight over ports' CPU and over the installs; the second waits.
exec 9>"$BENCH_HOME/.lock"
flock 9

# ---- oha: the load generator (open-loop with latency correction, JSON output)
OHA="$BENCH_HOME/bin/oha"
if [ ! -x "$OHA" ] || [ "$("$OHA" --version 2>/dev/null)" != "oha $OHA_VERSION" ]; then
  say "installing oha $OHA_VERSION into $BENCH_HOME (cargo install, a few minutes once)"
  cargo install oha --version "$OHA_VERSION" --locked --root "$BENCH_HOME" >&2
fi

# ---- nginx: the floor any HTTP proxy hop costs
NGINX="$(command -v nginx || true)"
if [ -z "$NGINX" ] && [ -x /usr/sbin/nginx ]; then NGINX=/usr/sbin/nginx; fi
if [ -z "$NGINX" ]; then
  say "installing nginx from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  # The package lists may be missing on a fresh machine; nginx-light is the smallest build.
  apt-get install -y -q nginx-light >&2 || { apt-get update -q >&2 && apt-get install -y -q nginx-light >&2; } \
    || apt-get install -y -q nginx >&2 || true
  NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
  # The package's own service must not keep running on port 80 after the install.
  if [ -f /run/nginx.pid ] && [ "$(cat /proc/"$(cat /run/nginx.pid)"/comm 2>/dev/null)" = nginx ]; then
    "$NGINX" -s quit >&2 || true
  fi
fi
[ -x "$NGINX" ] || { say "nginx is not available; the nginx rows will be skipped"; NGINX=""; }

# ---- PostgreSQL and Redis for the fleet row (G), from Debian's packages; run as our own
# processes by bench.py.
bash "$REPO/tests/services/setup.sh" >&2 || say "PostgreSQL or Redis could not be installed; the G rows will be skipped"

# ---- LiteLLM's proxy in its own venv. Every transitive dependency is pinned by
# constraints-litellm.txt (a pip freeze of a venv that was verified on this machine kind).
LITELLM_VENV="$BENCH_HOME/venv-litellm"
LITELLM_WANT="$LITELLM_PIN $(sha256sum "$HERE/constraints-litellm.txt" | cut -c1-16)"
LITELLM_OK=1
if [ "$(cat "$LITELLM_VENV/.stamp" 2>/dev/null)" != "$LITELLM_WANT" ]; then
  say "installing $LITELLM_PIN into $LITELLM_VENV (about a minute once)"
  rm -rf "$LITELLM_VENV"
  if python3 -m venv "$LITELLM_VENV" \
    && "$LITELLM_VENV/bin/pip" install -q --disable-pip-version-check \
         -c "$HERE/constraints-litellm.txt" "$LITELLM_PIN" >&2; then
    echo "$LITELLM_WANT" > "$LITELLM_VENV/.stamp"
  else
    LITELLM_OK=0
  fi
fi
if [ "$LITELLM_OK" = 0 ]; then
  # A full run must compare with LiteLLM; a smoke run only checks that diglot's rows work.
  if [ "$SMOKE" = 1 ]; then
    say "WARNING: litellm could not be installed; the smoke run goes on without its rows"
  else
    say "litellm could not be installed (see above)"; exit 1
  fi
fi

# ---- diglot and the mock. The full run measures release builds; the smoke run uses the
# debug ones, which `cargo test` has already built, so in CI this build is a no-op and the
# smoke run costs seconds, not a release build.
cd "$REPO"
if [ "$SMOKE" = 1 ]; then
  PROFILE_DIR="${CARGO_TARGET_DIR:-$REPO/target}/debug"
  cargo build --bin diglot --example mock_upstream --example bare_proxy >&2
else
  PROFILE_DIR="${CARGO_TARGET_DIR:-$REPO/target}/release"
  cargo build --release --bin diglot --example mock_upstream --example bare_proxy >&2
fi

# 10,000 open streams need two sockets each in diglot; take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LITELLM_ARG=()
[ "$LITELLM_OK" = 1 ] && LITELLM_ARG=(--litellm "$LITELLM_VENV/bin/litellm")
exec python3 "$HERE/bench.py" \
  --repo "$REPO" \
  --diglot "$PROFILE_DIR/diglot" \
  --mock "$PROFILE_DIR/examples/mock_upstream" \
  --bare "$PROFILE_DIR/examples/bare_proxy" \
  --oha "$OHA" \
  ${NGINX:+--nginx "$NGINX"} \
  "${LITELLM_ARG[@]}" \
  --work "$BENCH_HOME/run" \
  "$@"
}

main "$@"
