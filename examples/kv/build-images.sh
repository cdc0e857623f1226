#!/usr/bin/env bash
# Builds the kv example's images into detvm's image store: the two programs as static
# binaries (own target folder, so it never fights a running cargo), then
# `detvm image build` for each image spec. detvm runs this on first use
# (`x-detvm.prepare` in docker-compose.yaml); running it again rebuilds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
target_dir=${DETVM_EXAMPLES_TARGET_DIR:-$repo/target/examples-static}
triple=x86_64-unknown-linux-gnu
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release \
  --manifest-path "$repo/Cargo.toml" -p detvm-examples --target "$triple" \
  --target-dir "$target_dir" >&2
mkdir -p "$here/bin"
for b in kv-server kv-driver; do
  strip -o "$here/bin/$b" "$target_dir/$triple/release/$b"
done
detvm=${DETVM:-$repo/target/release/detvm}
for spec in "$here"/images/*.toml; do
  "$detvm" image build "$spec" >&2
done
