#!/usr/bin/env bash
# Issue 16's scenario at full length (examples/redis/README.md): Debian's redis-server,
# a primary and a replica, bash test commands, swarm faults, 20 s of virtual time, on
# seeds 1 to 8 (seed 1 twice under `detvm check`), two seeds at a time. Every seed must
# end with its properties judged and Redis's guarantees holding. About 25 minutes on 2
# cores. Usage:
#   scripts/redis-scenario.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nice -n 10 cargo test --release -p detvm --test examples_redis \
  redis_scenario_full_length -- --ignored --nocapture
