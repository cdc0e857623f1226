#!/usr/bin/env bash
# The main job. Until `detvm run` (compose systems) lands, it boots the guest kernel
# on detvm's deterministic software CPU with the guest probe as /init, prints the
# guest console and the run summary (virtual time, instructions, trace hash).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
initrd=$("$root/images/guest-probe/build.sh")
cd "$root"
cargo build --release -q -p explorer --bin detvm
exec "$root/target/release/detvm" boot --initrd "$initrd" --seed "${SEED:-1}" "$@"
