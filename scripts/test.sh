#!/usr/bin/env bash
# The test command: set-up on first use, then the whole workspace's tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
cargo test --workspace --release "$@"
