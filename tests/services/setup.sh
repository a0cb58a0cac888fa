#!/usr/bin/env bash
# Installs the servers the store and limiter tests start as their own processes on
# loopback: PostgreSQL (Debian's `postgresql`; its initdb and postgres live in
# /usr/lib/postgresql/<version>/bin/) and Redis (`redis-server`). Only what is missing is
# installed, with apt-get (its package lists refreshed when an install fails on them).
# Idempotent, and quick when both are there. Prints what it does on stderr.
set -euo pipefail

packages=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  packages+=(postgresql)
fi
if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  packages+=(redis-server)
fi
[ ${#packages[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
install() {
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
}
echo "tests/services/setup.sh: installing ${packages[*]}" >&2
# A machine started from an image may have no package lists yet, or stale ones.
if ! install; then
  echo "tests/services/setup.sh: refreshing the package lists, then installing again" >&2
  $SUDO apt-get update -qq >&2
  install
fi
# The packages' own services are not used: the tests start their servers themselves.
for service in postgresql redis-server; do
  $SUDO service "$service" stop >/dev/null 2>&1 || true
done
echo "tests/services/setup.sh: installed ${packages[*]}" >&2
