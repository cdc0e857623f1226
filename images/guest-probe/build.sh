#!/usr/bin/env bash
# Builds the guest probe (static) and an initramfs whose /init is the probe,
# reproducibly (fixed mtimes, sorted entries), into $1 (default: a cache folder).
# Prints the initramfs path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${DETVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/detvm}
hash=$(cat "$here/probe.c" "$here/build.sh" | sha256sum | cut -c1-16)
out=${1:-$cache/guest-probe/$hash}
mkdir -p "$out"
exec 9>"$out/.lock"; flock 9
if [ -f "$out/initramfs.cpio" ]; then echo "$out/initramfs.cpio"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/dev" "$tmp/root/proc"
gcc -static -O2 -pthread -o "$tmp/root/init" "$here/probe.c"
cp "$tmp/root/init" "$tmp/probe"
find "$tmp/root" -exec touch -h -d @0 {} +
(cd "$tmp/root" && find . -mindepth 1 | LC_ALL=C sort | \
  cpio --quiet -o -H newc --reproducible --owner=0:0 > "$tmp/initramfs.cpio")
mv "$tmp/probe" "$out/probe"
mv "$tmp/initramfs.cpio" "$out/initramfs.cpio"
echo "$out/initramfs.cpio"
