//! Snapshot files: a World on disk, full or incremental (a child of another file).
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic "DETVMSNP" | version u32 | kind u32 (0 full, 1 child) | section count u32
//! per section: tag [u8; 4] | length u64 | payload
//! SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! Sections: `PRNT` (child only: the parent's SHA-256, then its file name, read from the
//! child's folder), `STAT` (zstd of the JSON `WorldState`), one `MEM ` per node with a
//! VM: node index u32 | RAM size u64 | page count u64 | page numbers u64 each (strictly
//! increasing) | zstd of the pages' bytes. A full file holds every non-zero page; a child
//! only the pages that differ from its parent's, except for a node that booted again
//! since the parent (its `boots` differ): every non-zero page, read over zeroes. `APP ` (optional, zstd): bytes of the program that
//! drives the world (detvm run's orchestrator state), covered by the same checksum.
//! The checksum is verified before anything is parsed,
//! so a corrupted or truncated file is refused before any of it is used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{WorldSnapshot, WorldState};
use crate::clock::VirtualTime;
use crate::memory::{frozen_image, PAGE};
use crate::snapshot::{MemoryImage, SnapshotError};
use crate::world::config::WorldConfig;

const MAGIC: &[u8; 8] = b"DETVMSNP";
pub const VERSION: u32 = 1;
const KIND_FULL: u32 = 0;
const KIND_CHILD: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 4;
const SUM_LEN: usize = 32;
/// zstd level for pages and state: fast, and guest pages compress well at any level.
const LEVEL: i32 = 1;

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub bytes: u64,
    pub pages: u64,
    pub checksum: [u8; 32],
}

/// Writes `snap` to `path`: in full, or as a child of the snapshot `parent` (in memory,
/// as taken from the same world) stored in the file `parent_path`.
pub fn save(
    snap: &WorldSnapshot,
    path: &Path,
    parent: Option<(&Path, &WorldSnapshot)>,
) -> Result<Written, SnapshotError> {
    save_with_app(snap, path, parent, None)
}

/// [`save`], plus `app`: the driving program's own state, stored in the `APP ` section
/// and read back with [`load_with_app`].
pub fn save_with_app(
    snap: &WorldSnapshot,
    path: &Path,
    parent: Option<(&Path, &WorldSnapshot)>,
    app: Option<&[u8]>,
) -> Result<Written, SnapshotError> {
    let mut sections: Vec<([u8; 4], Vec<u8>)> = Vec::new();
    if let Some((parent_path, _)) = parent {
        let sum = checksum_of_file(parent_path)?;
        let name = parent_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| file_err(parent_path, "the parent file name is not UTF-8"))?;
        let mut p = sum.to_vec();
        p.extend_from_slice(name.as_bytes());
        sections.push((*b"PRNT", p));
    }
    let json = serde_json::to_vec(&snap.state).map_err(|e| file_err(path, e.to_string()))?;
    sections.push((*b"STAT", compress(&json, path)?));
    if let Some(app) = app {
        sections.push((*b"APP ", compress(app, path)?));
    }
    let mut total_pages = 0;
    for (node, image) in snap.memory.iter().enumerate() {
        let Some(image) = image else { continue };
        // The reader lays a node's pages over the parent's RAM only when the node is on
        // the same boot in both (see `world_of`); a node that booted again is written whole.
        let same_boot = |p: &WorldSnapshot| {
            let boots = |s: &WorldState| s.nodes.get(node).map(|n| n.boots);
            boots(&p.state) == boots(&snap.state)
        };
        let base = parent
            .map(|(_, p)| p)
            .filter(|p| same_boot(p))
            .and_then(|p| p.memory.get(node)?.as_ref())
            .filter(|p| p.size == image.size);
        let (numbers, bytes) = match base {
            Some(parent_image) if Arc::ptr_eq(&parent_image.base, &image.base) => {
                changed_pages(image, parent_image)?
            }
            Some(parent_image) => differing_pages(image, parent_image)?,
            None => nonzero_pages(image)?,
        };
        total_pages += numbers.len() as u64;
        let mut m = Vec::with_capacity(20 + numbers.len() * 8);
        m.extend_from_slice(&(node as u32).to_le_bytes());
        m.extend_from_slice(&image.size.to_le_bytes());
        m.extend_from_slice(&(numbers.len() as u64).to_le_bytes());
        for n in &numbers {
            m.extend_from_slice(&n.to_le_bytes());
        }
        m.extend_from_slice(&compress(&bytes, path)?);
        sections.push((*b"MEM ", m));
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let kind = if parent.is_some() {
        KIND_CHILD
    } else {
        KIND_FULL
    };
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for (tag, payload) in &sections {
        out.extend_from_slice(tag);
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
    }
    let checksum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&checksum);
    // Written whole under a temporary name, then renamed: a crash never leaves half a file.
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, &out).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(Written {
        bytes: out.len() as u64,
        pages: total_pages,
        checksum,
    })
}

