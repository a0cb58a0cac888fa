#!/usr/bin/env bash
# Installs what the browser test needs, outside the repository: Debian's chromium (apt,
# when missing; playwright's own browser download is not used), playwright-core and
# axe-core (for the admin UI test), pinned, in an npm folder under $DIGLOT_BROWSER_HOME
# (default ~/.cache/diglot/browser).
# Idempotent: a stamp of the pinned version skips work when nothing changed.
# Prints the home directory on its last line.
set -euo pipefail

HOME_DIR="${DIGLOT_BROWSER_HOME:-$HOME/.cache/diglot/browser}"
NPM_PINS="playwright-core@1.52.0 axe-core@4.14.1"
STAMP="$HOME_DIR/.stamp"

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >&2
fi

mkdir -p "$HOME_DIR"
exec 9>"$HOME_DIR/.lock"
flock 9
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$NPM_PINS" ]; then
  echo "installing $NPM_PINS into $HOME_DIR" >&2
  rm -rf "$HOME_DIR/node"
  mkdir -p "$HOME_DIR/node"
  (cd "$HOME_DIR/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund $NPM_PINS >&2)
  echo "$NPM_PINS" > "$STAMP"
fi
echo "$HOME_DIR"
