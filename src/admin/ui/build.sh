#!/usr/bin/env bash
# Rebuilds the admin UI into dist/ (committed; the binary embeds it, so nobody needs Node
# to build or run diglot): `npm ci` from package-lock.json (exact versions) into
# node_modules/ here (ignored by git), then Vite, then pack.mjs (gzip and brotli copies,
# and files.rs, the list src/admin/ui.rs includes). The output is the same bytes for the
# same sources.
#
#   src/admin/ui/build.sh           rebuild dist/
#   src/admin/ui/build.sh --check   build into a temporary folder and fail if dist/ differs
#                                   (CI runs this: the committed dist/ must be current)
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "build.sh needs node (>= 20.19) and npm: apt-get install nodejs npm" >&2
  exit 1
fi

# Installs exactly the locked packages, again only when the lock changed.
STAMP=node_modules/.diglot-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$want" > "$STAMP"
fi

build() { # $1: output folder
  DIGLOT_UI_OUT="$1" node node_modules/vite/bin/vite.js build --logLevel warn >&2
  node pack.mjs "$1"
}

if [ "${1:-}" = "--check" ]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
  build "$out"
  # The files themselves byte for byte; compressed copies by what they decompress to
  # (another zlib may pick other, equally valid, bytes).
  if ! diff -r --exclude='*.gz' --exclude='*.br' "$out" dist >&2; then
    echo "src/admin/ui/dist is not the build of the sources: run src/admin/ui/build.sh and commit dist/" >&2
    exit 1
  fi
  node --input-type=module - dist "$out" <<'JS'
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gunzipSync, brotliDecompressSync } from 'node:zlib';
const [dist, fresh] = process.argv.slice(2);
const walk = (d) => readdirSync(d).flatMap((n) => (statSync(join(d, n)).isDirectory() ? walk(join(d, n)) : [join(d, n)]));
const names = (d) => walk(d).map((p) => relative(d, p)).sort().join('\n');
if (names(dist) !== names(fresh)) {
  console.error('src/admin/ui/dist has other files than a build makes: run src/admin/ui/build.sh and commit dist/');
  process.exit(1);
}
for (const path of walk(dist).filter((p) => /\.(gz|br)$/.test(p))) {
  const raw = readFileSync(path.slice(0, -3));
  const out = path.endsWith('.gz') ? gunzipSync(readFileSync(path)) : brotliDecompressSync(readFileSync(path));
  if (!raw.equals(out)) {
    console.error(`${path} does not decompress to ${path.slice(0, -3)}: run src/admin/ui/build.sh`);
    process.exit(1);
  }
}
JS
  echo "admin UI: dist/ is current"
  exit 0
fi

build dist
echo "admin UI: built into src/admin/ui/dist"
