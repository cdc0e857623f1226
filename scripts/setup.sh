#!/usr/bin/env bash
# Installs what detvm needs on a Debian host, idempotently: Debian packages for the
# build (cmake + libclang for the Unicorn engine) and the test tools, then the
# cached guest kernel. Safe to run again: it does nothing when all is present.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
  build-essential cmake libclang-dev pkg-config   # Unicorn (emu backend) build
  squashfs-tools cpio busybox-static              # guest root filesystems and initramfs
  e2fsprogs                                       # compose volumes (ext4 disks)
  qemu-system-x86                                 # regression tests and benchmarks only
  skopeo umoci debootstrap                        # image tests and example images
  chromium                                        # the notebook's browser test (headless)
  postgresql python3-venv                         # service tests: job queue, moto (S3)
)
# npm for the browser test's playwright-core (Debian's nodejs when none is installed).
command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# playwright-core (no browser download: the test drives Debian's chromium), from the
# lock file, once.
browser_tests="$root/notebook-ui/tests/browser"
if [ ! -f "$browser_tests/node_modules/playwright-core/package.json" ]; then
  echo "[setup] npm ci in notebook-ui/tests/browser (playwright-core)" >&2
  (cd "$browser_tests" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi

# moto's S3 server for the service tests (scripts/test-services.sh), in a venv, once.
moto_venv="${DETVM_CACHE:-$HOME/.cache/detvm}/moto"
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  echo "[setup] moto[server] into $moto_venv" >&2
  /usr/bin/python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.*' >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "[setup] cargo is missing: install Rust with rustup (https://rustup.rs) and re-run" >&2
  exit 1
fi

"$root/images/kernel/build.sh" >/dev/null
