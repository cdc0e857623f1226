#!/usr/bin/env bash
# Builds an initramfs holding a static busybox (with one symlink per applet in /bin)
# and SCRIPT as /init, reproducibly (fixed mtimes, sorted entries, root-owned), into
# OUT_DIR (default: a cache folder keyed by the hash of SCRIPT, this script, busybox and
# every added file). Each `--add FILE` also puts FILE (a static program) in /bin.
# Prints the initramfs path.
#
#   build-busybox-initramfs.sh [--add FILE]... SCRIPT [OUT_DIR]
#
# Needs a static busybox: /bin/busybox (Debian's busybox-static; scripts/setup.sh installs
# it) or $DETVM_BUSYBOX.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
added=()
while [ "${1:-}" = --add ]; do
  [ -f "${2:-}" ] || { echo "--add: no file ${2:-}" >&2; exit 1; }
  added+=("$2"); shift 2
done
script=${1:?usage: build-busybox-initramfs.sh [--add FILE]... SCRIPT [OUT_DIR]}
busybox=${DETVM_BUSYBOX:-/bin/busybox}
[ -x "$busybox" ] || { echo "no $busybox (install busybox-static)" >&2; exit 1; }
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
  echo "$busybox is not static (install busybox-static)" >&2; exit 1
fi
cache=${DETVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/detvm}
hash=$( (cat "$script" "$here/build-busybox-initramfs.sh" "$busybox"
  for f in "${added[@]}"; do basename "$f"; cat "$f"; done) | sha256sum | cut -c1-16)
out=${2:-$cache/guest-busybox/$hash}
mkdir -p "$out"
exec 9>"$out/.lock"; flock 9
if [ -f "$out/initramfs.cpio" ]; then echo "$out/initramfs.cpio"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/bin" "$root/dev" "$root/proc" "$root/sys" "$root/mnt" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
ln -s bin "$root/sbin"
for f in "${added[@]}"; do
  install -m 0755 "$f" "$root/bin/$(basename "$f")"
done
cp "$script" "$root/init"
chmod 0755 "$root/init"
chmod 0755 "$root" "$root"/bin "$root"/dev "$root"/proc "$root"/sys "$root"/mnt
chmod 1777 "$root/tmp"
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | \
  cpio --quiet -o -H newc --reproducible --owner=0:0 > "$tmp/initramfs.cpio")
mv "$tmp/initramfs.cpio" "$out/initramfs.cpio"
echo "$out/initramfs.cpio"
