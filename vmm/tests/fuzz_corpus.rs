//! The snapshot-file fuzz seeds and crash reproducers (fuzz/corpus/snapshot_file/),
//! replayed through the fuzz target's own harness, so a regression fails `cargo test`
//! without a fuzzer (docs/fuzzing.md). The seeds come from `write_snapshot_fuzz_seeds`.

use std::path::Path;

use vmm::clock::VirtualTime;
use vmm::world::snapshot::file;
use vmm::world::{Fault, FaultPlan, NetworkConfig, ScheduledFault, Span, World, WorldConfig};

mod harness {
    include!("../../fuzz/harness/snapshot_file.rs");
}
mod corpus {
    include!("../../fuzz/harness/corpus.rs");
}

#[test]
fn snapshot_file_corpus_replays() {
    corpus::replay("snapshot_file", harness::run);
}

/// Writes the seeds: real files of a world with no nodes (a full one with an `APP `
/// section, and a child of it), and the full one with a `MEM` section added, each
/// without its checksum (the harness appends it). Not a test: run it by hand with
/// `cargo test --release -p vmm --test fuzz_corpus -- --ignored` after changing the format.
#[test]
#[ignore]
fn write_snapshot_fuzz_seeds() {
    let faults = FaultPlan {
        faults: vec![
            ScheduledFault {
                at: Span::from_millis(1),
                fault: Fault::Loss {
                    probability: 0.5,
                    duration: Span::from_millis(5),
                },
            },
            ScheduledFault {
                at: Span::from_millis(50),
                fault: Fault::Heal {},
            },
        ],
    };
    let mut world = World::new(WorldConfig {
        seed: 1,
        nodes: Vec::new(),
        network: NetworkConfig::default(),
        faults,
    })
    .expect("a world of no nodes");
    world
        .run_until(VirtualTime::from_millis(2), &mut |_| {})
        .expect("run");
    let first = world.snapshot().expect("snapshot");
    world
        .run_until(VirtualTime::from_millis(10), &mut |_| {})
        .expect("run");
    let second = world.snapshot().expect("snapshot");

    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full.dsnap");
    let child = dir.path().join("child.dsnap");
    file::save_with_app(&first, &full, None, Some(b"{\"orchestrator\":1}")).unwrap();
    file::save(&second, &child, Some((&full, &first))).unwrap();

    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/snapshot_file");
    let body = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        bytes[..bytes.len() - 32].to_vec()
    };
    let full_body = body(&full);
    std::fs::write(seeds.join("seed-full-with-app"), &full_body).unwrap();
    std::fs::write(seeds.join("seed-bad-child-without-parent"), body(&child)).unwrap();
    // The full file plus a MEM section for node 0 (pages 0 and 5 of 32 MiB): read, then
    // refused because this world has no node 0.
    let mut with_memory = full_body;
    with_memory[16] += 1; // one more section
    let pages: Vec<u8> = (0..2 * 4096).map(|i| (i % 251) as u8).collect();
    let mut mem = 0u32.to_le_bytes().to_vec();
    mem.extend_from_slice(&(32u64 << 20).to_le_bytes());
    mem.extend_from_slice(&2u64.to_le_bytes());
    mem.extend_from_slice(&0u64.to_le_bytes());
    mem.extend_from_slice(&5u64.to_le_bytes());
    mem.extend_from_slice(&zstd::bulk::compress(&pages, 1).unwrap());
    with_memory.extend_from_slice(b"MEM ");
    with_memory.extend_from_slice(&(mem.len() as u64).to_le_bytes());
    with_memory.extend_from_slice(&mem);
    std::fs::write(seeds.join("seed-bad-memory-of-a-missing-node"), with_memory).unwrap();
}
