#!/usr/bin/env bash
# Builds detvm's guest kernel (bzImage + uncompressed vmlinux) from Debian's
# linux-source-6.1 with our config fragment and patch series, and caches it
# under $DETVM_CACHE/kernel/<hash>, the hash covering (source package version,
# config, patches, this script). `current` points at the last build.
#
#   images/kernel/build.sh            build if needed, print the cache folder
#   images/kernel/build.sh --print    print the cache folder, build nothing
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${DETVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/detvm}/kernel
jobs=${DETVM_KERNEL_JOBS:-$(nproc)}
step="start"
trap 'echo "kernel build FAILED at step: $step (log: ${log:-none})" >&2' ERR

say() { printf '[kernel] %s\n' "$*" >&2; }

step="install build dependencies"
deps=(linux-source-6.1 bc flex bison libelf-dev libssl-dev cpio xz-utils make gcc)
missing=()
for p in "${deps[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

step="hash inputs"
src_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
hash=$( { echo "$src_version"; cat "$here/detvm.config" "$here"/patches/*.patch "$here/build.sh"; } \
        | sha256sum | cut -c1-16)
out="$cache/$hash"

if [ "${1:-}" = "--print" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
# One build at a time: a second caller waits, then finds the cached result.
exec 9>"$cache/.lock"
flock 9

if [ -f "$out/vmlinux" ] && [ -f "$out/bzImage" ]; then
  ln -sfn "$hash" "$cache/current"
  echo "$out"
  exit 0
fi

work="$cache/build-$hash"
log="$cache/build-$hash.log"
rm -rf "$work"; mkdir -p "$work"
: >"$log"
start=$(date +%s)

step="unpack linux-source $src_version"
say "$step"
tar -C "$work" -xf /usr/src/linux-source-6.1.tar.xz
src="$work/linux-source-6.1"

step="apply patches"
for p in "$here"/patches/*.patch; do
  say "patch $(basename "$p")"
  patch -d "$src" -p1 --quiet --forward <"$p" >>"$log" 2>&1
done

step="configure (tinyconfig + detvm.config)"
say "$step"
make -C "$src" tinyconfig >>"$log" 2>&1
(cd "$src" && scripts/kconfig/merge_config.sh -m .config "$here/detvm.config") >>"$log" 2>&1
make -C "$src" olddefconfig >>"$log" 2>&1

step="check the merged .config"
# Kconfig drops options whose dependencies are missing: check every one we asked for.
bad=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=*) want=$line ;;
    "# CONFIG_"*" is not set") want=$line ;;
    *) continue ;;
  esac
  if [[ $want == CONFIG_* ]]; then
    grep -qxF "$want" "$src/.config" || { say "missing in .config: $want"; bad=1; }
  else
    opt=${want#\# }; opt=${opt%% *}
    grep -q "^$opt=" "$src/.config" && { say "should be unset: $opt"; bad=1; }
  fi
done <"$here/detvm.config"
[ $bad -eq 0 ]

# The same bytes on every host: the version banner (uname, /proc/version, the boot log)
# otherwise carries the build time, user and host, and a different banner shifts every
# guest's timing, so a seed would replay differently on another machine.
export KBUILD_BUILD_TIMESTAMP="2026-01-01 00:00:00 UTC" KBUILD_BUILD_USER=detvm \
  KBUILD_BUILD_HOST=detvm KBUILD_BUILD_VERSION=1

step="make bzImage vmlinux (-j$jobs, several minutes)"
say "$step; log: $log"
make -C "$src" -j"$jobs" bzImage vmlinux >>"$log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
  sleep 15
  say "  $(( $(date +%s) - start ))s, $(grep -c '^  CC' "$log" || true) files compiled"
done
wait "$pid"

step="store in cache"
tmp="$cache/tmp-$hash"
rm -rf "$tmp"; mkdir -p "$tmp"
cp "$src/arch/x86/boot/bzImage" "$src/vmlinux" "$src/.config" "$src/System.map" "$tmp/"
echo "$src_version" >"$tmp/source-version"
rm -rf "$out"; mv "$tmp" "$out"
ln -sfn "$hash" "$cache/current"
rm -rf "$work"
say "built in $(( $(date +%s) - start ))s: $out"
echo "$out"
