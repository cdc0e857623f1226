#!/usr/bin/env bash
# Builds the guest agent as a static binary and packs it, stripped, as /init in an
# initramfs next to static busybox (/bin/busybox with its applet links), reproducibly
# (images/guest-probe/build-busybox-initramfs.sh does the packing; its cache is keyed by
# the hash of the stripped agent, that script and busybox). Prints the initramfs path.
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
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  --manifest-path "$repo/Cargo.toml" -p guest-agent --target "$triple" \
  --target-dir "$target_dir" >&2
bin=$target_dir/$triple/release/guest-agent
if command -v file >/dev/null && ! file "$bin" | grep -q 'static'; then
  echo "$bin is not statically linked" >&2; exit 1
fi
stripped=$target_dir/guest-agent.init
strip -o "$stripped.tmp.$$" "$bin"
mv "$stripped.tmp.$$" "$stripped"
exec "$repo/images/guest-probe/build-busybox-initramfs.sh" "$stripped"
