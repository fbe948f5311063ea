#!/usr/bin/env bash
# Lints openapi.yaml with Spectral and the ruleset in .spectral.yaml; fails
# (exit 1) on any finding of severity warn or higher.
#
#   scripts/spec-lint.sh              lint openapi.yaml
#   scripts/spec-lint.sh FILE...      lint other spec files with the same ruleset
#
# Spectral is pinned, with all its dependencies, by api/spectral/package.json
# and api/spectral/package-lock.json. On first use (or when that lock file
# changes) it is installed with `npm ci --ignore-scripts` into
# scripts/.tools/spectral, which git ignores (scripts/.tools/.gitignore).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
pin="$root/api/spectral"
tools="$root/scripts/.tools"
dir="$tools/spectral"
bin="$dir/node_modules/.bin/spectral"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "spec-lint: $tool is not installed (Node.js 20 or later is needed)" >&2
    exit 1
  fi
done

# Everything under scripts/.tools is ignored, whatever the repository's
# .gitignore says.
mkdir -p "$tools"
[ -f "$tools/.gitignore" ] || printf '*\n' >"$tools/.gitignore"

# (Re)install when the tool is missing or was installed from another lock file.
if [ ! -x "$bin" ] || ! cmp -s "$pin/package-lock.json" "$dir/package-lock.json" ||
   ! cmp -s "$pin/package.json" "$dir/package.json"; then
  echo "spec-lint: installing the pinned Spectral (npm ci) into scripts/.tools/spectral" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$pin/package.json" "$pin/package-lock.json" "$dir/"
  # --ignore-scripts: nothing in the tree needs an install script (the only
  # one is a telemetry ping).
  (cd "$dir" && SCARF_ANALYTICS=false npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) || {
    rm -rf "$dir"
    echo "spec-lint: npm ci failed" >&2
    exit 1
  }
fi

export NO_COLOR=1 FORCE_COLOR=0
if [ $# -eq 0 ]; then
  set -- "$root/openapi.yaml"
fi
exec "$bin" lint --ruleset "$root/.spectral.yaml" --fail-severity=warn --display-only-failures --fail-on-unmatched-globs "$@"
