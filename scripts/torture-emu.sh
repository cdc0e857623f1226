#!/usr/bin/env bash
# Exactness torture of the emu backend on real Linux workloads (docs/determinism.md):
# every vCPU run is executed as shorter runs whose budgets are drawn from a seed, and the
# run must stay the same as with whole runs (trace hash, console, instruction count).
# Each seed restores a snapshot of the reference run and runs one 20 ms step split; every
# 500th seed also runs the whole boot split. On 1 and then 2 vCPUs. Usage:
#   scripts/torture-emu.sh [SEEDS] [FIRST_SEED]      (default: 2000 seeds from 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seeds=${1:-2000}
first=${2:-1}
cd "$root"
DETVM_TORTURE_SEEDS=$seeds DETVM_TORTURE_FIRST_SEED=$first \
  nice -n 10 cargo test --release -p explorer --test torture_emu \
  split_runs_change_nothing_many_seeds -- --ignored --nocapture
