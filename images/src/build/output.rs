//! Writing a built image as an OCI image layout folder or an OCI archive (a tar of the
//! layout), readable by skopeo, umoci, podman and `detvm image load`.

use super::layer::LayerBlob;
use crate::digest;
use crate::oci::*;
use std::io::{self, Write};
use std::path::Path;

/// Writes an OCI layout at `dir` holding one image named `name` (`repo:tag`). The index
/// carries the tag (`org.opencontainers.image.ref.name`, what `skopeo copy oci:DIR:TAG`
/// reads) and the full name (`io.containerd.image.name`). Returns the manifest digest.
pub fn write_layout(
    dir: &Path,
    name: &str,
    layers: &[LayerBlob],
    config: &ImageConfig,
) -> io::Result<String> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let put = |bytes: &[u8]| -> io::Result<Descriptor> {
        let digest = digest::of_bytes(bytes);
        std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes)?;
        Ok(Descriptor {
            digest,
            size: bytes.len() as u64,
            ..Default::default()
        })
    };
    let mut layer_descs = Vec::new();
    for layer in layers {
        std::fs::copy(&layer.path, blobs.join(&layer.digest["sha256:".len()..]))?;
        layer_descs.push(Descriptor {
            media_type: MEDIA_LAYER_GZIP.into(),
            digest: layer.digest.clone(),
            size: layer.size,
            ..Default::default()
        });
    }
    let config_file = ConfigFile {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(RawConfig::from(config)),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        },
    };
    let mut config_desc = put(&serde_json::to_vec(&config_file)?)?;
    config_desc.media_type = MEDIA_CONFIG.into();
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config: config_desc,
        layers: layer_descs,
    };
    let mut manifest_desc = put(&serde_json::to_vec(&manifest)?)?;
    manifest_desc.media_type = MEDIA_MANIFEST.into();
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    manifest_desc.annotations = [
        (ANNOTATION_REF.to_string(), tag.to_string()),
        (ANNOTATION_CONTAINERD.to_string(), name.to_string()),
    ]
    .into();
    let index = Index {
        schema_version: 2,
        media_type: Some(MEDIA_INDEX.into()),
        manifests: vec![manifest_desc.clone()],
    };
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(manifest_desc.digest)
}

/// Writes the same layout as a tar archive (`oci-archive:FILE`), entries sorted, times zero.
pub fn write_archive(
    file: &Path,
    name: &str,
    layers: &[LayerBlob],
    config: &ImageConfig,
) -> io::Result<String> {
    let staging = tempfile::tempdir_in(
        file.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?;
    let digest = write_layout(staging.path(), name, layers, config)?;
    let mut tmp = tempfile::NamedTempFile::new_in(staging.path())?;
    {
        let mut builder = tar::Builder::new(io::BufWriter::new(tmp.as_file_mut()));
        let mut entries = vec!["oci-layout".to_string(), "index.json".to_string()];
        let mut blobs: Vec<String> = std::fs::read_dir(staging.path().join("blobs/sha256"))?
            .map(|e| e.map(|e| format!("blobs/sha256/{}", e.file_name().to_string_lossy())))
            .collect::<io::Result<_>>()?;
        blobs.sort();
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            builder.append_data(&mut h, dir, io::empty())?;
        }
        entries.extend(blobs);
        for entry in entries {
            let path = staging.path().join(&entry);
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(std::fs::metadata(&path)?.len());
            builder.append_data(&mut h, &entry, std::fs::File::open(&path)?)?;
        }
        builder.into_inner()?.flush()?;
    }
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(digest)
}
