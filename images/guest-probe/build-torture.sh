#!/usr/bin/env bash
# Builds the emu torture workloads (torture.c, static) into a cache folder keyed by the
# source hash, reproducibly (the build folder is remapped). Prints the binary's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DETVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/detvm}
hash=$(cat "$here/torture.c" "$here/build-torture.sh" | sha256sum | cut -c1-16)
out=$cache/guest-torture/$hash
mkdir -p "$out"
exec 9>"$out/.lock"; flock 9
if [ -f "$out/torture" ]; then echo "$out/torture"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
gcc -static -O2 -pthread -ffile-prefix-map="$here"=. -o "$tmp/torture" "$here/torture.c"
mv "$tmp/torture" "$out/torture"
echo "$out/torture"
