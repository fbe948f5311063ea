#!/usr/bin/env bash
# Fails (exit 1) when openapi.yaml breaks clients of the published spec, as
# judged by oasdiff's breaking-change checks (level ERR; WARN-level findings
# are printed but do not fail).
#
#   scripts/spec-breaking.sh              compare openapi.yaml with the published spec
#   scripts/spec-breaking.sh FILE         compare FILE instead of openapi.yaml
#
# The published spec is openapi.yaml at the latest tag v* reachable from HEAD
# (git describe), or, when there is no such tag (or it has no openapi.yaml),
# the committed baseline api/openapi.baseline.yaml. SPEC_BASE=<file> or
# SPEC_BASE_REF=<git ref> overrides the choice.
#
# oasdiff is pinned below and run with `go run module@version`, so it is
# never a dependency of this module (go.mod and go.sum are not touched).
set -euo pipefail

OASDIFF=github.com/oasdiff/oasdiff@v1.37.0

root=$(cd "$(dirname "$0")/.." && pwd)
baseline="$root/api/openapi.baseline.yaml"

case $# in
  0) revision="$root/openapi.yaml" ;;
  1) revision=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") ;;
  *) echo "usage: $0 [SPEC]" >&2; exit 2 ;;
esac
if [ ! -f "$revision" ]; then
  echo "spec-breaking: $revision does not exist" >&2
  exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The published spec.
if [ -n "${SPEC_BASE:-}" ]; then
  base=$SPEC_BASE
  what="$SPEC_BASE"
else
  ref=${SPEC_BASE_REF:-}
  if [ -z "$ref" ]; then
    ref=$(git -C "$root" describe --tags --abbrev=0 --match 'v*' HEAD 2>/dev/null || true)
  fi
  if [ -n "$ref" ] && git -C "$root" show "$ref:openapi.yaml" >"$tmp/base.yaml" 2>/dev/null; then
    base="$tmp/base.yaml"
    what="openapi.yaml at $ref"
  elif [ -n "${SPEC_BASE_REF:-}" ]; then
    echo "spec-breaking: $SPEC_BASE_REF has no openapi.yaml" >&2
    exit 2
  else
    [ -z "$ref" ] || echo "spec-breaking: tag $ref has no openapi.yaml; using the baseline" >&2
    base=$baseline
    what="api/openapi.baseline.yaml"
  fi
fi
if [ ! -f "$base" ]; then
  echo "spec-breaking: the published spec $base does not exist" >&2
  exit 2
fi

echo "spec-breaking: ${revision#"$root"/} against $what" >&2
# Run outside the module (no go.mod or go.work in $tmp), so that `go run`
# resolves oasdiff on its own and leaves this module's files alone.
cd "$tmp"
env -u OASDIFF_CONFIG GOWORK=off GOFLAGS= go run "$OASDIFF" breaking "$base" "$revision" \
  --fail-on ERR --format text --color never --allow-external-refs=false
