#!/usr/bin/env bash
# Generates the TypeScript types of the API, clients/typescript/src/schema.d.ts,
# from openapi.yaml with the openapi-typescript pinned in
# clients/typescript/package-lock.json.
#
#   scripts/gen-ts.sh           rewrite src/schema.d.ts
#   scripts/gen-ts.sh --check   regenerate into a temporary file and fail (exit 1)
#                               when it differs from the committed src/schema.d.ts
#
# Installs the pinned packages with `npm ci` first when node_modules is missing
# or older than package-lock.json.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pkg="$root/clients/typescript"
spec="$root/openapi.yaml"
out="$pkg/src/schema.d.ts"

check=false
case "${1:-}" in
  "") ;;
  --check) check=true ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "gen-ts: $tool is not installed (Node.js 20 or later is needed)" >&2
    exit 1
  fi
done

cd "$pkg"
gen="$pkg/node_modules/.bin/openapi-typescript"
# npm ci writes node_modules/.package-lock.json: reinstall when it is missing
# or older than package-lock.json (a changed pin).
if [ ! -x "$gen" ] || [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "gen-ts: installing the pinned packages (npm ci) in clients/typescript" >&2
  npm ci --no-audit --no-fund >&2
fi

# A fixed environment, so that the output depends on openapi.yaml alone: no
# colours or locale-dependent text, and no redocly.yaml picked up by chance
# (the generator looks in its working directory, which is $pkg).
export NO_COLOR=1 FORCE_COLOR=0 LC_ALL=C TZ=UTC

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Generate into a temporary file first, so that a failed run never leaves a
# half-written schema.d.ts behind.
if ! "$gen" "$spec" --output "$tmp/schema.d.ts" >"$tmp/log" 2>&1; then
  cat "$tmp/log" >&2
  echo "gen-ts: openapi-typescript failed" >&2
  exit 1
fi

if $check; then
  if [ ! -f "$out" ]; then
    echo "gen-ts: clients/typescript/src/schema.d.ts is missing: run make generate" >&2
    exit 1
  fi
  if ! diff -u "$out" "$tmp/schema.d.ts" >"$tmp/diff"; then
    head -50 "$tmp/diff"
    echo "clients/typescript/src/schema.d.ts is stale: run make generate" >&2
    exit 1
  fi
  exit 0
fi

if ! cmp -s "$tmp/schema.d.ts" "$out" 2>/dev/null; then
  cp "$tmp/schema.d.ts" "$out"
fi
