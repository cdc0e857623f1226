#!/usr/bin/env bash
# Builds one example's images into detvm's image store:
#   build-example-images.sh EXAMPLE_DIR BINARY...
# compiles the detvm-examples crate as static binaries (own target folder, so it never
# fights a running cargo), strips the named ones into EXAMPLE_DIR/bin/, then runs
# `detvm image build` on every EXAMPLE_DIR/images/*.toml. The examples' own
# build-images.sh call this; detvm runs those on first use (`x-detvm.prepare`).
set -euo pipefail
example=$(cd "$1" && pwd)
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
target_dir=${DETVM_EXAMPLES_TARGET_DIR:-$repo/target/examples-static}
triple=x86_64-unknown-linux-gnu
# The same bytes from any checkout: paths of the repository and the target folder end
# up in panic messages, and a guest running other bytes runs a different timeline
# (when prefixes overlap, the last one given wins: the target folder goes last).
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$repo=/detvm --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo --remap-path-prefix=$target_dir=/target" \
  cargo build --quiet --release \
  --manifest-path "$repo/Cargo.toml" -p detvm-examples --target "$triple" \
  --target-dir "$target_dir" >&2
mkdir -p "$example/bin"
for b in "$@"; do
  strip -o "$example/bin/$b" "$target_dir/$triple/release/$b"
done
detvm=${DETVM:-$repo/target/release/detvm}
for spec in "$example"/images/*.toml; do
  "$detvm" image build "$spec" >&2
done
