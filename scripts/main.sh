#!/usr/bin/env bash
# The main job: explore the replog example (examples/replog: a replicated log with a
# rare lost-write bug) with a short `detvm explore` campaign: set-up on first use
# (Debian packages, the guest kernel, the guest agent, the example's images), then a tree
# of 24 branches from one booted system, the campaign's properties table, and the command
# that replays the first failing moment. Extra arguments go to `detvm explore`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
cd "$root"
cargo build --release -q -p detvm --bin detvm
exec "$root/target/release/detvm" explore examples/replog/docker-compose.yaml \
  --seed "${SEED:-0}" --duration 12s --horizon 3s --branches 24 "$@"