/// Reads a snapshot file (and, for a child, its parents) into a World snapshot whose
/// host resources come from `config` (the configuration the world was built from).
pub fn load(path: &Path, config: &WorldConfig) -> Result<WorldSnapshot, SnapshotError> {
    load_with_app(path, config).map(|(world, _)| world)
}

/// [`load`], plus the `APP ` section written by [`save_with_app`] (`None` when the file
/// has none). Each file is read, and its checksum verified, once.
pub fn load_with_app(
    path: &Path,
    config: &WorldConfig,
) -> Result<(WorldSnapshot, Option<Vec<u8>>), SnapshotError> {
    let parsed = Parsed::read(path)?;
    let world = world_of(&parsed, path, config)?;
    let app = parsed.sections(b"APP ").next();
    let app = app.map(|a| decompress(a, path, "APP ")).transpose()?;
    Ok((world, app))
}

/// The World snapshot held by the file at `path`, already read and verified as `parsed`.
fn world_of(
    parsed: &Parsed,
    path: &Path,
    config: &WorldConfig,
) -> Result<WorldSnapshot, SnapshotError> {
    let state: WorldState =
        serde_json::from_slice(&decompress(parsed.section(b"STAT", path)?, path, "STAT")?)
            .map_err(|e| file_err(path, format!("section STAT: {e}")))?;
    let configs = WorldSnapshot::node_configs(config);
    let names: Vec<&str> = state.nodes.iter().map(|n| n.name.as_str()).collect();
    let wanted: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
    if names != wanted {
        return Err(file_err(
            path,
            format!("the snapshot's nodes {names:?} are not this system's {wanted:?}"),
        ));
    }
    let parent = match parsed.kind {
        KIND_FULL => None,
        _ => {
            let p = parsed.section(b"PRNT", path)?;
            if p.len() <= 32 {
                return Err(file_err(path, "section PRNT is too short"));
            }
            let name = std::str::from_utf8(&p[32..])
                .map_err(|_| file_err(path, "section PRNT: the parent name is not UTF-8"))?;
            // A file name in the child's folder, as `save` writes it: never a path that
            // reads some other file (`/dev/zero`, `../x`).
            if name.contains('/') || name == "." || name == ".." {
                return Err(file_err(
                    path,
                    format!("section PRNT: the parent {name:?} is not a file name in this folder"),
                ));
            }
            let parent_path = path.with_file_name(name);
            let parent = Parsed::read(&parent_path)?;
            if parent.checksum[..] != p[..32] {
                return Err(file_err(
                    path,
                    format!(
                        "its parent {} has changed since the child was written",
                        parent_path.display()
                    ),
                ));
            }
            Some(world_of(&parent, &parent_path, config)?)
        }
    };
    // A child holds, for a node still on the parent's boot, the pages that changed since
    // the parent; for a node that booted again in between (its RAM is new), every page:
    // that one must not be laid over the parent's RAM of the earlier boot.
    let boots = |s: &WorldState, node: usize| s.nodes.get(node).map(|n| n.boots);
    let base = |node: usize| {
        parent
            .as_ref()
            .filter(|p| boots(&p.state, node) == boots(&state, node))
            .and_then(|p| p.memory.get(node)?.as_ref())
    };
    let mut memory: Vec<Option<MemoryImage>> = vec![None; state.nodes.len()];
    for m in parsed.sections(b"MEM ") {
        let (node, image) = read_memory(m, path, base)?;
        let slot = memory
            .get_mut(node)
            .ok_or_else(|| file_err(path, format!("section MEM names node {node}")))?;
        *slot = Some(image);
    }
    for (n, m) in state.nodes.iter().zip(&memory) {
        if n.vm.is_some() != m.is_some() {
            return Err(file_err(
                path,
                format!("node {}: VM state and memory section disagree", n.name),
            ));
        }
    }
    Ok(WorldSnapshot {
        state,
        memory,
        configs,
    })
}

