#!/usr/bin/env python3
"""Writes the image_archive seeds: a tiny `docker save` archive, the same image as an OCI
archive, and a gzip-compressed `docker save` archive. Layers are left uncompressed so the
fuzzer's mutations reach the layer tar parser. Run: `cd fuzz/corpus/image_archive && python3 ../../make-image-seeds.py`."""
import gzip, hashlib, io, json, tarfile

def tar_bytes(entries):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.mode = 0o755 if kind in ("dir", "exe") else 0o644
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
                t.addfile(info)
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    # Python pads to 10 KiB records; keep only the end-of-archive blocks (smaller seeds).
    data = out.getvalue().rstrip(b"\0")
    data += b"\0" * (-len(data) % 512)
    return data + b"\0" * 1024

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

layer = tar_bytes([
    ("bin/", "dir", None),
    ("bin/hello", "exe", b"#!/bin/sh\necho hello\n"),
    ("bin/sh", "sym", "hello"),
    ("bin/hi", "hard", "bin/hello"),
    ("etc/.wh.old", "file", b""),
    ("etc/hosts", "file", b"127.0.0.1 localhost\n"),
])
config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Entrypoint": ["/bin/hello"], "Env": ["PATH=/bin"], "WorkingDir": "/",
               "User": "0", "ExposedPorts": {"80/tcp": {}}},
    "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
}, separators=(",", ":")).encode()
cfg_hex = sha(config)[7:]
docker = tar_bytes([
    ("manifest.json", "file", json.dumps([{"Config": cfg_hex + ".json",
        "RepoTags": ["hello:1"], "Layers": ["layer.tar"]}]).encode()),
    (cfg_hex + ".json", "file", config),
    ("layer.tar", "file", layer),
])
open("seed-docker-save.tar", "wb").write(docker)
open("seed-docker-save.tar.gz", "wb").write(gzip.compress(docker, mtime=0))

manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": sha(layer), "size": len(layer)}],
}, separators=(",", ":")).encode()
index = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": sha(manifest), "size": len(manifest),
                   "annotations": {"org.opencontainers.image.ref.name": "1",
                                   "io.containerd.image.name": "hello:1"}}],
}, separators=(",", ":")).encode()
oci = tar_bytes([
    ("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}'),
    ("index.json", "file", index),
    ("blobs/sha256/" + sha(config)[7:], "file", config),
    ("blobs/sha256/" + sha(layer)[7:], "file", layer),
    ("blobs/sha256/" + sha(manifest)[7:], "file", manifest),
])
open("seed-oci-archive.tar", "wb").write(oci)
