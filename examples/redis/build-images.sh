#!/usr/bin/env bash
# Builds the redis example's image into detvm's image store: Debian bookworm's
# redis-server and redis-tools, unmodified, on a debootstrap minbase root, with the bash
# test commands under /opt/antithesis/test/v1/main/. The debootstrap layer is cached
# under $DETVM_CACHE/debootstrap/ (the first build needs root and the Debian mirror).
# detvm runs this on first use (`x-detvm.prepare`); running it again rebuilds, with the
# same digest.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
detvm=${DETVM:-$here/../../target/release/detvm}
files=()
for f in "$here"/test/*; do
  mode=755
  [[ ${f##*/} == helper_* ]] && mode=644
  files+=(--file "$f:/opt/antithesis/test/v1/main/${f##*/}:$mode")
done
"$detvm" image build --tag detvm-examples/redis:7.0 \
  --debootstrap bookworm --package redis-server --package redis-tools \
  "${files[@]}" \
  --cmd redis-server --cmd --protected-mode --cmd no \
  --user redis --workdir /var/lib/redis --expose 6379/tcp >&2
