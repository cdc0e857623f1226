#!/usr/bin/env bash
# The main job: test the kv example compose system (examples/kv) with `detvm run`:
# set-up on first use (Debian packages, the guest kernel, the guest agent, the
# example's images), then one seeded run with its properties table and the command
# that reproduces it. Extra arguments go to `detvm run` (e.g. --var KV_BUG=drop-writes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
cargo build --release -q -p detvm --bin detvm
exec "$root/target/release/detvm" run examples/kv/docker-compose.yaml --seed "${SEED:-1}" "$@"
