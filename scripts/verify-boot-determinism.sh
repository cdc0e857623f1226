#!/usr/bin/env bash
# Boots the guest probe N times with one seed and checks that every run printed the
# same console bytes and the same trace hash. Usage:
#   scripts/verify-boot-determinism.sh [runs] [extra detvm boot options...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-20}; shift || true
initrd=$("$root/images/guest-probe/build.sh")
(cd "$root" && cargo build --release -q -p detvm --bin detvm)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$runs"); do
  "$root/target/release/detvm" boot --initrd "$initrd" --seed 1 "$@" >"$tmp/console.$i" 2>"$tmp/summary.$i"
  grep -o 'trace hash [0-9a-f]*' "$tmp/summary.$i" >"$tmp/hash.$i"
  printf '\rrun %d/%d: %s' "$i" "$runs" "$(cat "$tmp/hash.$i")" >&2
done
echo >&2
consoles=$(sha256sum "$tmp"/console.* | cut -d' ' -f1 | sort -u | wc -l)
hashes=$(cat "$tmp"/hash.* | sort -u | wc -l)
echo "$runs runs ($*): $consoles distinct console(s), $hashes distinct trace hash(es): $(cat "$tmp/hash.1")"
[ "$consoles" -eq 1 ] && [ "$hashes" -eq 1 ]
