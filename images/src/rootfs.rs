//! The guest root filesystem of an image: the merged layers written as one tar stream into
//! `mksquashfs -tar` (squashfs-tools), which builds a reproducible zstd squashfs. Nothing is unpacked
//! on the host, so owners, devices and xattrs survive without privileges.

use crate::blob;
use crate::digest;
use crate::errors::RootfsError;
use crate::image::Image;
use crate::progress::{ProgressBar, ProgressStyle};
use crate::tree::{Kind, Node, Tree};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Changing how the image is built must change this, so old cache entries are not reused.
const FORMAT: &str =
    "detvm-rootfs v1: mksquashfs -tar -comp zstd -Xcompression-level 3 -all-time 0";

/// The cache key of a root filesystem: the format and the uncompressed layer digests.
pub fn cache_key(image: &Image) -> String {
    let mut text = format!("{FORMAT}\n");
    for layer in &image.layers {
        text.push_str(&layer.diff_id);
        text.push('\n');
    }
    digest::of_bytes(text.as_bytes())["sha256:".len()..].to_string()
}

/// Builds the root filesystem of `image` at `out`, unless it is there already. Its layer
/// blobs are read from `blobs` (files named by digest hex) and the work is done in a
/// temporary folder under `tmp`, on the same file system as `out`, so the finished image
/// is renamed into place whole.
pub(crate) fn build(
    image: &Image,
    blobs: &Path,
    tmp: &Path,
    out: &Path,
) -> Result<(), RootfsError> {
    if out.is_file() {
        return Ok(());
    }
    let name = image
        .names
        .first()
        .cloned()
        .unwrap_or_else(|| image.digest.clone());
    let io_err = |path: &Path, source| RootfsError::Io {
        image: name.clone(),
        path: path.into(),
        source,
    };
    let work = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(tmp)
        .map_err(|e| io_err(tmp, e))?;

    // Decompress each layer once to a plain tar, so file bytes can be read at their offsets.
    let mut tree = Tree::default();
    let mut tars = Vec::new();
    for (i, layer) in image.layers.iter().enumerate() {
        let blob = blob::path_in(blobs, &layer.digest).unwrap_or_default();
        let tar = work.path().join(format!("{i}.tar"));
        let mut input = blob::open_layer(&blob).map_err(|e| io_err(&blob, e))?;
        let mut file = BufWriter::new(File::create(&tar).map_err(|e| io_err(&tar, e))?);
        io::copy(&mut input, &mut file)
            .and_then(|_| file.flush())
            .map_err(|e| io_err(&blob, e))?;
        let reader = BufReader::new(File::open(&tar).map_err(|e| io_err(&tar, e))?);
        tree.apply(i, &layer.digest, reader)
            .map_err(|source| RootfsError::Layer {
                image: name.clone(),
                source,
            })?;
        tars.push(tar);
    }

    let sqfs = work.path().join("rootfs.sqfs");
    let root = &tree.root;
    // `mksquashfs - OUT -tar` rather than `sqfstar`: squashfs-tools 4.5.1's sqfstar cannot
    // parse -Xcompression-level, and zstd's default level 15 is ~25x slower than 3 here for
    // 10% less size. Both ignore -root-time (the root would get the build time), so only
    // -all-time makes the output reproducible: every time in the image is the epoch.
    let mut child = Command::new("mksquashfs")
        .arg("-")
        .arg(&sqfs)
        .args(["-tar", "-reproducible", "-mkfs-time", "0", "-all-time", "0"])
        .args([
            "-comp",
            "zstd",
            "-Xcompression-level",
            "3",
            "-no-progress",
            "-quiet",
        ])
        .args(["-root-mode", &format!("{:o}", root.mode)])
        .args([
            "-root-uid",
            &root.uid.to_string(),
            "-root-gid",
            &root.gid.to_string(),
        ])
        .env_remove("SOURCE_DATE_EPOCH") // refused together with -all-time
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RootfsError::NoTool {
                image: name.clone(),
            },
            _ => io_err(Path::new("mksquashfs"), e),
        })?;
    let mut stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut text);
        }
        text
    });
    let stdin = child.stdin.take().map(BufWriter::new);
    let written = match stdin {
        Some(stdin) => write_tar(&tree, &tars, stdin, &name),
        None => Err(io::Error::other("no stdin")),
    };
    let status = child
        .wait()
        .map_err(|e| io_err(Path::new("mksquashfs"), e))?;
    let stderr = stderr_reader.join().unwrap_or_default();
    if let Err(source) = written {
        let stderr = stderr.trim().to_string();
        return Err(RootfsError::Stream {
            image: name,
            source,
            stderr,
        });
    }
    if !status.success() {
        let (status, stderr) = (status.to_string(), stderr.trim().to_string());
        return Err(RootfsError::Tool {
            image: name,
            status,
            stderr,
        });
    }
    std::fs::rename(&sqfs, out).map_err(|e| io_err(out, e))?;
    Ok(())
}

/// Writes the merged tree as a tar stream, parents before children, the first path of each
/// hard-link group as the file and the others as links to it.
fn write_tar(tree: &Tree, tars: &[PathBuf], out: impl Write, name: &str) -> io::Result<()> {
    let total: u64 = tree
        .nodes
        .values()
        .map(|n| {
            if let Kind::File(d) = n.kind {
                d.size
            } else {
                0
            }
        })
        .sum();
    let bar = ProgressBar::new(total).with_message(format!("compressing {name}"));
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {elapsed}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut files: Vec<File> = tars.iter().map(File::open).collect::<io::Result<_>>()?;
    let mut builder = tar::Builder::new(out);
    let mut first_path: HashMap<u64, &str> = HashMap::new();
    for (path, node) in &tree.nodes {
        if !node.meta.xattrs.is_empty() {
            let records: Vec<(String, &[u8])> = node
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                .collect();
            builder.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))?;
        }
        let mut header = header_for(node);
        if let Some(first) = first_path.get(&node.inode) {
            header.set_entry_type(tar::EntryType::Link);
            header.set_size(0);
            builder.append_link(&mut header, path, first)?;
            continue;
        }
        first_path.insert(node.inode, path);
        match &node.kind {
            Kind::File(data) => {
                let file = files
                    .get_mut(data.layer)
                    .ok_or_else(|| io::Error::other("layer index out of range"))?;
                file.seek(SeekFrom::Start(data.offset))?;
                let reader = bar.wrap_read(BufReader::new(&*file).take(data.size));
                builder.append_data(&mut header, path, reader)?;
            }
            Kind::Symlink(target) => builder.append_link(&mut header, path, target)?,
            _ => builder.append_data(&mut header, path, io::empty())?,
        }
    }
    builder.into_inner()?.flush()?;
    bar.finish_and_clear();
    Ok(())
}

fn header_for(node: &Node) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let (kind, size) = match &node.kind {
        Kind::Dir => (tar::EntryType::Directory, 0),
        Kind::File(d) => (tar::EntryType::Regular, d.size),
        Kind::Symlink(_) => (tar::EntryType::Symlink, 0),
        Kind::Char(..) => (tar::EntryType::Char, 0),
        Kind::Block(..) => (tar::EntryType::Block, 0),
        Kind::Fifo => (tar::EntryType::Fifo, 0),
    };
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(node.meta.mode);
    h.set_uid(node.meta.uid);
    h.set_gid(node.meta.gid);
    h.set_mtime(node.meta.mtime);
    if let Kind::Char(major, minor) | Kind::Block(major, minor) = node.kind {
        let _ = h.set_device_major(major);
        let _ = h.set_device_minor(minor);
    }
    h
}
