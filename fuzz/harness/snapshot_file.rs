// Fuzz harness, shared by fuzz/fuzz_targets/snapshot_file.rs and the replay test
// vmm/tests/fuzz_corpus.rs. The input is a snapshot file without its last 32 bytes: the
// harness appends the right SHA-256, so mutations get past the checksum into the
// sections (a wrong checksum is refused first, which unit tests cover). The file is read
// with the public loaders, for a system of no nodes; a corrupt file must be an error.
// Accepted: both loaders read it.

use sha2::{Digest, Sha256};
use vmm::world::snapshot::file;
use vmm::world::{FaultPlan, NetworkConfig, WorldConfig};

pub fn run(data: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("fuzz.dsnap");
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&Sha256::digest(data));
    std::fs::write(&path, &bytes).expect("writing the snapshot file");
    let config = WorldConfig {
        seed: 0,
        nodes: Vec::new(),
        network: NetworkConfig::default(),
        faults: FaultPlan::default(),
    };
    file::load_with_app(&path, &config)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
