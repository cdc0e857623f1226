#!/usr/bin/env bash
# Builds the etcd example's images into detvm's image store: the driver (a static Rust
# program on busybox) and Debian's etcd 3.4 (images/examples/etcd/image.toml, from a
# cached debootstrap layer; the first build needs root and the Debian mirror).
# detvm runs this on first use (`x-detvm.prepare`); running it again rebuilds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/../build-example-images.sh" "$here" etcd-driver
"${DETVM:-$here/../../target/release/detvm}" image build "$here/../../images/examples/etcd/image.toml" >&2
