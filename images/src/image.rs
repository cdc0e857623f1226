//! What the store knows of an image: its identity, names, run config and layers.

use crate::oci::ImageConfig;

/// What `load` added: a manifest digest and the names now pointing at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub digest: String,
    pub names: Vec<String>,
}

/// One layer of an image: the stored (maybe compressed) blob and its uncompressed digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub digest: String,
    pub diff_id: String,
    pub media_type: String,
    pub size: u64,
}

/// An image in the store, with the config the guest needs to run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// The manifest digest, `sha256:…`: the image's identity.
    pub digest: String,
    pub names: Vec<String>,
    pub config_digest: String,
    pub config: ImageConfig,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Total size of the stored layer blobs.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Digest, names, run config and layers as pretty JSON (`detvm image inspect`).
    pub fn to_json(&self) -> String {
        let layers: Vec<_> = self
            .layers
            .iter()
            .map(|l| serde_json::json!({"digest": l.digest, "diff_id": l.diff_id, "size": l.size}))
            .collect();
        let json = serde_json::json!({"digest": self.digest, "names": self.names, "config": self.config, "layers": layers});
        serde_json::to_string_pretty(&json).unwrap_or_default()
    }
}
