//! The JSON documents of OCI image layouts and `docker save` archives, and the image config
//! detvm keeps with each image.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI's annotation for a reference name in index.json (often just a tag).
pub const ANNOTATION_REF: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the full `name:tag` (used by `docker save` since Docker 25).
pub const ANNOTATION_CONTAINERD: &str = "io.containerd.image.name";

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// One entry of a `docker save` manifest.json.
#[derive(Clone, Debug, Deserialize)]
pub struct DockerManifestEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

/// The parts of an image config file (`application/vnd.oci.image.config.v1+json`) detvm reads.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ConfigFile {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RawConfig>,
    pub rootfs: RootFs,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

/// The `config` object of an image config, as Docker spells it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct RawConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// How to run an image: the part of its config the guest agent needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings, in the image's order.
    pub env: Vec<String>,
    /// Empty means `/`.
    pub working_dir: String,
    /// `user`, `uid`, `user:group` or `uid:gid`; empty means root.
    pub user: String,
    /// `port/proto`, e.g. `2379/tcp`, sorted.
    pub exposed_ports: Vec<String>,
}

impl From<&RawConfig> for ImageConfig {
    fn from(raw: &RawConfig) -> Self {
        ImageConfig {
            entrypoint: raw.entrypoint.clone().unwrap_or_default(),
            cmd: raw.cmd.clone().unwrap_or_default(),
            env: raw.env.clone().unwrap_or_default(),
            working_dir: raw.working_dir.clone().unwrap_or_default(),
            user: raw.user.clone().unwrap_or_default(),
            exposed_ports: raw
                .exposed_ports
                .as_ref()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

impl From<&ImageConfig> for RawConfig {
    fn from(c: &ImageConfig) -> Self {
        let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let some_s = |s: &String| (!s.is_empty()).then(|| s.clone());
        RawConfig {
            entrypoint: some(&c.entrypoint),
            cmd: some(&c.cmd),
            env: some(&c.env),
            working_dir: some_s(&c.working_dir),
            user: some_s(&c.user),
            exposed_ports: (!c.exposed_ports.is_empty()).then(|| {
                c.exposed_ports
                    .iter()
                    .map(|p| (p.clone(), serde_json::json!({})))
                    .collect()
            }),
        }
    }
}
