#!/usr/bin/env bash
# Makes a three-layer OCI image with real tools (umoci, GNU tar, skopeo) in the current
# folder: lay/ (OCI layout, tag v1), oci.tar (OCI archive), docker.tar (docker-archive).
# Layer 1: files, owners, modes, a hard link, symlinks, a device node.
# Layer 2 (umoci repack): deletes gone/ and opq/old (umoci writes `.wh.` whiteouts), edits etc/a.
# Layer 3 (GNU tar + umoci raw add-layer): opq/ made opaque with `.wh..wh..opq`.
set -euo pipefail
umoci init --layout lay
umoci new --image lay:v1
umoci unpack --image lay:v1 b1 >/dev/null
r=b1/rootfs
mkdir -p $r/etc $r/gone $r/opq/sub $r/keep $r/private
echo one > $r/etc/a
echo x > $r/gone/x
echo old > $r/opq/old
echo deep > $r/opq/sub/deep
echo keep > $r/keep/k
chmod 4755 $r/keep/k
ln $r/keep/k $r/keep/k-hard
ln -s /etc/a $r/keep/abs-link
ln -s ../etc/a $r/keep/rel-link
mknod $r/keep/null c 1 3
chmod 700 $r/private
echo s > $r/private/secret
chown 1000:2000 $r/private/secret
umoci repack --image lay:v1 b1
umoci unpack --image lay:v1 b2 >/dev/null
rm -rf b2/rootfs/gone b2/rootfs/opq/old
echo two > b2/rootfs/etc/a
umoci repack --image lay:v1 b2
mkdir -p l3/opq
: > l3/opq/.wh..wh..opq
echo new > l3/opq/new
tar --format=pax --numeric-owner --owner=0 --group=0 -C l3 -cf l3.tar opq opq/.wh..wh..opq opq/new
umoci raw add-layer --image lay:v1 l3.tar
umoci config --image lay:v1 --config.entrypoint /bin/app --config.cmd serve --config.env FOO=bar \
  --config.workingdir /keep --config.user 1000:2000 --config.exposedports 8080/tcp
skopeo copy --quiet oci:lay:v1 docker-archive:docker.tar:example/layered:v1
skopeo copy --quiet oci:lay:v1 oci-archive:oci.tar:v1
