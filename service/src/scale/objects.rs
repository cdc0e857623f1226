//! Snapshot files and bundles as objects, through the `object_store` crate: an
//! S3-compatible store (`s3://bucket/prefix`, configured by the usual `AWS_*`
//! variables: `AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION`, `AWS_ALLOW_HTTP`) or a shared file system (`file:///path`).

use std::path::Path;
use std::sync::Arc;

use futures_util::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

#[derive(Debug, thiserror::Error)]
#[error("object store: {0}")]
pub struct ObjectsError(String);

fn err(e: impl std::fmt::Display) -> ObjectsError {
    ObjectsError(e.to_string())
}

pub struct Objects {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    runtime: tokio::runtime::Runtime,
}

impl Objects {
    pub fn open(url: &str) -> Result<Objects, ObjectsError> {
        let parsed = url::Url::parse(url).map_err(|e| err(format!("{url}: {e}")))?;
        if parsed.scheme() == "file" {
            std::fs::create_dir_all(parsed.path()).map_err(err)?;
        }
        let options = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(err)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(err)?;
        Ok(Objects {
            store: Arc::from(store),
            prefix,
            runtime,
        })
    }

    fn key(&self, key: &str) -> Key {
        let mut parts: Vec<String> = self
            .prefix
            .parts()
            .map(|p| p.as_ref().to_string())
            .collect();
        parts.extend(key.split('/').map(String::from));
        Key::from_iter(parts)
    }

    pub fn put_file(&self, key: &str, path: &Path) -> Result<u64, ObjectsError> {
        let bytes = std::fs::read(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let len = bytes.len() as u64;
        let k = self.key(key);
        self.runtime
            .block_on(self.store.put(&k, PutPayload::from(bytes)))
            .map_err(err)?;
        Ok(len)
    }

    /// Writes the object to `path` (through a temporary file and a rename).
    pub fn get_file(&self, key: &str, path: &Path) -> Result<u64, ObjectsError> {
        let k = self.key(key);
        let bytes = self
            .runtime
            .block_on(async { self.store.get(&k).await?.bytes().await })
            .map_err(err)?;
        let tmp = path.with_extension("part");
        std::fs::write(&tmp, &bytes).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)?;
        Ok(bytes.len() as u64)
    }

    pub fn exists(&self, key: &str) -> Result<bool, ObjectsError> {
        let k = self.key(key);
        match self.runtime.block_on(self.store.head(&k)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Deletes every object under `prefix` (whole path segments: `c1` is not `c12`);
    /// returns how many.
    pub fn delete_under(&self, prefix: &str) -> Result<usize, ObjectsError> {
        let k = self.key(prefix);
        self.runtime
            .block_on(async {
                let keys: Vec<Key> = self
                    .store
                    .list(Some(&k))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await?;
                for key in &keys {
                    self.store.delete(key).await?;
                }
                Ok::<_, object_store::Error>(keys.len())
            })
            .map_err(err)
    }
}
