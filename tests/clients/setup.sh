#!/usr/bin/env bash
# Installs the real client SDKs (and the OpenAPI validator) the tests drive, outside the repository:
# a Python venv and an npm folder under $DIGLOT_CLIENTS_HOME (default ~/.cache/diglot/clients).
# Idempotent: a stamp of the pinned versions skips work when nothing changed.
# Prints the home directory on its last line.
set -euo pipefail

HOME_DIR="${DIGLOT_CLIENTS_HOME:-$HOME/.cache/diglot/clients}"
PY_PINS="openai==3.54.0 ollama==0.6.3 anthropic==2.10.0 openapi-spec-validator==0.9.0"
NPM_PINS="ollama@0.6.4 @anthropic-ai/sdk@1.10.0 openai@6.30.1 ai@6.0.333 @ai-sdk/openai@3.0.141 zod@3.25.76"
STAMP="$HOME_DIR/.stamp"
WANT="py: $PY_PINS; npm: $NPM_PINS"

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.lock"
flock 9

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing test clients into $HOME_DIR: $WANT" >&2
  rm -rf "$HOME_DIR/venv" "$HOME_DIR/node"
  python3 -m venv "$HOME_DIR/venv"
  "$HOME_DIR/venv/bin/pip" install --quiet --disable-pip-version-check $PY_PINS >&2
  mkdir -p "$HOME_DIR/node"
  (cd "$HOME_DIR/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund $NPM_PINS >&2)
  echo "$WANT" > "$STAMP"
fi
echo "$HOME_DIR"