/// The file's own checksum (its last 32 bytes), after verifying it.
pub fn checksum_of_file(path: &Path) -> Result<[u8; 32], SnapshotError> {
    Ok(Parsed::read(path)?.checksum)
}

#[derive(Debug)]
struct Parsed {
    kind: u32,
    checksum: [u8; 32],
    sections: Vec<([u8; 4], Vec<u8>)>,
}

impl Parsed {
    fn read(path: &Path) -> Result<Parsed, SnapshotError> {
        let data = std::fs::read(path).map_err(|e| io_err(path, e))?;
        if data.len() < HEADER_LEN + SUM_LEN {
            if data.len() >= 8 && &data[..8] != MAGIC {
                return Err(file_err(path, "not a detvm snapshot (bad magic)"));
            }
            return Err(file_err(
                path,
                format!("truncated: {} bytes, shorter than any snapshot", data.len()),
            ));
        }
        if &data[..8] != MAGIC {
            return Err(file_err(path, "not a detvm snapshot (bad magic)"));
        }
        let version = u32_at(&data, 8);
        if version != VERSION {
            return Err(file_err(
                path,
                format!("snapshot format version {version}; this detvm reads version {VERSION}"),
            ));
        }
        let (body, sum) = data.split_at(data.len() - SUM_LEN);
        let actual: [u8; 32] = Sha256::digest(body).into();
        if actual[..] != sum[..] {
            return Err(file_err(
                path,
                "checksum mismatch: the file is corrupted or truncated",
            ));
        }
        let kind = u32_at(body, 12);
        if kind != KIND_FULL && kind != KIND_CHILD {
            return Err(file_err(path, format!("unknown snapshot kind {kind}")));
        }
        let count = u32_at(body, 16) as usize;
        let mut sections = Vec::new();
        let mut at = HEADER_LEN;
        for i in 0..count {
            let head = body
                .get(at..at + 12)
                .ok_or_else(|| file_err(path, format!("section {i}: header past the end")))?;
            let tag: [u8; 4] = head[..4].try_into().expect("4 bytes");
            let len = u64::from_le_bytes(head[4..12].try_into().expect("8 bytes"));
            let start = at + 12;
            let end = usize::try_from(len)
                .ok()
                .and_then(|l| start.checked_add(l))
                .filter(|&e| e <= body.len())
                .ok_or_else(|| {
                    file_err(path, format!("section {i} ({len} bytes) runs past the end"))
                })?;
            sections.push((tag, body[start..end].to_vec()));
            at = end;
        }
        if at != body.len() {
            return Err(file_err(path, "bytes after the last section"));
        }
        Ok(Parsed {
            kind,
            checksum: sum.try_into().expect("32 bytes"),
            sections,
        })
    }

    fn section(&self, tag: &[u8; 4], path: &Path) -> Result<&[u8], SnapshotError> {
        let found = self
            .sections
            .iter()
            .find(|(t, _)| t == tag)
            .map(|(_, p)| p.as_slice());
        found.ok_or_else(|| {
            file_err(
                path,
                format!("section {} is missing", String::from_utf8_lossy(tag)),
            )
        })
    }

