#!/usr/bin/env bash
# Benchmark: wall time from start to the first line /init prints, for detvm `emu`
# and for QEMU TCG in its deterministic configuration, on the same kernel and
# initramfs, side by side in one run. Writes a Markdown table to stdout.
#
#   scripts/bench-boot.sh [runs]        (default 3 runs each)
#   DETVM_BASELINE=/tmp/detvm-old scripts/bench-boot.sh 3
#                                       also an older detvm binary, in the same rounds
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
"$root/scripts/setup.sh"
kernel=$("$root/images/kernel/build.sh")
initrd=$("$root/images/guest-probe/build.sh")
(cd "$root" && cargo build --release -q -p detvm --bin detvm)
detvm="$root/target/release/detvm"
baseline=${DETVM_BASELINE:-}

# Prints seconds from start until a line containing PROBE-START appears.
time_to_init() {
  local start line
  start=$(date +%s.%N)
  while IFS= read -r line; do
    if [[ $line == *PROBE-START* ]]; then
      echo "$(date +%s.%N) - $start" | bc
      return 0
    fi
  done
  echo "n/a"
}

run_detvm() { # kernel-file [binary]
  "${2:-$detvm}" boot --kernel "$1" --initrd "$initrd" --seed 1 2>/tmp/detvm-bench.err | time_to_init
}

run_qemu() {
  timeout 120 qemu-system-x86_64 -accel tcg -cpu qemu64,-rdrand,-rdseed -m 256 \
    -icount shift=6,sleep=off,align=off -rtc clock=vm -seed 1 \
    -nographic -no-reboot -kernel "$kernel/bzImage" -initrd "$initrd" \
    -append "console=ttyS0 panic=-1" 2>/dev/null | time_to_init
}

load() { cut -d' ' -f1 /proc/loadavg; }
if [ -n "$baseline" ]; then
  echo "| run | baseline vmlinux (s) | detvm emu, vmlinux (s) | baseline bzImage (s) | detvm emu, bzImage (s) | QEMU TCG icount, bzImage (s) | load |"
  echo "|---|---|---|---|---|---|---|"
else
  echo "| run | detvm emu, vmlinux (s) | detvm emu, bzImage (s) | QEMU TCG icount, bzImage (s) | load |"
  echo "|---|---|---|---|---|"
fi
for i in $(seq 1 "$runs"); do
  if [ -n "$baseline" ]; then
    a0=$(run_detvm "$kernel/vmlinux" "$baseline")
    a=$(run_detvm "$kernel/vmlinux")
    b0=$(run_detvm "$kernel/bzImage" "$baseline")
    b=$(run_detvm "$kernel/bzImage")
    c=$(run_qemu)
    echo "| $i | $a0 | $a | $b0 | $b | $c | $(load) |"
  else
    a=$(run_detvm "$kernel/vmlinux")
    b=$(run_detvm "$kernel/bzImage")
    c=$(run_qemu)
    echo "| $i | $a | $b | $c | $(load) |"
  fi
done
"$detvm" boot --kernel "$kernel/vmlinux" --initrd "$initrd" --seed 1 2>&1 >/dev/null | grep -E "instructions|Halted|PowerOff" | sed 's/^/    /'
