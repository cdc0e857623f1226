//! Container images for detvm guests: importing OCI layouts, OCI archives and `docker save`
//! archives into a local store, building reproducible squashfs root filesystems from them,
//! and building example images without Docker (from files, or from Debian with debootstrap).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = detvm_images::Store::open(".detvm/images")?;
//! store.load(std::path::Path::new("etcd.tar"))?;
//! let image = store.resolve("etcd:3.4")?;
//! let squashfs = store.rootfs(&image)?;
//! println!("{:?} runs {:?} from {}", image.config.entrypoint, image.config.cmd, squashfs.display());
//! # Ok(()) }
//! ```

mod blob;
pub mod build;
pub mod digest;
mod errors;
mod image;
mod import;
pub mod oci;
pub mod progress;
mod rootfs;
mod source;
mod store;
pub mod tree;

pub use errors::{ImportError, RootfsError, StoreError};
pub use image::{Image, ImageRef, Layer};
pub use import::normalize_name;
pub use oci::ImageConfig;
pub use rootfs::cache_key as rootfs_cache_key;
pub use store::Store;
