#!/usr/bin/env bash
# Builds the guest agent as a static binary and packs it, stripped, as /init: the only
# file of the initramfs (the agent creates the folders it mounts on; the service's
# userland comes from its image). Reproducible (fixed mtime, root-owned) and cached by
# the hash of the stripped agent and this script. Prints the initramfs path.
#
#   guest-agent/build-initramfs.sh
#
# The agent builds in $DETVM_AGENT_TARGET_DIR (default: target/guest-agent), a target
# folder of its own, so it can run while another cargo holds the workspace target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
target_dir=${DETVM_AGENT_TARGET_DIR:-$repo/target/guest-agent}
triple=x86_64-unknown-linux-gnu
# The same bytes from any checkout (see examples/build-example-images.sh).
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$repo=/detvm --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$target_dir=/target" \
  cargo build --quiet --release \
  --manifest-path "$repo/Cargo.toml" -p guest-agent --target "$triple" \
  --target-dir "$target_dir" >&2
bin=$target_dir/$triple/release/guest-agent
if command -v file >/dev/null && ! file "$bin" | grep -q 'static'; then
  echo "$bin is not statically linked" >&2; exit 1
fi
stripped=$target_dir/guest-agent.init
strip -o "$stripped.tmp.$$" "$bin"
mv "$stripped.tmp.$$" "$stripped"
cache=${DETVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/detvm}
hash=$(cat "$stripped" "$here/build-initramfs.sh" | sha256sum | cut -c1-16)
out=$cache/guest-agent/$hash
mkdir -p "$out"
exec 9>"$out/.lock"; flock 9
if [ -f "$out/initramfs.cpio" ]; then echo "$out/initramfs.cpio"; exit 0; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/root"
cp "$stripped" "$tmp/root/init"
chmod 0755 "$tmp/root" "$tmp/root/init"
touch -h -d @0 "$tmp/root/init"
(cd "$tmp/root" && echo init | cpio --quiet -o -H newc --reproducible --owner=0:0 \
  > "$tmp/initramfs.cpio")
mv "$tmp/initramfs.cpio" "$out/initramfs.cpio"
echo "$out/initramfs.cpio"