    fn sections<'a>(&'a self, tag: &'a [u8; 4]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.sections
            .iter()
            .filter(move |(t, _)| t == tag)
            .map(|(_, p)| p.as_slice())
    }
}

/// One `MEM ` section as a memory image: on top of `base(node)` (the parent's image of
/// the same boot of that node) when it has the same size, else on zeroes.
fn read_memory<'a>(
    m: &[u8],
    path: &Path,
    base: impl Fn(usize) -> Option<&'a MemoryImage>,
) -> Result<(usize, MemoryImage), SnapshotError> {
    let bad = |what: String| file_err(path, format!("section MEM: {what}"));
    if m.len() < 20 {
        return Err(bad("too short".into()));
    }
    let node = u32_at(m, 0) as usize;
    let size = u64::from_le_bytes(m[4..12].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(m[12..20].try_into().expect("8 bytes"));
    if size == 0 || size % PAGE != 0 || size > crate::layout::MAX_RAM {
        return Err(bad(format!("node {node}: bad RAM size {size}")));
    }
    let list_end = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_mul(8))
        .and_then(|b| b.checked_add(20))
        .filter(|&e| e <= m.len())
        .ok_or_else(|| bad(format!("node {node}: {count} pages do not fit")))?;
    let numbers: Vec<u64> = m[20..list_end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    if numbers.windows(2).any(|w| w[0] >= w[1]) || numbers.last().is_some_and(|&l| l >= size / PAGE)
    {
        return Err(bad(format!(
            "node {node}: page list out of order or out of range"
        )));
    }
    // Never more than the pages listed (plus one byte to tell "too many"): a small
    // crafted section must not expand into gigabytes.
    let bytes = decompress_at_most(&m[list_end..], count * PAGE + 1, path, "MEM")?;
    if bytes.len() as u64 != count * PAGE {
        return Err(bad(format!(
            "node {node}: {} bytes of pages for {count} pages",
            bytes.len()
        )));
    }
    let pages = numbers.iter().zip(bytes.chunks_exact(PAGE as usize));
    let on_parent = base(node).filter(|p| p.size == size).cloned();
    let image = match on_parent {
        // A child: the parent's image with these pages on top.
        Some(p) => {
            let mut merged: std::collections::BTreeMap<u64, Box<[u8]>> =
                p.pages.iter().map(|(n, b)| (*n, b.clone())).collect();
            for (n, b) in pages {
                merged.insert(*n, Box::from(b));
            }
            MemoryImage {
                size,
                base: p.base.clone(),
                pages: Arc::new(merged.into_iter().collect()),
            }
        }
        None => {
            let base = frozen_image(size, pages.map(|(n, b)| (*n, b)))?;
            MemoryImage {
                size,
                base: Arc::new(base),
                pages: Arc::new(Vec::new()),
            }
        }
    };
    Ok((node, image))
}

/// Every page of `image` that is not all zeroes, as (numbers, concatenated bytes).
fn nonzero_pages(image: &MemoryImage) -> Result<(Vec<u64>, Vec<u8>), SnapshotError> {
    let mut numbers = Vec::new();
    let mut bytes = Vec::new();
    let mut page = vec![0u8; PAGE as usize];
    for n in 0..image.page_count() {
        image.read_page(n, &mut page)?;
        if page.iter().any(|&b| b != 0) {
            numbers.push(n);
            bytes.extend_from_slice(&page);
        }
    }
    Ok((numbers, bytes))
}

/// Pages of `image` that differ from `parent` (both over the same base, so only pages
/// written since the base was frozen can differ: `image.pages`, found by write tracking).
fn changed_pages(
    image: &MemoryImage,
    parent: &MemoryImage,
) -> Result<(Vec<u64>, Vec<u8>), SnapshotError> {
    let mut numbers = Vec::new();
    let mut bytes = Vec::new();
    let mut old = vec![0u8; PAGE as usize];
    for (n, new) in image.pages.iter() {
        parent.read_page(*n, &mut old)?;
        if old[..] != new[..] {
            numbers.push(*n);
            bytes.extend_from_slice(new);
        }
    }
    Ok((numbers, bytes))
}

/// Every page of `image` that differs from `parent`'s, for images on different bases (a
/// parent snapshot not taken from the same run of the world): all pages are compared.
fn differing_pages(
    image: &MemoryImage,
    parent: &MemoryImage,
) -> Result<(Vec<u64>, Vec<u8>), SnapshotError> {
    let mut numbers = Vec::new();
    let mut bytes = Vec::new();
    let (mut old, mut new) = (vec![0u8; PAGE as usize], vec![0u8; PAGE as usize]);
    for n in 0..image.page_count() {
        parent.read_page(n, &mut old)?;
        image.read_page(n, &mut new)?;
        if old != new {
            numbers.push(n);
            bytes.extend_from_slice(&new);
        }
    }
    Ok((numbers, bytes))
}

fn compress(data: &[u8], path: &Path) -> Result<Vec<u8>, SnapshotError> {
    zstd::bulk::compress(data, LEVEL).map_err(|e| io_err(path, e))
}

/// The most a STAT or APP section may decompress to. Real ones are a few MiB (device
/// and runner state as JSON); a crafted file must not make the loader allocate without
/// bound before its JSON is even parsed.
const STATE_SECTION_LIMIT: u64 = 256 << 20;

fn decompress(data: &[u8], path: &Path, section: &str) -> Result<Vec<u8>, SnapshotError> {
    let out = decompress_at_most(data, STATE_SECTION_LIMIT + 1, path, section)?;
    if out.len() as u64 > STATE_SECTION_LIMIT {
        return Err(file_err(
            path,
            format!(
                "section {section}: decompresses to more than {} MiB; the file is not a detvm snapshot or is damaged",
                STATE_SECTION_LIMIT >> 20
            ),
        ));
    }
    Ok(out)
}

/// [`decompress`], stopping after `limit` bytes of output.
fn decompress_at_most(
    data: &[u8],
    limit: u64,
    path: &Path,
    section: &str,
) -> Result<Vec<u8>, SnapshotError> {
    use std::io::Read;
    let bad =
        |e: std::io::Error| file_err(path, format!("section {section}: not valid zstd data: {e}"));
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(data)
        .map_err(bad)?
        .take(limit)
        .read_to_end(&mut out)
        .map_err(bad)?;
    Ok(out)
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn file_err(path: &Path, what: impl Into<String>) -> SnapshotError {
    SnapshotError::File {
        path: path.display().to_string(),
        what: what.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The file name of the snapshot of a run at `at`, e.g. `snapshot-000001500000000.dsnap`.
pub fn file_name_at(at: VirtualTime) -> PathBuf {
    PathBuf::from(format!("snapshot-{:015}.dsnap", at.as_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TimeModel;
    use crate::devices::platform::{Platform, PlatformConfig};
    use crate::devices::virtio::VirtioDevices;
    use crate::machine::{Stats, VmConfig};
    use crate::persist::Persist;
    use crate::seed::{self, StreamState};
    use crate::snapshot::VmState;
    use crate::trace::TraceHash;
    use crate::world::clock_map::ClockMap;
    use crate::world::snapshot::NodeSnapshot;
    use crate::world::switch::Switch;
    use crate::world::{FaultPlan, NetworkConfig, NodeConfig, NodeState, WorldStats};

    const RAM: u64 = 1 << 20;

    /// Guest RAM whose page `n` is filled with `byte`, for each (n, byte).
    fn ram(pages: &[(u64, u8)]) -> MemoryImage {
        let bytes: Vec<(u64, Vec<u8>)> = pages
            .iter()
            .map(|&(n, b)| (n, vec![b; PAGE as usize]))
            .collect();
        let base = frozen_image(RAM, bytes.iter().map(|(n, b)| (*n, b.as_slice()))).unwrap();
        MemoryImage {
            size: RAM,
            base: Arc::new(base),
            pages: Arc::new(Vec::new()),
        }
    }

    fn config() -> WorldConfig {
        WorldConfig {
            seed: 1,
            nodes: vec![NodeConfig {
                name: "a".into(),
                vm: VmConfig::new("/nonexistent/vmlinux".into()),
            }],
            network: NetworkConfig::default(),
            faults: FaultPlan::default(),
        }
    }

    /// A world of one node `a` on boot number `boots`, with `memory` as its RAM.
    fn world(boots: u32, memory: MemoryImage) -> WorldSnapshot {
        let stream = || StreamState::of(&seed::stream(1, "test"));
        let platform = Platform::new(PlatformConfig {
            vcpus: 1,
            rtc_epoch_unix_secs: 0,
        });
        let vm = VmState {
            memory_size: RAM,
            vcpus: Vec::new(),
            cpu_state: Vec::new(),
            platform: platform.state(),
            virtio: VirtioDevices::new().state(),
            now: VirtualTime::ZERO,
            time: TimeModel::default(),
            max_quantum: 1,
            quantum_rng: stream(),
            trace: TraceHash::new(1000),
            stats: Stats::default(),
            next_cpu: 0,
            seed: 0,
        };
        let node = NodeSnapshot {
            name: "a".into(),
            vm: Some(vm),
            state: NodeState::Running,
            clock: ClockMap::starting_at(VirtualTime::ZERO),
            boots,
            carried: None,
            carried_seed: 0,
            past_traces: Vec::new(),
            wall_steps_ns: 0,
            serial_line: Vec::new(),
            agent_buffer: Vec::new(),
        };
        WorldSnapshot {
            state: WorldState {
                seed: 1,
                now: VirtualTime::ZERO,
                nodes: vec![node],
                switch: Switch::new(1, NetworkConfig::default()).state(),
                queue: Vec::new(),
                next_seq: 0,
                plan: FaultPlan::default(),
                trace: TraceHash::new(1000),
                next_fault_id: 0,
                swizzle_rng: stream(),
                pending: Vec::new(),
                stats: WorldStats::default(),
            },
            memory: vec![Some(memory)],
            configs: WorldSnapshot::node_configs(&config()),
        }
    }

    /// A child file holds a node's RAM as it is in the child, whether the node booted
    /// again since the parent (fresh RAM) or not (same boot, RAM on another base): no
    /// page of the parent's RAM shows through where the child's page is zero.
    #[test]
    fn a_child_file_reads_back_the_childs_ram() {
        let dir = tempfile::tempdir().unwrap();
        let parent = world(0, ram(&[(3, 0xaa), (4, 0xcc)]));
        let full = dir.path().join("full.dsnap");
        save(&parent, &full, None).unwrap();
        for boots in [0, 1] {
            let child = world(boots, ram(&[(4, 0xcc), (5, 0xbb)]));
            let path = dir.path().join(format!("child-{boots}.dsnap"));
            save(&child, &path, Some((&full, &parent))).unwrap();
            let loaded = load(&path, &config()).unwrap();
            let image = loaded.memory[0].as_ref().unwrap();
            let mut page = vec![0u8; PAGE as usize];
            for (n, byte) in [(3, 0), (4, 0xcc), (5, 0xbb), (6, 0)] {
                image.read_page(n, &mut page).unwrap();
                assert!(page.iter().all(|&b| b == byte), "boots {boots}, page {n}");
            }
        }
    }

    /// A well-formed file with one `STAT` section holding `payload`.
    fn file_bytes(payload: &[u8]) -> Vec<u8> {
        file_of(KIND_FULL, &[(*b"STAT", payload.to_vec())])
    }

    fn read(bytes: &[u8]) -> Result<Parsed, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.dsnap");
        std::fs::write(&path, bytes).unwrap();
        Parsed::read(&path).map_err(|e| {
            let text = e.to_string();
            assert!(text.contains("w.dsnap"), "the error names the file: {text}");
            text
        })
    }

    /// A well-formed file of `kind` holding `sections`.
    fn file_of(kind: u32, sections: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for (tag, payload) in sections {
            out.extend_from_slice(tag);
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(payload);
        }
        let sum: [u8; 32] = Sha256::digest(&out).into();
        out.extend_from_slice(&sum);
        out
    }

    #[test]
    fn a_parent_outside_the_childs_folder_is_refused() {
        use crate::world::{FaultPlan, NetworkConfig, World};
        let config = WorldConfig {
            seed: 1,
            nodes: Vec::new(),
            network: NetworkConfig::default(),
            faults: FaultPlan::default(),
        };
        let snap = World::new(config.clone()).unwrap().snapshot().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (full, child) = (
            dir.path().join("full.dsnap"),
            dir.path().join("child.dsnap"),
        );
        save(&snap, &full, None).unwrap();
        save(&snap, &child, Some((&full, &snap))).unwrap();
        assert!(load(&child, &config).is_ok());
        let sections = Parsed::read(&child).unwrap().sections;
        // Not /dev/zero: without the check, a regression would read it until memory ran out.
        for name in ["/proc/version", "../full.dsnap", "sub/full.dsnap", ".."] {
            let renamed: Vec<_> = sections
                .iter()
                .map(|(tag, payload)| match tag {
                    b"PRNT" => (*tag, [&payload[..32], name.as_bytes()].concat()),
                    _ => (*tag, payload.clone()),
                })
                .collect();
            std::fs::write(&child, file_of(KIND_CHILD, &renamed)).unwrap();
            let err = load(&child, &config).err().expect("refused").to_string();
            assert!(err.contains("is not a file name in this folder"), "{err}");
        }
    }

    #[test]
    fn page_data_is_decompressed_no_further_than_the_pages_listed() {
        // One page listed, 64 MiB of zeroes behind it (a few KiB of zstd).
        let mut m = 0u32.to_le_bytes().to_vec();
        m.extend_from_slice(&(32u64 << 20).to_le_bytes());
        m.extend_from_slice(&1u64.to_le_bytes());
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&zstd::bulk::compress(&vec![0u8; 64 << 20], 1).unwrap());
        let err = read_memory(&m, Path::new("x.dsnap"), |_| None)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("4097 bytes of pages for 1 pages"), "{err}");
    }

    #[test]
    fn state_sections_are_decompressed_no_further_than_their_limit() {
        let bomb =
            zstd::bulk::compress(&vec![b' '; (STATE_SECTION_LIMIT + 1) as usize], 1).unwrap();
        let err = decompress(&bomb, Path::new("x.dsnap"), "STAT")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("section STAT: decompresses to more than 256 MiB"),
            "{err}"
        );
        let fine = zstd::bulk::compress(b"{}", 1).unwrap();
        assert_eq!(
            decompress(&fine, Path::new("x.dsnap"), "STAT").unwrap(),
            b"{}"
        );
    }

    #[test]
    fn reads_a_well_formed_file() {
        let p = read(&file_bytes(b"hello")).unwrap();
        assert_eq!(p.sections, vec![(*b"STAT", b"hello".to_vec())]);
    }

    #[test]
    fn refuses_damaged_files_with_a_clear_reason() {
        let good = file_bytes(b"some state");
        let mut flipped = good.clone();
        flipped[30] ^= 1;
        assert!(read(&flipped).unwrap_err().contains("checksum mismatch"));
        assert!(read(&good[..good.len() - 5])
            .unwrap_err()
            .contains("checksum mismatch"));
        assert!(read(&good[..10]).unwrap_err().contains("truncated"));
        let mut magic = good.clone();
        magic[0] = b'X';
        assert!(read(&magic).unwrap_err().contains("bad magic"));
        let mut version = good[..good.len() - 32].to_vec();
        version[8] = 9;
        let sum: [u8; 32] = Sha256::digest(&version).into();
        version.extend_from_slice(&sum);
        assert!(read(&version).unwrap_err().contains("version 9"));
        // A section length past the end, under a valid checksum.
        let mut long = good[..good.len() - 32].to_vec();
        long[24] = 0xff;
        let sum: [u8; 32] = Sha256::digest(&long).into();
        long.extend_from_slice(&sum);
        assert!(read(&long).unwrap_err().contains("runs past the end"));
    }
}
