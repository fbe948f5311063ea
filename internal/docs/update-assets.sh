#!/usr/bin/env bash
# update-assets.sh re-fetches the vendored Swagger UI files in assets/ from the
# npm registry and rewrites assets/VERSION, so that an update is reproducible
# and reviewable.
#
#   ./update-assets.sh            re-fetch the version pinned in assets/VERSION
#   ./update-assets.sh 5.36.0     move to another version (or "latest")
#   ./update-assets.sh --check    re-fetch the pinned version into a temp dir and
#                                 fail if assets/ differs from it (changes nothing)
#
# It uses `npm pack`, which downloads the package tarball (npm checks it
# against the registry's integrity hash) without running any install script
# and without fetching dependencies: swagger-ui-dist's only dependency is an
# install-time analytics hook that the prebuilt bundle does not need.
#
# After an update: run `go test ./internal/docs/` (it drives a real headless
# Chromium over the page) and look at the screenshot it saves.
set -euo pipefail

PKG=swagger-ui-dist
# The files copied from the package. Only these are vendored and served.
FILES=(
  swagger-ui-bundle.js
  swagger-ui.css
  favicon-32x32.png
  LICENSE
  NOTICE
  swagger-ui-bundle.js.LICENSE.txt
)

here="$(cd "$(dirname "$0")" && pwd)"
assets="$here/assets"

check=0
version=""
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) version="$1" ;;
esac
if [ -z "$version" ]; then
  version="$(sed -n 's/^version: *//p' "$assets/VERSION")"
  [ -n "$version" ] || { echo "no version in $assets/VERSION" >&2; exit 1; }
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# npm pack --json prints the resolved name, version, integrity and file name.
(cd "$tmp" && npm pack --json --silent "$PKG@$version" > pack.json)
read -r resolved integrity tarball < <(node -e '
  const p = require(process.argv[1])[0];
  console.log(p.version, p.integrity, p.filename);
' "$tmp/pack.json")
license="$(tar -xzOf "$tmp/$tarball" package/package.json | node -e '
  let s = ""; process.stdin.on("data", d => s += d).on("end", () => console.log(JSON.parse(s).license));
')"
tar -xzf "$tmp/$tarball" -C "$tmp"

out="$assets"
if [ "$check" = 1 ]; then
  out="$tmp/out"
fi
mkdir -p "$out"
for f in "${FILES[@]}"; do
  cp "$tmp/package/$f" "$out/$f"
done

{
  echo "# Vendored by update-assets.sh from the npm registry; do not edit by hand."
  echo "package: $PKG"
  echo "version: $resolved"
  echo "license: $license"
  echo "tarball: $tarball"
  echo "integrity: $integrity"
  echo "files (sha256):"
  for f in "${FILES[@]}"; do
    echo "  $(cd "$out" && sha256sum "$f" | cut -d' ' -f1)  $f"
  done
} > "$out/VERSION"

if [ "$check" = 1 ]; then
  for f in "${FILES[@]}" VERSION; do
    cmp -s "$out/$f" "$assets/$f" || { echo "assets/$f differs from $PKG@$resolved" >&2; exit 1; }
  done
  echo "assets/ matches $PKG@$resolved"
else
  echo "assets/ now holds $PKG@$resolved ($license):"
  (cd "$assets" && ls -l "${FILES[@]}")
fi
